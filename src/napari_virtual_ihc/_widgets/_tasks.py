"""The one way a widget of this plugin works in the background, and the one progress bar it shows.

``WidgetTask`` runs a core function (a generator yielding ``(done, total, ...)``, or a plain function) in
napari's worker pool and reports to the widget on the GUI thread; ``TaskProgress`` is napari's cancellable
progress bar whose Cancel stops the task (not only an iterator), with napari's spinner paused meanwhile on
software OpenGL (``_activity``). The stain, overlay, registration and reader-study widgets all use them, so a
run of any of them looks, reports and cancels alike. A task has one state:
pending -> running (-> cancelling) -> done | cancelled | failed.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import create_worker
from napari.utils.progress import cancelable_progress

from ._activity import pause_spinner, resume_spinner

log = logging.getLogger(__name__)

# Tasks stay referenced here until they end, so a widget closed mid-run cannot delete a task whose worker is
# still reporting (the widget cancels it instead).
_ACTIVE: set[WidgetTask] = set()


class _CancellableBar(cancelable_progress):
    """napari's cancellable progress bar; its Cancel button stops the task (not only an iterator)."""

    def cancel(self) -> None:
        super().cancel()
        if self.cancel_callback is not None:
            self.cancel_callback()


class TaskProgress:
    """A task's napari progress bar (with Cancel), shown on ``show`` (at once, or later by a task that must
    not compete with napari at its start) and closed by ``close``. ``done``/``total``/``desc`` are kept
    while it is hidden, so a bar shown later starts where the task is."""

    def __init__(
        self, viewer: Any, desc: str, total: int = 0, on_cancel: Callable[[], None] | None = None
    ) -> None:
        self.viewer, self.desc, self.total, self.done = viewer, desc, int(total), 0
        self.on_cancel = on_cancel
        self.bar: _CancellableBar | None = None
        self.spinner_paused = False
        self.closed = False
        self.updates = 0  # how many reports reached it (tests: every widget's run shows its progress here)

    @property
    def shown(self) -> bool:
        return self.bar is not None

    def show(self) -> None:
        if self.bar is not None or self.closed:
            return
        self.bar = _CancellableBar(total=self.total, desc=self.desc, cancel_callback=self.on_cancel)
        self.spinner_paused = pause_spinner(self.viewer)
        if self.done:
            self.bar.update(self.done)

    def update(self, done: int, total: int | None = None, desc: str | None = None) -> None:
        self.updates += 1
        if total is not None:
            self.total = int(total)
        self.done = int(done)
        if desc is not None:
            self.desc = desc
        bar = self.bar
        if bar is None:
            return
        if bar.total != self.total:
            bar.total = self.total
        if self.done - bar.n:
            bar.update(self.done - bar.n)
        if desc is not None:
            bar.set_description(desc)

    def describe(self, desc: str) -> None:
        self.desc = desc
        if self.bar is not None:
            self.bar.set_description(desc)

    def close(self) -> None:
        self.closed = True
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.spinner_paused:
            resume_spinner(self.viewer)
            self.spinner_paused = False


def _progress_of(value: Any) -> tuple[int, int] | None:
    """``(done, total)`` from what a core generator yields (``(done, total[, stage])``), else None."""
    if isinstance(value, tuple) and len(value) >= 2 and all(isinstance(v, int) for v in value[:2]):
        return int(value[0]), int(value[1])
    return None


@dataclass(frozen=True)
class _Raised:
    """What a generator raised, handed back as its return value (see ``_guarded``)."""

    error: BaseException


def _guarded(func: Callable[..., Generator[Any, Any, Any]], *args: Any) -> Generator[Any, Any, Any]:
    """``func(*args)``'s generator, unchanged, except that a RuntimeError it raises comes back as ``_Raised``:
    superqt's generator worker takes a RuntimeError for a deleted Qt object and ends without its
    ``finished`` signal, and cancellations (``AnalysisCancelled``, ``RegistrationCancelled``) are
    RuntimeErrors."""
    try:
        return (yield from func(*args))
    except RuntimeError as exc:
        return _Raised(exc)


class WidgetTask:
    """``func(*args)`` on napari's worker pool, its progress in one ``TaskProgress``.

    ``cancel`` (and the bar's Cancel) sets ``cancel_event`` (pass it to the core function so it stops inside
    a step) and, with ``quit_on_cancel``, quits a generator between yields. ``on_yield`` gets what the
    generator yields (the bar already follows ``(done, total, ...)`` yields); ``on_end`` gets the task once it
    has ended, with ``state``, ``result`` (what the function returned, if it did) and ``error``. Errors of
    ``cancelled_errors`` types count as a cancel, not a failure."""

    def __init__(
        self,
        viewer: Any,
        func: Callable[..., Any],
        *args: Any,
        desc: str,
        total: int = 0,
        on_yield: Callable[[Any], None] | None = None,
        on_end: Callable[[WidgetTask], None] | None = None,
        cancel_event: threading.Event | None = None,
        quit_on_cancel: bool = True,
        show_progress: bool = True,
        cancelled_errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.func, self.args = func, args
        self.on_yield, self.on_end = on_yield, on_end
        self.cancel_event = cancel_event or threading.Event()
        self.quit_on_cancel = quit_on_cancel
        self.show_progress = show_progress
        self.cancelled_errors = cancelled_errors
        self.progress = TaskProgress(viewer, desc, total, on_cancel=self.cancel)
        self.state = "pending"
        self.result: Any = None
        self.returned = False
        self.error: BaseException | None = None
        self.worker: Any = None

    @property
    def running(self) -> bool:
        """True from ``start`` until ``on_end`` has been called."""
        return self.state in ("running", "cancelling")

    def start(self) -> WidgetTask:
        _ACTIVE.add(self)
        self.state = "running"
        if inspect.isgeneratorfunction(self.func):
            worker = create_worker(_guarded, self.func, *self.args, _ignore_errors=True)
        else:
            worker = create_worker(self.func, *self.args, _ignore_errors=True)
        if hasattr(worker, "yielded"):
            worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        if self.show_progress:
            self.progress.show()
        worker.start()
        return self

    def cancel(self) -> None:
        """Stop as soon as the function allows (between yields, or where it checks ``cancel_event``)."""
        if self.state != "running":
            return
        self.state = "cancelling"
        self.cancel_event.set()
        self.progress.describe(f"{self.progress.desc}: cancelling...")
        if self.quit_on_cancel and self.worker is not None:
            self.worker.quit()

    # --- the worker's reports (GUI thread) ---------------------------------------------------------
    def _on_yielded(self, value: Any) -> None:
        if not self.running:  # a report Qt delivers after the end (stale: the widget has moved on)
            return
        if self.on_yield is not None:
            self.on_yield(value)
        # The widget first, then the bar: napari's bar update can process pending Qt events, the task's end
        # among them, and what the widget shows for the end must not be overwritten by this older report.
        done_total = _progress_of(value)
        if done_total is not None and self.running:
            self.progress.update(*done_total)

    def _on_returned(self, value: Any) -> None:
        if isinstance(value, _Raised):
            self._on_errored(value.error)
            return
        self.result, self.returned = value, True

    def _on_errored(self, exc: BaseException) -> None:
        if isinstance(exc, self.cancelled_errors):
            self.cancel_event.set()
            return
        self.error = exc
        log.debug("background task failed", exc_info=exc)

    def _on_finished(self) -> None:
        self.progress.close()
        if self.error is not None:
            self.state = "failed"
        elif self.cancel_event.is_set():
            self.state = "cancelled"
        else:
            self.state = "done" if self.returned else "failed"
        _ACTIVE.discard(self)
        if self.on_end is not None:
            self.on_end(self)
