"""Reading the store for display: its levels as lazily read, chunk-cached RGB arrays, and its provenance.

While a run writes tiles the viewer re-reads only the chunks under newly finished boxes (``invalidate``).
Unwritten chunks read as the store's fill value (white). No napari here: any viewer can use it.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import Box
from .naming import PROVENANCE_KEY

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 256 * 2**20


class StoreNotReadyError(RuntimeError):
    """The store does not exist yet, or has no complete multiscale metadata."""


class CachedStoreLevel:
    """One level of a ``(3, H, W)`` uint8 zarr array seen as napari's RGB ``(H, W, 3)``, chunk-cached.

    Chunks are read on demand and kept (LRU, bounded by ``budget_bytes``) until ``invalidate`` says tiles
    over them were written (or ``reload`` re-reads them, on the writer's thread, so the viewer's next refresh
    reads nothing from disk). A level may start unbound (all white, before the engine has created the store)
    and be bound to the array later without napari noticing. Thread-safe: a chunk whose read began before an
    invalidation or reload of it is returned but not cached, so stale pixels never stay in the cache.
    """

    def __init__(
        self,
        zarray: Any = None,
        budget_bytes: int = DEFAULT_CACHE_BYTES,
        *,
        shape: tuple[int, int] | None = None,
    ) -> None:
        if zarray is not None:
            channels, height, width = (int(s) for s in zarray.shape)
            if channels != 3:
                raise StoreNotReadyError(f"expected a (3, H, W) RGB array, got shape {tuple(zarray.shape)}")
        elif shape is not None:
            height, width = shape
        else:
            raise ValueError("CachedStoreLevel needs a zarr array or a shape")
        self.shape = (height, width, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self.size = height * width * 3
        self._budget = budget_bytes
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._versions: dict[tuple[int, int], int] = {}  # bumped when a chunk's pixels change on disk
        self._cached_bytes = 0
        self._lock = threading.Lock()
        self.chunk_reads = 0  # chunks read from disk, for tests and benchmarks
        self._z: Any = None
        self._ch, self._cw, self._fill = 512, 512, 255
        if zarray is not None:
            self.bind(zarray)

    def bind(self, zarray: Any) -> None:
        """Read from ``zarray`` from now on (same shape); drops everything cached."""
        if tuple(int(s) for s in zarray.shape) != (3, *self.shape[:2]):
            raise ValueError(f"cannot bind a {tuple(zarray.shape)} array to a {self.shape} level")
        chunks = tuple(int(c) for c in zarray.chunks)
        fill = zarray.fill_value
        with self._lock:
            self._z = zarray
            self._ch, self._cw = max(1, chunks[1]), max(1, chunks[2])
            self._fill = 255 if fill is None else int(fill)
            self._cache.clear()
            self._cached_bytes = 0

    @property
    def bound(self) -> bool:
        return self._z is not None

    @property
    def array(self) -> Any:
        """The zarr array behind this level (None while unbound)."""
        return self._z

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self._read(0, self.shape[0], 0, self.shape[1])
        return out if dtype is None else out.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    # --- indexing -------------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1 :]
        key = tuple(key) + (slice(None),) * (3 - len(key))
        if len(key) != 3 or not all(isinstance(k, int | np.integer | slice) for k in key[:2]):
            return np.asarray(self)[key]
        (y0, y1, ky), (x0, x1, kx) = (
            self._bounds(k, n) for k, n in zip(key[:2], self.shape[:2], strict=True)
        )
        region = self._read(y0, y1, x0, x1)
        return region[(ky, kx, key[2])]

    @staticmethod
    def _bounds(k: int | slice, n: int) -> tuple[int, int, int | slice]:
        """The ``[lo, hi)`` rows/cols a key touches, and the key relative to ``lo``."""
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step > 0:
                lo, hi = start, max(start, stop)
                return lo, hi, slice(0, hi - lo, step)
            lo, hi = stop + 1, start + 1
            if hi <= lo:
                return 0, 0, slice(0, 0)
            return lo, hi, slice(hi - 1 - lo, None, step)
        i = int(k) + (n if k < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"index {k} out of range for size {n}")
        return i, i + 1, 0

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        out = np.full((max(0, y1 - y0), max(0, x1 - x0), 3), self._fill, dtype=np.uint8)
        if y1 <= y0 or x1 <= x0:
            return out
        for cy in range(y0 // self._ch, (y1 - 1) // self._ch + 1):
            for cx in range(x0 // self._cw, (x1 - 1) // self._cw + 1):
                chunk = self._chunk(cy, cx)
                cy0, cx0 = cy * self._ch, cx * self._cw
                ys, ye = max(y0, cy0), min(y1, cy0 + chunk.shape[0])
                xs, xe = max(x0, cx0), min(x1, cx0 + chunk.shape[1])
                if ye > ys and xe > xs:
                    out[ys - y0 : ye - y0, xs - x0 : xe - x0] = chunk[
                        ys - cy0 : ye - cy0, xs - cx0 : xe - cx0
                    ]
        return out

    def _chunk(self, cy: int, cx: int) -> np.ndarray:
        key = (cy, cx)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            version, zarray = self._versions.get(key, 0), self._z
        data = self._read_chunk(zarray, cy, cx)
        if data is not None:
            self._store(key, data, version, zarray)
        return data if data is not None else self._white(cy, cx)

    def _chunk_box(self, cy: int, cx: int) -> tuple[int, int, int, int]:
        h, w = self.shape[:2]
        ys, xs = cy * self._ch, cx * self._cw
        return ys, min(h, ys + self._ch), xs, min(w, xs + self._cw)

    def _white(self, cy: int, cx: int) -> np.ndarray:
        ys, ye, xs, xe = self._chunk_box(cy, cx)
        return np.full((ye - ys, xe - xs, 3), self._fill, dtype=np.uint8)

    def _read_chunk(self, zarray: Any, cy: int, cx: int) -> np.ndarray | None:
        """The chunk's pixels from disk; None with no store yet or when the read fails (a chunk being
        replaced, a vanished store: shown white, read again next time)."""
        if zarray is None or not _chunk_may_exist(zarray, cy, cx):
            return None
        ys, ye, xs, xe = self._chunk_box(cy, cx)
        try:
            return np.ascontiguousarray(np.moveaxis(np.asarray(zarray[:, ys:ye, xs:xe]), 0, -1))
        except Exception as exc:
            log.debug("reading chunk %s of %s failed: %s", (cy, cx), zarray, exc)
            return None

    def _store(self, key: tuple[int, int], data: np.ndarray, version: int, zarray: Any) -> None:
        """Cache ``data`` unless the chunk changed (or the level was re-bound) since its read began."""
        with self._lock:
            self.chunk_reads += 1
            if self._versions.get(key, 0) != version or zarray is not self._z:
                return
            old = self._cache.pop(key, None)
            if old is not None:
                self._cached_bytes -= old.nbytes
            self._cache[key] = data
            self._cached_bytes += data.nbytes
            while self._cached_bytes > self._budget and len(self._cache) > 1:
                _, dropped = self._cache.popitem(last=False)
                self._cached_bytes -= dropped.nbytes

    # --- invalidation ---------------------------------------------------------------------------
    def invalidate(self, y0: int, y1: int, x0: int, x1: int) -> int:
        """Forget cached chunks overlapping rows ``[y0, y1)`` x cols ``[x0, x1)``; returns how many."""
        if y1 <= y0 or x1 <= x0:
            return 0
        dropped = 0
        with self._lock:
            for key in self._touched(y0, y1, x0, x1):
                self._cached_bytes -= self._cache.pop(key).nbytes
                dropped += 1
        return dropped

    def reload(self, y0: int, y1: int, x0: int, x1: int, margin: int = 1) -> int:
        """Read the chunks under rows ``[y0, y1)`` x cols ``[x0, x1)`` into the cache (re-reading cached
        ones ``margin`` px beyond: a pixel straddling the edge changed too); returns how many. Called by the
        thread that wrote them, so the viewer's next refresh reads only memory."""
        if y1 <= y0 or x1 <= x0:
            return 0
        with self._lock:
            if self._z is None:
                return 0
            cached = self._touched(y0 - margin, y1 + margin, x0 - margin, x1 + margin)
            under = list(self._keys_over(y0, y1, x0, x1))
            keys = list(dict.fromkeys([*cached, *under]))
            zarray = self._z
            versions = {key: self._versions.get(key, 0) for key in keys}
        for key in keys:
            data = self._read_chunk(zarray, *key)
            if data is None:
                self.invalidate(*self._chunk_box(*key))
            else:
                self._store(key, data, versions[key], zarray)
        return len(keys)

    def _keys_over(self, y0: int, y1: int, x0: int, x1: int) -> Iterable[tuple[int, int]]:
        """The chunks under rows ``[y0, y1)`` x cols ``[x0, x1)`` (clipped at 0)."""
        return itertools.product(
            range(max(0, y0) // self._ch, max(0, y1 - 1) // self._ch + 1),
            range(max(0, x0) // self._cw, max(0, x1 - 1) // self._cw + 1),
        )

    def _touched(self, y0: int, y1: int, x0: int, x1: int) -> list[tuple[int, int]]:
        """Cached chunks over the rows/cols (lock held); every chunk there counts as changed from now on."""
        over = set(self._keys_over(y0, y1, x0, x1))
        for key in over:
            self._versions[key] = self._versions.get(key, 0) + 1
        return [key for key in self._cache if key in over]

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._cached_bytes = 0


def _chunk_may_exist(zarray: Any, cy: int, cx: int) -> bool:
    """False when the chunk's file is missing from a local store: never written, so it reads as the fill value.
    A file check takes ~10 us; reading a missing chunk through zarr ~1-3 ms, and a run's first refresh asks
    for a screenful of them on the GUI thread. Other stores: True (zarr decides)."""
    from zarr.storage import LocalStore

    store = zarray.store
    if not isinstance(store, LocalStore):
        return True
    return (Path(store.root) / zarray.path / zarray.metadata.encode_chunk_key((0, cy, cx))).exists()


def blank_levels(level_dimensions: Sequence[tuple[int, int]]) -> list[CachedStoreLevel]:
    """Unbound (white) levels with a slide's ``(width, height)`` pyramid, to bind once the store exists."""
    return [CachedStoreLevel(shape=(h, w)) for (w, h) in level_dimensions]


def bind_levels(levels: Sequence[Any], view: StoreView) -> bool:
    """Point napari's existing level objects at ``view``'s arrays when the geometry matches (no data swap)."""
    if len(levels) != len(view.levels) or not all(isinstance(lv, CachedStoreLevel) for lv in levels):
        return False
    if any(a.shape != b.shape for a, b in zip(levels, view.levels, strict=True)):
        return False
    for level, fresh in zip(levels, view.levels, strict=True):
        level.bind(fresh.array)
    view.levels = list(levels)
    return True


@dataclass
class StoreView:
    """An opened store: its levels as napari data, where it sits over the source, and its provenance."""

    path: Path
    levels: list[CachedStoreLevel]
    level0_downsample: float
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return bool(self.provenance.get("complete", False))

    def level_downsamples(self) -> list[float]:
        """Source level-0 pixels per pixel of each store level."""
        h0 = self.levels[0].shape[0]
        w0 = self.levels[0].shape[1]
        return [
            self.level0_downsample * ((h0 / lv.shape[0]) + (w0 / lv.shape[1])) / 2.0 for lv in self.levels
        ]

    def reload_boxes(self, boxes: Iterable[Box]) -> int:
        """Read the chunks under level-0 source ``boxes`` into every level's cache (on the writer's thread, so
        the viewer's refresh reads only memory); returns chunks read."""
        count = 0
        downsamples = self.level_downsamples()
        for x, y, w, h in boxes:
            for level, ds in zip(self.levels, downsamples, strict=True):
                h_lv, w_lv = level.shape[:2]
                rows = max(0, math.floor(y / ds)), min(h_lv, math.ceil((y + h) / ds))
                cols = max(0, math.floor(x / ds)), min(w_lv, math.ceil((x + w) / ds))
                count += level.reload(*rows, *cols)  # the level re-reads cached neighbours 1 px beyond
        return count

    def clear(self) -> None:
        for level in self.levels:
            level.clear()

    @property
    def chunk_reads(self) -> int:
        return sum(level.chunk_reads for level in self.levels)


def _read_root_attrs(path: Path) -> tuple[dict[str, Any], Any]:
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise StoreNotReadyError(f"{path}: not a readable zarr group ({exc})") from exc
    return dict(group.attrs), group


def open_store(
    path: str | Path, budget_bytes: int = DEFAULT_CACHE_BYTES, *, require_placement: bool = False
) -> StoreView:
    """Open the engine's OME-Zarr store for display; raises StoreNotReadyError until it is complete.

    ``require_placement``: also wait for the engine's ``virtual_ihc.level0_downsample`` (a store being
    created may be seen between its arrays and its attributes).
    """
    path = Path(path)
    if not path.exists():
        raise StoreNotReadyError(f"{path} does not exist yet")
    attrs, group = _read_root_attrs(path)
    multiscales = attrs.get("multiscales")
    if not multiscales:
        raise StoreNotReadyError(f"{path}: no OME-NGFF multiscales metadata yet")
    datasets = multiscales[0].get("datasets", [])
    if not datasets:
        raise StoreNotReadyError(f"{path}: multiscales lists no datasets")
    levels = []
    for ds in datasets:
        try:
            zarray = group[ds["path"]]
        except Exception as exc:
            raise StoreNotReadyError(f"{path}: level {ds.get('path')!r} not written yet ({exc})") from exc
        levels.append(CachedStoreLevel(zarray, budget_bytes))
    provenance = dict(attrs.get(PROVENANCE_KEY) or {})
    if require_placement and "level0_downsample" not in provenance:
        raise StoreNotReadyError(f"{path}: the engine has not written its provenance yet")
    level0_downsample = float(provenance.get("level0_downsample", 1.0) or 1.0)
    return StoreView(path=path, levels=levels, level0_downsample=level0_downsample, provenance=provenance)


def read_store_provenance(path: str | Path) -> dict[str, Any] | None:
    """The store's ``virtual_ihc`` attrs, or None when ``path`` is not a readable store."""
    path = Path(path)
    if not path.is_dir():
        return None
    try:
        attrs, _ = _read_root_attrs(path)
    except StoreNotReadyError:
        return None
    if "multiscales" not in attrs:
        return None
    return dict(attrs.get(PROVENANCE_KEY) or {})
