"""Fingerprints of slide files, so a saved transform is only ever applied to the files it was made for.

Small files are hashed whole (SHA-256). Whole-slide files of many GB would take minutes to hash on every
load, so above ``FULL_HASH_LIMIT`` the digest covers the size and three 8 MiB samples (start, middle, end),
which changes with any re-scan, re-export, truncation or edit of the header. OME-Zarr folders hash their
metadata files and the list of chunk names with their sizes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

FULL_HASH_LIMIT = 256 * 1024 * 1024
SAMPLE = 8 * 1024 * 1024


def file_digest(path: str | os.PathLike[str]) -> str:
    """``"sha256:<hex>"`` (whole file), ``"sha256-sampled:<hex>"`` (big file) or ``"sha256-tree:<hex>"``."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            rel = f.relative_to(p).as_posix()
            h.update(f"{rel}\0{f.stat().st_size}\0".encode())
            if f.name.startswith(".z") or f.name == "zarr.json":
                h.update(f.read_bytes())
        return "sha256-tree:" + h.hexdigest()
    size = p.stat().st_size
    with p.open("rb") as fh:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
            return "sha256:" + h.hexdigest()
        h.update(str(size).encode())
        for start in (0, size // 2 - SAMPLE // 2, size - SAMPLE):
            fh.seek(start)
            h.update(fh.read(SAMPLE))
    return "sha256-sampled:" + h.hexdigest()
