"""Typed errors for checkpoint loading, so callers can tell a user exactly what is wrong with a file."""

from __future__ import annotations


class CheckpointError(Exception):
    """Base class: a checkpoint could not be read, recognised or loaded."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The path does not exist or is not a file."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, empty or not a checkpoint at all."""


class UnknownArchitectureError(CheckpointError):
    """The architecture name is not registered, or the keys match no known generator layout."""


class ShapeMismatchError(CheckpointError):
    """The state dict does not fit the generator built for it (missing/unexpected keys, wrong shapes)."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that needs to execute code to load; it was refused and nothing in it ran."""


class UnsupportedFormatVersionError(CheckpointError):
    """The checkpoint was written by a newer version of this project's format."""


class WrongDirectionError(CheckpointError):
    """The checkpoint's name or keys say it maps IHC to H&E (e.g. CycleGAN's ``*_net_G_B.pth``)."""


class InvalidSpecError(CheckpointError, ValueError):
    """A header value or architecture argument is of the wrong type or outside what can be run."""


class NonFiniteWeightsError(CheckpointError):
    """The weights hold NaN or infinity (a diverged training); refused on export and on load."""
