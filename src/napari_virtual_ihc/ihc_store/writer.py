"""Writing the store: created atomically, resumed only by the same run, written by one process at a time.

Layout (zarr v2 on disk, OME-NGFF 0.4): arrays ``0``, ``1``, ... of shape (3, H, W) uint8, chunked by the
tile size so one tile is one chunk at level 0; fill value 255 (unwritten reads as white glass). The
``virtual_ihc`` attribute holds the run key (what must match to resume) and the provenance.
``tiles_done`` is an append-only text file (``<index> <d|s>`` per line, ``s`` = background filled without
the model), written and fsync'd only after the tile's pixels are in the store (zarr writes every chunk
atomically), so a killed run leaves no tile marked done whose pixels are missing.

Nothing already at the store's path is ever deleted unless it is provably this project's own half-made
store (metadata only, no pixels): anything else there is refused, and so is a store path inside (or
holding) the input slide.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr import Array

from .errors import (
    ForeignPathError,
    OtherSourceError,
    OutputNotWritableError,
    StoreMismatchError,
    StoreWriteError,
)
from .identity import older_identity
from .layout import DONE_FILE, NORM_STATS_FILE, ngff_attrs
from .lock import StoreLock
from .naming import PROVENANCE_KEY, lock_path

CREATING = ".creating-"  # prefix of a store being built beside its final path


def check_writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed and prove we can write there, before any work starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".virtual-ihc-write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise OutputNotWritableError(f"cannot write to output folder {folder}: {e.strerror or e}") from e


def check_not_source(store: Path, source: Path | None) -> None:
    """Refuse a store path that is, holds, or lies inside the input slide."""
    if source is None:
        return
    s, t = Path(source).resolve(), store.resolve()
    if s == t or s in t.parents or t in s.parents:
        raise ForeignPathError(
            f"{store} would overwrite the input slide {source}; choose another output folder"
        )


def check_output_outside(folder: Path, sources: list[Path]) -> None:
    """Refuse an output folder that is, or lies inside, an input slide (an OME-Zarr folder): its records and
    stores would be written into the input. Checked before the folder is created."""
    out = folder.resolve()
    for source in sources:
        s = source.resolve()
        if s.is_dir() and (out == s or s in out.parents):
            raise ForeignPathError(
                f"the output folder {folder} is inside the input slide {source}; choose an output folder "
                "outside it"
            )


def write_error(err: OSError, what: str) -> StoreWriteError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StoreWriteError(
            f"disk full while writing {what}; finished tiles are kept, free some space and run again to resume"
        )
    return StoreWriteError(f"could not write {what}: {err}")


def _block_mean_edges(img: np.ndarray, k: int) -> np.ndarray:
    """(h, w, c) -> (ceil(h/k), ceil(w/k), c) mean over k x k blocks, partial blocks at the edges."""
    h, w = img.shape[:2]
    ph, pw = -h % k, -w % k
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return block_mean(img, k)


def block_mean(img: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks (partial blocks at the far edges dropped), float32 (h // k, w // k, c)."""
    import torch
    import torch.nn.functional as F

    h, w = img.shape[0] // k, img.shape[1] // k
    t = torch.from_numpy(np.ascontiguousarray(img[: h * k, : w * k])).permute(2, 0, 1)[None].float()
    return F.avg_pool2d(t, k).squeeze(0).permute(1, 2, 0).contiguous().numpy()


def classify_path(path: Path) -> str:
    """``absent``, ``empty`` (an empty folder), ``ours`` (a store with a run key), ``half`` (this project's
    layout with metadata only: a creation that died before its attributes), or ``foreign``."""
    if not path.exists() and not path.is_symlink():
        return "absent"
    if not path.is_dir() or path.is_symlink():
        return "foreign"
    entries = {p.name: p for p in path.iterdir()}
    if not entries:
        return "empty"
    if ".zgroup" not in entries:
        return "foreign"  # not zarr v2 (a zarr v3 / NGFF 0.5 store, or any folder)
    try:
        attrs = json.loads((path / ".zattrs").read_text()) if ".zattrs" in entries else {}
    except (OSError, ValueError):
        return "foreign"
    own = attrs.get(PROVENANCE_KEY) if isinstance(attrs, dict) else None
    if isinstance(own, dict) and "run_key" in own:
        return "ours"
    if attrs:
        return "foreign"
    metadata_only = all(
        name in (".zgroup", ".zattrs")
        or (name.isdigit() and p.is_dir() and {c.name for c in p.iterdir()} <= {".zarray", ".zattrs"})
        for name, p in entries.items()
    )
    return "half" if metadata_only else "foreign"


class TileStore:
    """An open store at ``path`` with ``factors`` pyramid levels (1 first); holds the store's lock."""

    def __init__(self, path: Path, group: zarr.Group, factors: list[int], lock: StoreLock) -> None:
        self.path = path
        self.group = group
        self.factors = factors
        self.arrays: list[Array] = [self._array(group, str(i)) for i in range(len(factors))]
        self._lock = lock
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
        *,
        source: Path | None = None,
        channels: int = 3,
        fill: int = 255,
    ) -> TileStore:
        """Resume the store written with the same ``run_key``, or create it; raises if anything else is
        there, if the store would land in ``source`` (the input slide), or if another run holds its lock.

        ``channels`` 1 with ``fill`` 0 makes a single-channel map (the dropout confidence store).
        """
        check_not_source(path, source)
        lock = StoreLock(lock_path(path), str(path)).acquire()
        try:
            kind = classify_path(path)
            if kind == "foreign":
                raise ForeignPathError(
                    f"{path} exists and is not a virtual IHC store (it would be overwritten); move it away "
                    "or choose another output folder"
                )
            if kind == "ours":
                group = zarr.open_group(str(path), mode="r+", zarr_format=2)
                _check_run_key(path, dict(group.attrs.get(PROVENANCE_KEY) or {}), run_key)  # type: ignore[arg-type]
                return cls(path, group, factors, lock)
            if kind == "half":
                shutil.rmtree(path)  # metadata only: nothing of value (see classify_path)
            elif kind == "empty":
                path.rmdir()
            _clean_leftovers(path)
            prov = dict(provenance, run_key=run_key, complete=False)
            _create(path, plane, tile, factors, mpp, prov, channels, fill)
            group = zarr.open_group(str(path), mode="r+", zarr_format=2)
            return cls(path, group, factors, lock)
        except BaseException:
            lock.release()
            raise

    # --- finished tiles -------------------------------------------------------------------------------
    def finished(self) -> dict[int, str]:
        """Tile index -> ``"d"`` (model ran) or ``"s"`` (background), from complete lines only."""
        p = self.path / DONE_FILE
        out: dict[int, str] = {}
        if not p.exists():
            return out
        text = p.read_bytes()
        lines = text.split(b"\n")
        if not text.endswith(b"\n"):
            lines = lines[:-1]  # a torn last line (no newline) is ignored
        for line in lines:
            parts = line.decode(errors="replace").split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1] in ("d", "s"):
                out[int(parts[0])] = parts[1]
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
            raise write_error(e, "the finished-tile record") from e

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
            raise write_error(e, f"tile at {core}") from e

    # --- provenance -----------------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        return dict(self.group.attrs.get(PROVENANCE_KEY, {}) or {})  # type: ignore[arg-type]

    def update_provenance(self, **values: Any) -> None:
        attrs = self.provenance()
        attrs.update(values)
        try:
            self.group.attrs[PROVENANCE_KEY] = json.loads(json.dumps(attrs, default=str))
        except OSError as e:
            raise write_error(e, "the store's attributes") from e

    def save_norm_stats(self, arrays: dict[str, np.ndarray]) -> None:
        tmp = self.path / (NORM_STATS_FILE + ".tmp.npz")
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, self.path / NORM_STATS_FILE)
        except OSError as e:
            raise write_error(e, "the normalisation statistics") from e

    def has_norm_stats(self) -> bool:
        return (self.path / NORM_STATS_FILE).exists()

    def load_norm_stats(self) -> dict[str, np.ndarray] | None:
        if not self.has_norm_stats():
            return None
        with np.load(self.path / NORM_STATS_FILE) as z:
            return {k: z[k] for k in z.files}

    def close(self) -> None:
        """Close the record and let go of the lock (also when the run failed)."""
        try:
            if self._done_fh is not None:
                self._done_fh.close()
                self._done_fh = None
        finally:
            self._lock.release()


def _check_run_key(path: Path, stored: dict[str, Any], run_key: dict[str, Any]) -> None:
    old = stored.get("run_key")
    new = json.loads(json.dumps(run_key))
    if old == new:
        return
    old_source = old.get("source") if isinstance(old, dict) else None
    if older_identity(old_source):
        raise OtherSourceError(
            f"{path} was made by an older version that knew a slide only by its size and its first and last "
            "MiB, so its slide cannot be verified (another scan of the same size would pass); it is kept and "
            "not resumed: move or delete it to stain again, or choose another output folder"
        )
    if isinstance(old_source, dict) and old_source != new.get("source"):
        recorded = (stored.get("source") or {}).get("path") or "another image"
        raise OtherSourceError(
            f"{path} holds the result of another slide with the same name ({recorded}); choose another "
            "output folder for this one"
        )
    raise StoreMismatchError(
        f"{path} was written with other settings ({old}); use another output or delete it to start over "
        f"(this run: {run_key})"
    )


def _clean_leftovers(path: Path) -> None:
    """Remove stores this project began building beside ``path`` in runs that died (we hold the lock)."""
    for p in path.parent.glob(f".{path.name}{CREATING}*"):
        shutil.rmtree(p, ignore_errors=True)


def _create(
    path: Path,
    plane: tuple[int, int],
    tile: int,
    factors: list[int],
    mpp: tuple[float, float] | None,
    provenance: dict[str, Any],
    channels: int = 3,
    fill: int = 255,
) -> None:
    """Build the store aside, then rename it into place: a failed creation leaves nothing at ``path``."""
    tmp = path.with_name(f".{path.name}{CREATING}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        group = zarr.open_group(str(tmp), mode="w-", zarr_format=2)
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
        attrs = ngff_attrs(factors, mpp, provenance)
        if channels != 3:
            attrs["omero"]["channels"] = attrs["omero"]["channels"][:1]
            attrs["omero"]["channels"][0].update(label="spread", color="FFFFFF")
            attrs["omero"]["rdefs"] = {"model": "greyscale"}
        group.attrs.update(attrs)
        os.rename(tmp, path)
    except OSError as e:
        _remove_once_settled(tmp)
        raise write_error(e, f"the new store {path}") from e


def _remove_once_settled(tmp: Path, quiet_s: float = 0.1, limit_s: float = 2.0) -> None:
    """Remove a half-built store, again if writes still in flight recreate it. zarr writes a group's or
    array's metadata files concurrently: when one fails, the others may land after a first removal (seen:
    1 creation in 8 left ``.zgroup`` or ``.zattrs`` behind). Gone for ``quiet_s`` counts as settled."""
    deadline, last_seen = time.monotonic() + limit_s, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last_seen < quiet_s:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            last_seen = time.monotonic()
        time.sleep(0.005)
