"""The OME-Zarr (NGFF 0.4) store the engine writes tile by tile, with a resumable record of finished tiles.

Layout (zarr v2 on disk): arrays ``0``, ``1``, ... of shape (3, H, W) uint8, chunked by the tile size so
one tile is one chunk at level 0; fill value 255 (unwritten reads as white glass). ``tiles_done`` is an
append-only text file (``<index> <d|s>`` per line, ``s`` = background filled without the model), written
and fsync'd only after the tile's pixels are in the store (zarr writes every chunk atomically), so a killed
run leaves no tile marked done whose pixels are missing.
"""

from __future__ import annotations

import errno
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr import Array

from .errors import OutputNotWritableError, StoreMismatchError, StoreWriteError
from .resample import _block_mean

DONE_FILE = "tiles_done"
NORM_STATS_FILE = "norm_stats.npz"


def check_writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed and prove we can write there, before any work starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".virtual-ihc-write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise OutputNotWritableError(f"cannot write to output folder {folder}: {e.strerror or e}") from e


def _write_error(err: OSError, what: str) -> StoreWriteError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreWriteError(
            f"disk full while writing {what}; finished tiles are kept, free some space and run again to resume"
        )
    return StoreWriteError(f"could not write {what}: {err}")


def _block_mean_edges(img: np.ndarray, k: int) -> np.ndarray:
    """(h, w, 3) -> (ceil(h/k), ceil(w/k), 3) mean over k x k blocks, partial blocks at the edges."""
    h, w = img.shape[:2]
    ph, pw = -h % k, -w % k
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return _block_mean(img, k)


class TileStore:
    """An OME-Zarr store at ``path`` with ``factors`` pyramid levels (1 first) over a (width, height) plane."""

    def __init__(self, path: Path, group: zarr.Group, factors: list[int]) -> None:
        self.path = path
        self.group = group
        self.factors = factors
        self.arrays: list[Array] = [self._array(group, str(i)) for i in range(len(factors))]
        self._done_fh: Any = None

    @staticmethod
    def _array(group: zarr.Group, key: str) -> Array:
        arr = group[key]
        assert isinstance(arr, Array)
        return arr

    # --- creation / resume ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: Path,
        plane: tuple[int, int],
        tile: int,
        factors: list[int],
        mpp: tuple[float, float] | None,
        run_key: dict[str, Any],
        provenance: dict[str, Any],
        channels: int = 3,
        fill: int = 255,
    ) -> TileStore:
        """Open an existing store written with the same ``run_key`` (resume) or create a new one.

        ``channels`` 1 with ``fill`` 0 makes a single-channel map (the dropout confidence store).
        """
        if path.exists() and not path.is_dir():
            raise StoreMismatchError(f"{path} exists and is not a store directory")
        if path.exists() and (path / ".zgroup").exists():
            group = zarr.open_group(str(path), mode="r+", zarr_format=2)
            old = dict(group.attrs.get("virtual_ihc", {}) or {}).get("run_key")  # type: ignore[arg-type]
            if old != json.loads(json.dumps(run_key)):
                raise StoreMismatchError(
                    f"{path} was written with other settings ({old}); use another output or delete it "
                    f"to start over (this run: {run_key})"
                )
            return cls(path, group, factors)
        try:
            group = zarr.open_group(str(path), mode="w", zarr_format=2)
            width, height = plane
            for i, f in enumerate(factors):
                lw, lh = -(-width // f), -(-height // f)
                chunk = max(64, tile // f) if f > 1 else tile
                group.create_array(
                    str(i),
                    shape=(channels, lh, lw),
                    chunks=(channels, min(chunk, lh), min(chunk, lw)),
                    dtype="uint8",
                    fill_value=fill,
                )
            attrs = _ngff_attrs(factors, mpp, dict(provenance, run_key=run_key, complete=False))
            if channels != 3:
                attrs["omero"]["channels"] = attrs["omero"]["channels"][:1]
                attrs["omero"]["channels"][0].update(label="spread", color="FFFFFF")
                attrs["omero"]["rdefs"] = {"model": "greyscale"}
            group.attrs.update(attrs)
        except OSError as e:
            raise _write_error(e, f"the new store {path}") from e
        return cls(path, group, factors)

    # --- finished tiles -------------------------------------------------------------------------------
    def finished(self) -> dict[int, str]:
        """Tile index -> ``"d"`` (model ran) or ``"s"`` (background), from complete lines only."""
        p = self.path / DONE_FILE
        out: dict[int, str] = {}
        if not p.exists():
            return out
        for line in p.read_text().split("\n"):  # a torn last line (no newline) is ignored below
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1] in ("d", "s"):
                out[int(parts[0])] = parts[1]
        text = p.read_bytes()
        if text and not text.endswith(b"\n"):
            last = text.rsplit(b"\n", 1)[-1].decode(errors="replace").split()
            if last and last[0].isdigit():
                out.pop(int(last[0]), None)
        return out

    def mark_done(self, indices: list[int], kind: str) -> None:
        """Append ``indices`` to the record and fsync: only call after their pixels are written."""
        if not indices:
            return
        try:
            if self._done_fh is None:
                self._done_fh = open(self.path / DONE_FILE, "a")  # noqa: SIM115 - kept open for the run
            self._done_fh.write("".join(f"{i} {kind}\n" for i in indices))
            self._done_fh.flush()
            os.fsync(self._done_fh.fileno())
        except OSError as e:
            raise _write_error(e, "the finished-tile record") from e

    # --- pixels ---------------------------------------------------------------------------------------
    def write_tile(self, core: tuple[int, int, int, int], rgb: np.ndarray) -> None:
        """Write ``rgb`` (h, w, 3) uint8 at ``core`` of level 0 and its downsampled block on every level
        ((h, w) for a single-channel store)."""
        x, y, w, h = core
        if rgb.ndim == 2:
            rgb = rgb[..., None]
        try:
            self.arrays[0][:, y : y + h, x : x + w] = np.ascontiguousarray(rgb.transpose(2, 0, 1))
            for arr, f in zip(self.arrays[1:], self.factors[1:], strict=True):
                small = np.clip(np.rint(_block_mean_edges(rgb, f)), 0, 255).astype(np.uint8)
                sy, sx = y // f, x // f
                arr[:, sy : sy + small.shape[0], sx : sx + small.shape[1]] = small.transpose(2, 0, 1)
        except OSError as e:
            raise _write_error(e, f"tile at {core}") from e

    def read_level0(self) -> np.ndarray:
        """The whole level 0 as (h, w, 3) (small stores / tests only)."""
        return np.asarray(self.arrays[0][:]).transpose(1, 2, 0)

    # --- provenance -----------------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        """The store's ``virtual_ihc`` attributes (what the run that made it recorded)."""
        return dict(self.group.attrs.get("virtual_ihc", {}) or {})  # type: ignore[arg-type]

    def update_provenance(self, **values: Any) -> None:
        attrs = dict(self.group.attrs.get("virtual_ihc", {}) or {})  # type: ignore[arg-type]
        attrs.update(values)
        try:
            self.group.attrs["virtual_ihc"] = json.loads(json.dumps(attrs, default=str))
        except OSError as e:
            raise _write_error(e, "the store's attributes") from e

    def save_norm_stats(self, arrays: dict[str, np.ndarray]) -> None:
        tmp = self.path / (NORM_STATS_FILE + ".tmp.npz")
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, self.path / NORM_STATS_FILE)
        except OSError as e:
            raise _write_error(e, "the normalisation statistics") from e

    def has_norm_stats(self) -> bool:
        return (self.path / NORM_STATS_FILE).exists()

    def load_norm_stats(self) -> dict[str, np.ndarray] | None:
        if not self.has_norm_stats():
            return None
        with np.load(self.path / NORM_STATS_FILE) as z:
            return {k: z[k] for k in z.files}

    def close(self) -> None:
        if self._done_fh is not None:
            self._done_fh.close()
            self._done_fh = None


def _ngff_attrs(
    factors: list[int], mpp: tuple[float, float] | None, provenance: dict[str, Any]
) -> dict[str, Any]:
    mx, my = mpp if mpp is not None else (1.0, 1.0)
    unit = "micrometer" if mpp is not None else None
    axes: list[dict[str, Any]] = [{"name": "c", "type": "channel"}]
    for name in ("y", "x"):
        ax: dict[str, Any] = {"name": name, "type": "space"}
        if unit:
            ax["unit"] = unit
        axes.append(ax)
    datasets = [
        {
            "path": str(i),
            "coordinateTransformations": [{"type": "scale", "scale": [1.0, my * f, mx * f]}],
        }
        for i, f in enumerate(factors)
    ]
    provenance = dict(provenance, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return {
        "multiscales": [{"version": "0.4", "name": "virtual IHC", "axes": axes, "datasets": datasets}],
        "omero": {
            "version": "0.4",
            "rdefs": {"model": "color"},
            "channels": [
                {
                    "label": n,
                    "color": c,
                    "active": True,
                    "window": {"start": 0, "end": 255, "min": 0, "max": 255},
                }
                for n, c in (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))
            ],
        },
        "virtual_ihc": json.loads(json.dumps(provenance, default=str)),
    }
