"""Keep the memory of freed activations for the next batch, for the duration of a run (glibc only).

glibc's malloc serves blocks above its mmap threshold (128 KiB, adapting up to 32 MiB) with fresh ``mmap``
pages and unmaps them on ``free``. A generator's activations are tens of MiB to GiBs, so every layer of
every batch page-faults and zeroes its output afresh: on this project's 2-core AMD EPYC, a ResNet (ngf 16,
batch 4 x 384 px) took 1.25-1.6 s per forward with ~120 000 page faults, and 1.0-1.2 s with none once
freed blocks are kept (``benchmarks/bench_allocator.py``). The same thresholds that PyTorch's CPU
performance guide reaches through jemalloc/tcmalloc, set with ``mallopt`` for the run and given back after
it (``malloc_trim`` then returns the kept memory to the system). Elsewhere (macOS, Windows, musl) nothing
changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h) and glibc's own defaults, restored after the run.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFAULT_MMAP_THRESHOLD = 128 * 1024
KEEP_BELOW = 1 << 30  # blocks up to 1 GiB come from (and go back to) the heap during a run

_lock = threading.Lock()
_active_runs = 0


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl does not tune this way)
    except (OSError, AttributeError):
        return None
    return libc


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[bool]:
    """For the block: freed activations stay in the heap for the next batch. Yields whether it applies.
    Nested and concurrent runs share the setting; the last one out restores glibc's defaults."""
    global _active_runs
    libc = _glibc()
    if libc is None:
        yield False
        return
    with _lock:
        if _active_runs == 0:
            ok = libc.mallopt(M_MMAP_THRESHOLD, KEEP_BELOW) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BELOW)
            if not ok:
                log.debug("mallopt refused the run's thresholds; glibc's defaults stay")
        _active_runs += 1
    try:
        yield True
    finally:
        with _lock:
            _active_runs -= 1
            if _active_runs == 0:
                libc.mallopt(M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD)
                libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
