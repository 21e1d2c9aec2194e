"""Dataset readers (NYU-Depth-v2, MFNet, MCubeS, plain folders) yielding raw frame groups."""

from unim2_core.datasets.base import (
    IGNORE_INDEX,
    MODALITIES,
    DatasetInfo,
    DatasetKind,
    FrameDataset,
    FrameGroup,
    Modality,
    default_palette,
    open_dataset,
    validate_modality_array,
)
from unim2_core.datasets.folder import FolderDataset, load_dataset_yaml, write_frame_group
from unim2_core.datasets.mcubes import MCubeS
from unim2_core.datasets.mfnet import MFNet
from unim2_core.datasets.nyu import NYUDepthV2

__all__ = [
    "IGNORE_INDEX",
    "MODALITIES",
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
