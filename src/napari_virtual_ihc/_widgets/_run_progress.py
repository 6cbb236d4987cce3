"""A run's napari progress bar (with Cancel), and napari's spinner paused meanwhile on software OpenGL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.utils.progress import cancelable_progress

from ..inference.api import TileProgress
from ._activity import pause_spinner, resume_spinner


class _CancellableBar(cancelable_progress):
    """napari's cancellable progress bar; its Cancel button stops the run (not only an iterator)."""

    def cancel(self) -> None:
        super().cancel()
        if self.cancel_callback is not None:
            self.cancel_callback()


class RunProgress:
    """napari builds its progress bar with ~150 ms of repaints (software OpenGL), so a run shows it just after
    the first tile is on screen (or ``LATEST_MS`` after the plan if that tile takes longer): the first batch
    and the first refresh do not wait for it and no event-loop stall goes past 100 ms (docs/widget.md).
    Closed when the run ends."""

    AFTER_FIRST_TILE_MS = 150
    LATEST_MS = 2000

    def __init__(self, viewer: Any, name: str, on_cancel: Callable[[], None]) -> None:
        self.viewer, self.name, self.on_cancel = viewer, name, on_cancel
        self.bar: _CancellableBar | None = None
        self.spinner_paused = False

    def show(self, model_name: str, last: TileProgress | None) -> None:
        if self.bar is not None:
            return
        desc = f"Virtual IHC: {self.name} with {model_name}"
        self.bar = _CancellableBar(total=0, desc=desc, cancel_callback=self.on_cancel)
        self.spinner_paused = pause_spinner(self.viewer)
        if last is not None:
            self.update(last, cancelling=False)

    def update(self, tp: TileProgress, cancelling: bool) -> None:
        bar = self.bar
        if bar is None:
            return
        if bar.total != tp.total:
            bar.total = tp.total
        if tp.done - bar.n:
            bar.update(tp.done - bar.n)
        verb = "cancelling" if cancelling else "staining"
        bar.set_description(
            f"Virtual IHC {verb} {self.name}: {tp.done}/{tp.total} tiles, {tp.mp_per_s:.2f} MP/s on "
            f"{tp.device or '?'}"
        )

    def cancelling(self) -> None:
        if self.bar is not None:
            self.bar.set_description(f"Virtual IHC: cancelling {self.name}...")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.spinner_paused:
            resume_spinner(self.viewer)
            self.spinner_paused = False
