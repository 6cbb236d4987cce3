"""The chosen model, loaded on a background thread as soon as it is chosen, for the next Run.

Loading a checkpoint is Python-heavy (building ~75 modules, reading the weights, hashing the file: ~60 ms for
a ResNet-9 at ngf 16 here). Done after Run it competes for the GIL with napari building the new layer, which
stretched it to 130-390 ms on the way to the first tile (2-core AMD EPYC). A pathologist picks the model
well before pressing Run, so it loads then, as stardist-napari keeps its models loaded between runs. The
loaded generator is never modified by a run (the engine works on copies), so one object serves every run
while the file is unchanged (same resolved path, size and modification time).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads with the first model, not with the plugin
    from ...models import LoadedGenerator

log = logging.getLogger(__name__)

FileKey = tuple[str, int, int]  # resolved path, size, mtime_ns


def file_key(path: str | os.PathLike[str]) -> FileKey | None:
    """What identifies one version of a checkpoint file; None when it is not a readable file."""
    try:
        p = Path(path).resolve()
        st = p.stat()
    except OSError:
        return None
    if not p.is_file():
        return None
    return (str(p), st.st_size, st.st_mtime_ns)


def _load_on_cpu(path: str) -> LoadedGenerator:
    from ...models import load_generator

    return load_generator(path, device="cpu")


class ModelPreloader:
    """Keeps the last chosen checkpoint loaded (CPU). ``prefetch`` on the GUI thread when the choice changes;
    ``get`` on the run's worker thread: the preloaded model if the file is unchanged (waiting for a load in
    progress), else a fresh load. A failed preload is not reported: ``get`` loads again and raises then, on
    the run's path, with the run's error handling."""

    def __init__(self, loader: Callable[[str], LoadedGenerator] | None = None) -> None:
        self._loader = loader or _load_on_cpu
        self._lock = threading.Lock()
        self._key: FileKey | None = None
        self._future: Future[LoadedGenerator] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.loads = 0  # how many loads were started (tests)

    def prefetch(self, path: str | os.PathLike[str]) -> None:
        """Start loading ``path`` in the background unless that version of it is loaded or loading."""
        key = file_key(path)
        if key is None:
            return
        with self._lock:
            if key == self._key:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vihc-model")
            self.loads += 1
            self._key, self._future = key, self._pool.submit(self._loader, key[0])

    def get(self, path: str | os.PathLike[str]) -> LoadedGenerator:
        """The model in ``path``: preloaded when that file is unchanged since, else loaded now."""
        key = file_key(path)
        with self._lock:
            future = self._future if key is not None and key == self._key else None
        if future is not None:
            try:
                return future.result()
            except Exception as exc:  # loaded again below, so the error surfaces where runs report them
                log.debug("preloading %s failed: %s", path, exc)
        with self._lock:
            self.loads += 1
        model = self._loader(str(path))
        if key is not None and file_key(path) == key:
            done: Future[LoadedGenerator] = Future()
            done.set_result(model)
            with self._lock:
                self._key, self._future = key, done
        return model

    def close(self) -> None:
        """Drop the loaded model and stop the loading thread (the widget closes)."""
        with self._lock:
            pool, self._pool, self._key, self._future = self._pool, None, None, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
