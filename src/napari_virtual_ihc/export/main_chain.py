"""Make an OME-TIFF pyramid visible to OpenSlide too: its reduced levels linked into the main IFD chain.

OME-TIFF keeps a pyramid's reduced levels as SubIFDs of the full-resolution page (OME-TIFF 6 spec;
Bio-Formats/QuPath/OMERO and tifffile read them). OpenSlide's generic-tiff reader walks only the main IFD
chain and takes every tiled directory after the first whose NewSubfileType has the reduced-resolution bit
(openslide-vendor-generic-tiff.c, 4.0.1): it shows such a file as one level. Here each SubIFD's directory
is copied, entry for entry, to the end of the file and chained after page 0. The copies point at the same
tile bytes (no pixel is written twice, the file grows by a few hundred bytes) and OME readers, which
follow the OME-XML's ``TiffData IFD="0"`` and its SubIFDs, are unaffected.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import tifffile

from .errors import ExportError

#: BigTIFF directory layout: an 8-byte entry count, 20-byte entries, an 8-byte next-directory offset.
_COUNT, _ENTRY, _NEXT = 8, 20, 8


def link_reduced_levels(path: Path) -> int:
    """Chain page 0's SubIFDs after it in the main IFD chain of BigTIFF ``path``; returns how many."""
    with tifffile.TiffFile(path) as tif:
        if not tif.is_bigtiff or len(tif.pages) != 1:
            raise ExportError(f"{path}: expected a BigTIFF with one main page to link levels into")
        page0 = tif.pages.first
        tag = page0.tags.get("SubIFDs")
        subifds = [int(o) for o in tag.value] if tag is not None else []
        order = tif.byteorder
        first = page0.offset
    if not subifds:
        return 0
    u64 = order + "Q"
    with open(path, "r+b") as f:
        directories = [_read_directory(f, off, u64) for off in [first, *subifds]]
        page0_next = first + _COUNT + _ENTRY * _entry_count(directories[0], u64)
        f.seek(page0_next)
        if struct.unpack(u64, f.read(_NEXT))[0] != 0:
            raise ExportError(f"{path}: page 0 already has a next directory")
        end = f.seek(0, 2)
        f.write(b"\0" * (-end % 8))  # directories start on a word boundary (8 bytes for BigTIFF)
        copies = []
        position = f.tell()
        for raw in directories[1:]:
            copies.append(position)
            position += len(raw) + _NEXT
        for i, raw in enumerate(directories[1:]):
            following = copies[i + 1] if i + 1 < len(copies) else 0
            f.write(raw + struct.pack(u64, following))
        f.seek(page0_next)
        f.write(struct.pack(u64, copies[0]))
    return len(copies)


def _entry_count(raw: bytes, u64: str) -> int:
    return int(struct.unpack(u64, raw[:_COUNT])[0])


def _read_directory(f: BinaryIO, offset: int, u64: str) -> bytes:
    """The raw bytes of the directory at ``offset``: its count and entries (not its next offset)."""
    f.seek(offset)
    count = struct.unpack(u64, f.read(_COUNT))[0]
    return struct.pack(u64, count) + f.read(_ENTRY * count)
