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
]


class EngineError(Exception):
    """Base class: the engine refused or stopped a run."""


class RegionError(EngineError, ValueError):
    """The requested region is empty or lies outside the slide."""


class DeviceError(EngineError):
    """The requested device or precision is not available here."""
