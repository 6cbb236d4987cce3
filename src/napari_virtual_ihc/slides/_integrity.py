"""Cheap structural checks that catch truncated or broken TIFF-family files at open time, not mid-pan."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile

from .errors import CorruptSlideError, SlideError, UnsupportedImageError

# One strip or tile is decoded whole: a compressed one may claim far more than its bytes (a 746 KB deflate
# strip of 16000^2 px decodes to 768 MB, and took 1.2-2.1 GB for minutes; issue 29). Real slides' tiles
# are < 1 MiB and plain TIFFs' strips a few MiB; more than this is refused.
MAX_CHUNK_BYTES = 256 << 20


def check_tiff_complete(path: Path, tif: tifffile.TiffFile | None = None) -> None:
    """Raise ``CorruptSlideError`` if any image strip/tile of ``path`` lies beyond the end of the file.

    A truncated copy of a slide still has a valid header, so it opens; this finds the missing bytes by
    comparing every page's strip/tile offsets + byte counts with the file size (no pixel is decoded).
    """
    size = os.path.getsize(path)
    if path.suffix.lower() != ".ndpi":  # NDPI stores >4 GB offsets in non-standard ways; tifffile copes
        _check_ifd_chain(path, size)
    own = tif is None
    try:
        if tif is None:
            tif = tifffile.TiffFile(path)
        pages = list(tif.pages)
        for page in pages:
            subifds = getattr(page, "subifds", None) or ()
            for off in subifds:
                if off >= size:
                    raise CorruptSlideError(
                        f"{path}: truncated (a pyramid level starts past the end of file)"
                    )
        for page in _all_pages(tif, pages):
            offsets = np.asarray(page.dataoffsets, dtype=np.int64)
            counts = np.asarray(page.databytecounts, dtype=np.int64)
            if offsets.size and int((offsets + counts).max()) > size:
                raise CorruptSlideError(
                    f"{path}: truncated or corrupt: image data of page {page.index} extends to byte "
                    f"{int((offsets + counts).max())} but the file has only {size} bytes"
                )
            if path.suffix.lower() != ".ndpi":  # NDPI's single huge strips are its own convention
                _check_chunk_count(path, page, offsets.size, int(counts.sum()))
    except SlideError:
        raise
    except Exception as e:  # tifffile raises many types on broken structures
        raise CorruptSlideError(f"{path}: not a readable TIFF ({type(e).__name__}: {e})") from e
    finally:
        if own and tif is not None:
            tif.close()


def _check_chunk_count(path: Path, page: tifffile.TiffPage, listed: int, data_bytes: int) -> None:
    """The tiles/strips a page lists must be the number its size needs, and uncompressed ones must hold
    its bytes: a 1 KB file whose header claims 10^6 x 10^6 px fails here, before any pixel is read."""
    chunked = tuple(int(n) for n in getattr(page, "chunked", ()) or ())
    if not chunked or not page.shape:
        return
    needed = math.prod(chunked)
    width, height = int(page.imagewidth), int(page.imagelength)
    if listed != needed:
        kind = "tiles" if page.is_tiled else "strips"
        raise CorruptSlideError(
            f"{path}: corrupt TIFF: page {page.index} claims {width} x {height} px, which needs {needed} "
            f"{kind}, but its header lists {listed}"
        )
    per_chunk = math.prod(int(n) for n in page.chunks) * max(1, int(page.bitspersample) // 8)
    if int(page.compression) != 1 and per_chunk > MAX_CHUNK_BYTES:  # uncompressed ones are their bytes
        kind = "tile" if page.is_tiled else "strip"
        raise UnsupportedImageError(
            f"{path}: page {page.index} stores its {width} x {height} px in compressed {kind}s of "
            f"{' x '.join(str(int(n)) for n in page.chunks)} samples; one {kind} decodes to "
            f"{per_chunk / 2**20:.0f} MiB (limit {MAX_CHUNK_BYTES >> 20} MiB, read whole); save it tiled "
            "(e.g. as a pyramidal OME-TIFF with 512 px tiles) or with smaller strips"
        )
    if int(page.compression) == 1 and int(page.bitspersample) % 8 == 0:  # uncompressed
        expected = per_chunk * needed if page.is_tiled else int(page.nbytes)
        if data_bytes < expected:
            raise CorruptSlideError(
                f"{path}: corrupt TIFF: page {page.index} claims {width} x {height} uncompressed px "
                f"({expected} bytes) but its image data holds only {data_bytes} bytes"
            )


def _check_ifd_chain(path: Path, size: int) -> None:
    """Follow the chain of image directories: every one must lie wholly inside the file."""
    with open(path, "rb") as fh:
        head = fh.read(16)
        endian: Literal["little", "big"] = "little" if head[:2] == b"II" else "big"
        big = int.from_bytes(head[2:4], endian) == 43
        offset = int.from_bytes(head[8:16] if big else head[4:8], endian)
        count_size, entry_size, next_size = (8, 20, 8) if big else (2, 12, 4)
        seen: set[int] = set()
        while offset and len(seen) < 100_000:
            if offset in seen:
                raise CorruptSlideError(f"{path}: corrupt TIFF (image directories form a loop)")
            seen.add(offset)
            if offset + count_size > size:
                raise CorruptSlideError(
                    f"{path}: truncated: image directory {len(seen)} starts at byte {offset} but the file "
                    f"has only {size} bytes"
                )
            fh.seek(offset)
            n = int.from_bytes(fh.read(count_size), endian)
            end = offset + count_size + n * entry_size + next_size
            if end > size:
                raise CorruptSlideError(
                    f"{path}: truncated: image directory {len(seen)} ends at byte {end} but the file has "
                    f"only {size} bytes"
                )
            fh.seek(offset + count_size + n * entry_size)
            offset = int.from_bytes(fh.read(next_size), endian)


def _all_pages(tif: tifffile.TiffFile, pages: list) -> list:
    """Top-level pages plus the SubIFD pyramid levels of every series."""
    out = [p for p in pages if isinstance(p, tifffile.TiffPage)]
    for series in tif.series:
        for level in series.levels[1:]:
            out.extend(p for p in level.pages if isinstance(p, tifffile.TiffPage))
    return out
