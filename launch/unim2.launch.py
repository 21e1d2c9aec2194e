"""Starts the unim2 segmentation node with a parameter file and camera topic remappings.

    ros2 launch unim2_ros unim2.launch.py rgb_topic:=/camera/color/image_raw \
        depth_topic:=/camera/depth/image_rect_raw params_file:=/path/to/unim2_node.yaml

Only the auxiliary topics the checkpoint needs are subscribed; the other remaps are harmless.
For large images between processes of one machine, export
FASTDDS_DEFAULT_PROFILES_FILE=<share>/unim2_ros/config/fastdds_localhost.xml before launching.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(
        get_package_share_directory("unim2_ros"), "config", "unim2_node.yaml"
    )
    arguments = [
        DeclareLaunchArgument(
            "params_file",
            default_value=default_params,
            description="Node parameter YAML (model.checkpoint must be set in it).",
        ),
        DeclareLaunchArgument(
            "namespace", default_value="", description="Namespace of the node and its outputs."
        ),
        DeclareLaunchArgument(
            "rgb_topic", default_value="rgb/image", description="RGB image topic."
        ),
        DeclareLaunchArgument(
            "depth_topic", default_value="depth/image", description="Depth image topic."
        ),
        DeclareLaunchArgument(
            "depth_info_topic",
            default_value="depth/camera_info",
            description="camera_info of the depth image (used with points.enabled or online HHA).",
        ),
        DeclareLaunchArgument(
            "thermal_topic", default_value="thermal/image", description="Thermal image topic."
        ),
        DeclareLaunchArgument(
            "nir_topic", default_value="nir/image", description="Near-infrared image topic."
        ),
        DeclareLaunchArgument(
            "aolp_topic",
            default_value="aolp/image",
            description="Angle of linear polarisation image topic.",
        ),
        DeclareLaunchArgument(
            "dolp_topic",
            default_value="dolp/image",
            description="Degree of linear polarisation image topic.",
        ),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", description="Use /clock (bag replay)."
        ),
        DeclareLaunchArgument(
            "log_level", default_value="info", description="debug, info, warn, error or fatal."
        ),
    ]
    node = Node(
        package="unim2_ros",
        executable="unim2_node",
        name="unim2_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            {"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)},
        ],
        remappings=[
            ("rgb/image", LaunchConfiguration("rgb_topic")),
            ("depth/image", LaunchConfiguration("depth_topic")),
            ("thermal/image", LaunchConfiguration("thermal_topic")),
            ("nir/image", LaunchConfiguration("nir_topic")),
            ("aolp/image", LaunchConfiguration("aolp_topic")),
            ("dolp/image", LaunchConfiguration("dolp_topic")),
            ("depth/camera_info", LaunchConfiguration("depth_info_topic")),
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        output="screen",
    )
    return LaunchDescription([*arguments, node])
