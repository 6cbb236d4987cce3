"""Typed errors of the tile engine, so the CLI and the widget can tell the user what went wrong."""

from __future__ import annotations

# The store's own errors (the store contract lives in ``ihc_store``), named here too for the engine's callers.
from ..ihc_store.errors import (
    OutputNotWritableError,
    StoreError,
    StoreLockedError,
    StoreMismatchError,
    StoreWriteError,
)

__all__ = [
    "DeviceError",
    "EngineError",
    "OutputNotWritableError",
    "RegionError",
    "StoreError",
    "StoreLockedError",
    "StoreMismatchError",
    "StoreWriteError",
    "TileReadError",
]


class EngineError(Exception):
    """Base class: the engine refused or stopped a run."""


class RegionError(EngineError, ValueError):
    """The requested region is empty or lies outside the slide."""


class DeviceError(EngineError):
    """The requested device or precision is not available here."""


class TileReadError(EngineError):
    """A window of the slide could not be read or decoded (a corrupt tile): the slide stops, the tile named."""


class ModelInputError(EngineError):
    """The model needs an input the run did not supply (a tumour-class channel without a class)."""


class NonFiniteOutputError(EngineError):
    """The model produced NaN or infinity for a window (broken weights or an overflow in fp16): nothing of
    that window is written and the store is not marked complete."""


class ImageTooSmallError(EngineError, ValueError):
    """The image (at the model's resolution) is smaller than the smallest input the generator runs on."""


class ResolutionError(EngineError, ValueError):
    """The model's µm/px against the slide's asks for an absurd resampling (e.g. a 100x upsampling)."""
