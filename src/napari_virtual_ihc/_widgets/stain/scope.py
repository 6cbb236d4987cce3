"""Process-wide settings a staining run from the GUI needs, taken for the run only and given back after it.

Measured on a 2-core machine with software OpenGL (see docs/widget.md): with every core busy in torch's
intra-op pool, or a full cyclic-GC pass holding the GIL, napari's event loop stalls for hundreds of ms.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

# The engine's threads (model, reader, tissue mask) run this much "nicer" than napari's GUI thread, so the
# scheduler hands the GUI (and the OpenGL rasteriser) a core whenever it has work: fewer stalls.
WORKER_NICENESS = 5


def _lower_thread_priority(step: int) -> bool:
    """Add ``step`` to this thread's niceness (Linux: per thread; threads it starts inherit it)."""
    if not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + step)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def gui_friendly_run() -> Iterator[None]:
    """Enter on the worker thread. For the run: one core left to the GUI thread (torch threads), this thread
    niced (the engine's threads inherit it), the objects alive now kept out of full GC passes. Restored on
    exit; restoring the niceness needs the privilege to raise a priority, without it the worker thread stays
    niced (harmless: it is napari's worker pool thread, used for background work only)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, min(previous, (os.cpu_count() or 2) - 1)))
    niced = _lower_thread_priority(WORKER_NICENESS)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        torch.set_num_threads(previous)
        if niced and not _lower_thread_priority(-WORKER_NICENESS):
            log.debug(
                "the worker thread keeps niceness +%d (raising a priority needs privileges)", WORKER_NICENESS
            )
