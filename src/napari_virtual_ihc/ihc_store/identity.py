"""Which slide a store was made from, so two slides that share a file name never share a result.

A file is known by the SHA-256 of its whole content (streamed, ~1 GB/s), a folder (an OME-Zarr input) by
the names, sizes and contents of its files, an in-memory image (a napari layer without a file) by its size
and the pixels of its smallest level. An earlier identity hashed only a file's first and last MiB, so two
equal-size scans that differed only in the middle shared a store (issue 29): hashing everything cannot
collide that way. A file's hash is kept, keyed by its path, size, mtime (ns), inode and device, in memory and
in a small JSON file in the user's cache folder (``identity-cache.json``; a 3 GB scan takes ~10 s to hash on
a shared EPYC core), so the widget and a re-run need not read the file again; a changed file has another key.
The path is recorded but not compared: a slide moved to another folder still resumes its store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from platformdirs import user_cache_dir

if TYPE_CHECKING:
    from ..slides.base import Slide

# The identity's kind, recorded in the run key: a store without it was made by the head+tail identity
# of earlier versions, which cannot tell such slides apart (see ``older_identity``).
IDENTITY_SCHEME = "sha256-content"
MAX_DIR_ENTRIES = 200_000
PIXEL_CROP = 4096
CHUNK = 1 << 22
CACHE_ENTRIES = 4096  # files remembered in the cache file (the most recent)
CACHE_MIN_BYTES = 64 << 20  # smaller files are hashed again (< 0.3 s): the cache holds only what saves time

_hashes: dict[tuple[Any, ...], dict[str, Any]] = {}


def cache_file() -> Path:
    return Path(user_cache_dir("napari-virtual-ihc", appauthor=False)) / "identity-cache.json"


def _load_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _cached(key: tuple[Any, ...]) -> dict[str, Any] | None:
    entry = _load_cache().get(json.dumps(key))
    if isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and entry.get("size") == key[1]:
        return {"size": key[1], "sha256": entry["sha256"]}
    return None


def _remember(key: tuple[Any, ...], identity: dict[str, Any]) -> None:
    """Add to the cache file (atomically replaced; a cache that cannot be written is only slower)."""
    path = cache_file()
    data = _load_cache()
    data.pop(json.dumps(key), None)
    data[json.dumps(key)] = {"size": identity["size"], "sha256": identity["sha256"]}
    data = dict(list(data.items())[-CACHE_ENTRIES:])
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


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
        big = key[1] >= CACHE_MIN_BYTES
        found = _cached(key) if big else None
        if found is None:
            digest = hashlib.sha256()
            _hash_file(path, digest)
            found = {"size": key[1], "sha256": digest.hexdigest()}
            if big:
                _remember(key, found)
        _hashes[key] = found
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
