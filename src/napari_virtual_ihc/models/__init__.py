"""Generators (pix2pix/CycleGAN ResNet and U-Net, ASP's ResNet) and safe checkpoint I/O. Core, napari-free."""

from .checkpoint import (
    HEADER_KEY,
    file_sha256,
    load_generator,
    read_checkpoint,
    reference_test_mode,
    save_generator,
)
from .class_channel import ClassChannelError, needs_class, supply_class_channel
from .demo_model import DEMO_MODEL_LABEL, demo_model_path
from .describe import describe, receptive_field, size_multiple
from .detect import detect_architecture
from .errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    InvalidSpecError,
    NonFiniteWeightsError,
    ShapeMismatchError,
    UnknownArchitectureError,
    UnsafeCheckpointError,
    UnsupportedFormatVersionError,
    WrongDirectionError,
)
from .norms import norm_kind
from .registry import GENERATORS, available_architectures, build_generator, register_generator
from .spec import FORMAT_VERSION, LoadedGenerator, ModelSpec

__all__ = [
    "DEMO_MODEL_LABEL",
    "FORMAT_VERSION",
    "GENERATORS",
    "HEADER_KEY",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ClassChannelError",
    "CorruptCheckpointError",
    "InvalidSpecError",
    "LoadedGenerator",
    "ModelSpec",
    "NonFiniteWeightsError",
    "ShapeMismatchError",
    "UnknownArchitectureError",
    "UnsafeCheckpointError",
    "UnsupportedFormatVersionError",
    "WrongDirectionError",
    "available_architectures",
    "build_generator",
    "demo_model_path",
    "describe",
    "detect_architecture",
    "file_sha256",
    "load_generator",
    "needs_class",
    "norm_kind",
    "read_checkpoint",
    "receptive_field",
    "reference_test_mode",
    "register_generator",
    "save_generator",
    "size_multiple",
    "supply_class_channel",
]
