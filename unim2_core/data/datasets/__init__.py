"""Dataset readers (NYU-Depth-v2, MFNet, MCubeS, plain folders) yielding raw frame groups, and
the registry that opens one by its kind."""

from unim2_core.data.datasets.base import (
    IGNORE_INDEX,
    MODALITIES,
    DatasetInfo,
    DatasetKind,
    FrameDataset,
    FrameGroup,
    Modality,
    default_palette,
    validate_modality_array,
)
from unim2_core.data.datasets.folder import FolderDataset, load_dataset_yaml, write_frame_group
from unim2_core.data.datasets.mcubes import MCubeS
from unim2_core.data.datasets.mfnet import MFNet
from unim2_core.data.datasets.nyu import NYUDepthV2
from unim2_core.data.datasets.registry import READERS, open_dataset

__all__ = [
    "IGNORE_INDEX",
    "MODALITIES",
    "READERS",
    "DatasetInfo",
    "DatasetKind",
    "FolderDataset",
    "FrameDataset",
    "FrameGroup",
    "MCubeS",
    "MFNet",
    "Modality",
    "NYUDepthV2",
    "default_palette",
    "load_dataset_yaml",
    "open_dataset",
    "validate_modality_array",
    "write_frame_group",
]
