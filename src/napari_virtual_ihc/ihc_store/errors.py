"""Typed errors of the result store, so the CLI and the widget can tell the user what went wrong."""

from __future__ import annotations


class StoreError(Exception):
    """Base class: the store refused a run or could not be written."""


class OutputNotWritableError(StoreError):
    """The output folder cannot be created or written; raised before any work is done."""


class StoreMismatchError(StoreError):
    """An existing store was written with other settings (tile, halo, model...) and cannot be resumed."""


class ForeignPathError(StoreMismatchError):
    """Something that is not this project's store (a folder with files, another zarr) is in the way."""


class OtherSourceError(StoreMismatchError):
    """The store holds the result of another slide that happens to have the same file name."""


class StoreLockedError(StoreError):
    """Another run (process) is writing this store right now."""


class StoreWriteError(StoreError):
    """Writing a tile failed (e.g. the disk is full); finished tiles are kept, this one is not marked done."""
