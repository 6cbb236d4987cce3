"""Which slide a store was made from, so two slides that share a file name never share a result.

A file is known by the SHA-256 of its whole content (streamed, ~1 GB/s), a folder (an OME-Zarr input) by
the names, sizes and contents of its files, an in-memory image (a napari layer without a file) by its size
and the pixels of its smallest level. An earlier identity hashed only a file's first and last MiB, so two
equal-size scans that differed only in the middle shared a store (issue 29): hashing everything cannot
collide that way. A hash is kept per process, keyed by path, size, mtime and inode, so the widget can check
a layer again without reading the file again. The path is recorded but not compared: a slide moved to
another folder still resumes its store.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..slides.base import Slide

# The identity's kind, recorded in the run key: a store without it was made by the head+tail identity
# of earlier versions, which cannot tell such slides apart (see ``older_identity``).
IDENTITY_SCHEME = "sha256-content"
MAX_DIR_ENTRIES = 200_000
PIXEL_CROP = 4096
CHUNK = 1 << 22

_hashes: dict[tuple[Any, ...], dict[str, Any]] = {}


def _file_key(path: Path, st: os.stat_result) -> tuple[Any, ...]:
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def _hash_file(path: Path, digest: Any) -> None:
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)


def file_identity(path: Path) -> dict[str, Any]:
    """``{"size", "sha256"}`` of a file's whole content, or of a folder's listing and contents."""
    path = path.resolve()
    if path.is_dir():
        files: list[tuple[Path, os.stat_result]] = []
        for root, dirs, names in os.walk(path):
            dirs.sort()
            files += [(Path(root, n), Path(root, n).stat()) for n in sorted(names)]
            if len(files) > MAX_DIR_ENTRIES:
                break
        key: tuple[Any, ...] = ("dir", str(path), *(_file_key(p, st) for p, st in files))
        if key not in _hashes:
            digest = hashlib.sha256()
            for p, st in files:
                digest.update(f"{p.relative_to(path).as_posix()}\t{st.st_size}\n".encode())
                _hash_file(p, digest)
            _hashes[key] = {"size": sum(st.st_size for _, st in files), "sha256": digest.hexdigest()}
        return dict(_hashes[key])
    key = _file_key(path, path.stat())
    if key not in _hashes:
        digest = hashlib.sha256()
        _hash_file(path, digest)
        _hashes[key] = {"size": key[1], "sha256": digest.hexdigest()}
    return dict(_hashes[key])


def pixel_identity(slide: Slide) -> dict[str, Any]:
    """``{"size", "sha256"}`` of an image without a file: its level-0 size and a crop of its smallest level."""
    level = slide.level_count - 1
    w, h = slide.level_dimensions[level]
    cw, ch = min(w, PIXEL_CROP), min(h, PIXEL_CROP)
    crop = np.ascontiguousarray(slide.read_region((0, 0), level, (cw, ch)))
    digest = hashlib.sha256(f"{slide.dimensions}".encode())
    digest.update(crop.tobytes())
    return {"size": list(slide.dimensions), "sha256": digest.hexdigest()}


def source_identity(slide: Slide) -> dict[str, Any]:
    """What tells this slide from any other: ``{"path", "size", "sha256", "scheme"}`` (see the module)."""
    path = Path(slide.path) if slide.path else None
    if path is not None and path.exists():
        return {"path": str(path.resolve()), **file_identity(path), "scheme": IDENTITY_SCHEME}
    return {"path": str(path) if path else None, **pixel_identity(slide), "scheme": IDENTITY_SCHEME}


def older_identity(recorded: Any) -> bool:
    """True for a run key's source recorded by an earlier version (first and last MiB only)."""
    return isinstance(recorded, dict) and "sha256" in recorded and recorded.get("scheme") != IDENTITY_SCHEME


def same_source(recorded: dict[str, Any] | None, identity: dict[str, Any]) -> bool:
    """True when a store's recorded identity is this slide's (stores without one, or with the older
    identity that cannot be verified, match nothing)."""
    if not isinstance(recorded, dict) or older_identity(recorded):
        return False
    return recorded.get("sha256") == identity["sha256"] and recorded.get("size") == identity["size"]
