"""One sentence a pathologist can act on, for any error a staining run may raise."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...inference.api import RunReport


class ModelLoadError(RuntimeError):
    """The chosen model file could not be loaded (whatever the loader raised)."""


def user_message(exc: BaseException, store: Path) -> str:
    from ...ihc_store import (
        ForeignPathError,
        OtherSourceError,
        OutputNotWritableError,
        StoreLockedError,
        StoreMismatchError,
        StoreWriteError,
    )
    from ...inference.errors import DeviceError, RegionError
    from ...models.errors import CheckpointError
    from ...slides.errors import SlideError

    if isinstance(exc, CheckpointError | ModelLoadError):
        return f"Could not load the model: {exc}"
    if isinstance(exc, DeviceError):
        return f"Device problem: {exc}"
    if isinstance(exc, SlideError):
        return f"Could not read the slide: {exc}"
    if isinstance(exc, OtherSourceError | ForeignPathError | StoreLockedError):
        return f"Virtual IHC refused to write {store.name}: {exc}"
    if isinstance(exc, StoreMismatchError):
        return (
            f"{store.name} already holds a result made with another model or other settings. Choose "
            f"another output folder to keep both, or delete {store} to start over."
        )
    if isinstance(exc, StoreWriteError | OutputNotWritableError):
        return f"Could not write the result: {exc}"
    if isinstance(exc, RegionError):
        return f"Nothing to stain: {exc}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"Disk full while writing {store}. Free some space or choose another output folder; "
            "finished tiles are kept and Run resumes from them."
        )
    if isinstance(exc, OSError):
        return f"Could not write the result to {store}: {exc}"
    if "out of memory" in str(exc).lower():
        return f"The device ran out of memory: {exc}. Lower the batch size under 'Advanced'."
    return f"Virtual IHC failed: {type(exc).__name__}: {exc}"


def announce_run_end(state: str, report: RunReport | None, source_name: str, notes: list[str]) -> None:
    """What loading the model assumed and what the run warned of (each once), then the summary.

    Notifications wait for the end of the run: napari animates each toast over the whole window, which on
    software OpenGL stalls the event loop for more than 100 ms and delays the first tile; the dock shows the
    notes as soon as the engine has planned."""
    from napari.utils.notifications import show_info, show_warning

    for warning in dict.fromkeys([*notes, *(report.warnings if report is not None else [])]):
        show_warning(f"Virtual IHC: {warning}")
    if state == "done" and report is not None:
        show_info(
            f"Virtual IHC of {source_name} finished: {report.tiles_total} tiles "
            f"({report.tiles_resumed} resumed) in {report.seconds:.1f} s on {report.device}."
        )
