"""Which slide a store was made from, so two slides that share a file name never share a result.

A file is known by its size and a hash of its first and last MiB (header, first IFD and tiles, the tail
of the pixel data: different scans differ there), a folder (an OME-Zarr input) by the names and sizes of
its files, an in-memory image (a napari layer without a file) by its size and the pixels of a crop of its
smallest level. Hashing a few MiB takes milliseconds, so the widget can check before offering a result.
The path is recorded but not compared: a slide moved to another folder still resumes its store.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..slides.base import Slide

HEAD_BYTES = 1 << 20
MAX_DIR_ENTRIES = 20_000
PIXEL_CROP = 1024


def file_identity(path: Path) -> dict[str, Any]:
    """``{"size", "sha256"}`` of a file (first and last MiB) or of a folder's listing."""
    digest = hashlib.sha256()
    if path.is_dir():
        size = 0
        entries = []
        for n, (root, dirs, files) in enumerate(os.walk(path)):
            dirs.sort()
            for name in sorted(files):
                p = Path(root, name)
                st = p.stat()
                size += st.st_size
                entries.append(f"{p.relative_to(path).as_posix()}\t{st.st_size}\n")
            if n > MAX_DIR_ENTRIES:
                break
        digest.update("".join(entries).encode())
        return {"size": size, "sha256": digest.hexdigest()}
    size = path.stat().st_size
    with open(path, "rb") as fh:
        digest.update(fh.read(HEAD_BYTES))
        if size > 2 * HEAD_BYTES:
            fh.seek(size - HEAD_BYTES)
            digest.update(fh.read(HEAD_BYTES))
        elif size > HEAD_BYTES:
            digest.update(fh.read())
    return {"size": size, "sha256": digest.hexdigest()}


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
    """What tells this slide from any other: ``{"path", "size", "sha256"}`` (see the module's docstring)."""
    path = Path(slide.path) if slide.path else None
    if path is not None and path.exists():
        return {"path": str(path.resolve()), **file_identity(path)}
    return {"path": str(path) if path else None, **pixel_identity(slide)}


def same_source(recorded: dict[str, Any] | None, identity: dict[str, Any]) -> bool:
    """True when a store's recorded identity is this slide's (stores without one match nothing)."""
    if not isinstance(recorded, dict):
        return False
    return recorded.get("sha256") == identity["sha256"] and recorded.get("size") == identity["size"]
