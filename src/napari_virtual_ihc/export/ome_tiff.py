"""A slide or store to a tiled pyramidal OME-TIFF, streamed tile by tile (memory flat whatever the size).

Level 0 is copied tile by tile from the source's level 0; each reduced level is made per tile from the
source's nearest finer level (``best_level_for_downsample``), so the source's own pyramid keeps every read
small. The reduced levels are SubIFDs, as OME-TIFF pyramids are (QuPath/Bio-Formats, OMERO, tifffile read
them), and are also linked into the main IFD chain as reduced-resolution directories sharing the same tiles
(``main_chain``), which is where OpenSlide looks for a pyramid. µm/px goes in the OME ``PhysicalSizeX/Y``
and the TIFF resolution tags of every level (OpenSlide's ``openslide.mpp-x``); the source's provenance goes,
as JSON, in the OME image ``Description``.

JPEG tiles are coded in RGB (no YCbCr transform, no chroma subsampling; PhotometricInterpretation RGB, as
many Aperio slides are) at quality 90. Against the usual YCbCr 4:2:0 it lowers the per-pixel error on
stained tissue (the largest error by a third or more, the mean by 10-50 %) for about 2.5x the bytes;
YCbCr 4:4:4 would be smaller, but Bio-Formats (QuPath's OME-TIFF reader) decodes it to wrong colours. No
setting at quality 90 keeps every pixel within one grey level: the mean colour does (docs/slides.md).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import cv2
import imagecodecs
import numpy as np
import tifffile

from ..slides.base import Slide
from .errors import ExportError
from .main_chain import link_reduced_levels

Compression = Literal["jpeg", "deflate"]
#: JPEG quality: at 90 the mean colour stays within 0.1 grey level, single pixels not (docs/slides.md).
JPEG_QUALITY = 90
TILE = 512


def level_sizes(width: int, height: int, tile: int = TILE) -> list[tuple[int, int]]:
    """(w, h) of each pyramid level, halving until the whole level fits in one tile."""
    sizes = [(width, height)]
    while max(sizes[-1]) > tile:
        w, h = sizes[-1]
        sizes.append((max(1, math.ceil(w / 2)), max(1, math.ceil(h / 2))))
    return sizes


def write_ome_tiff(
    slide: Slide,
    out: str | os.PathLike[str],
    *,
    compression: Compression = "jpeg",
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
    tile: int = TILE,
) -> Path:
    """Write ``slide`` to ``out`` (a new file, written beside it then renamed: never half a file).

    Refuses an existing ``out`` unless ``overwrite``. ``provenance`` (JSON-able) goes in the description.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out}: already exists; pass overwrite (--overwrite) to replace it")
    if not out.parent.is_dir():
        raise ExportError(f"{out.parent}: no such folder")
    if compression not in ("jpeg", "deflate"):
        raise ExportError(f"unknown compression {compression!r}; use 'jpeg' or 'deflate'")
    width, height = slide.dimensions
    sizes = level_sizes(width, height, tile)
    codec: dict[str, Any] = (
        {
            "compression": "jpeg",
            "compressionargs": {"level": JPEG_QUALITY, "outcolorspace": "rgb"},
            "subsampling": (1, 1),
        }
        if compression == "jpeg"
        else {"compression": "zlib"}
    )
    mpp = slide.mpp
    metadata: dict[str, Any] = {"axes": "YXS", "Description": json.dumps(provenance or {}, default=str)}
    resolution: dict[str, Any] = {}
    if mpp is not None:
        metadata |= {
            "PhysicalSizeX": mpp[0],
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": mpp[1],
            "PhysicalSizeYUnit": "µm",
        }
        resolution = {"resolution": (1e4 / mpp[0], 1e4 / mpp[1]), "resolutionunit": "CENTIMETER"}
    partial = out.with_name(f".{out.name}.partial")
    common = {"tile": (tile, tile), "photometric": "rgb", "dtype": np.uint8, **codec}
    try:
        with tifffile.TiffWriter(partial, bigtiff=True, ome=True) as tw:
            tw.write(
                _tiles(slide, 0, sizes, tile),
                shape=(height, width, 3),
                subifds=len(sizes) - 1,
                metadata=metadata,
                **resolution,
                **common,
            )
            for k in range(1, len(sizes)):
                w, h = sizes[k]
                tw.write(
                    _tiles(slide, k, sizes, tile),
                    shape=(h, w, 3),
                    subfiletype=1,
                    metadata=None,
                    **_scaled(resolution, 2**k),
                    **common,
                )
        link_reduced_levels(partial)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def _scaled(resolution: dict[str, Any], factor: int) -> dict[str, Any]:
    if not resolution:
        return {}
    rx, ry = resolution["resolution"]
    return {"resolution": (rx / factor, ry / factor), "resolutionunit": resolution["resolutionunit"]}


def jpeg_round_trip(rgb: np.ndarray, tile: int = TILE) -> np.ndarray:
    """What a JPEG export of ``rgb`` holds: each tile padded white, coded as the export codes it, decoded.

    The reference a client's read-back is checked against: any difference from it is the export's own error,
    the rest of the loss is the codec's at ``JPEG_QUALITY``.
    """
    h, w = rgb.shape[:2]
    out = np.empty_like(rgb)
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            block = rgb[y : y + tile, x : x + tile]
            padded = np.full((tile, tile, 3), 255, np.uint8)
            padded[: block.shape[0], : block.shape[1]] = block
            coded = imagecodecs.jpeg_encode(padded, level=JPEG_QUALITY, outcolorspace="rgb")
            decoded = imagecodecs.jpeg_decode(coded)
            out[y : y + tile, x : x + tile] = decoded[: block.shape[0], : block.shape[1]]
    return out


def _tiles(slide: Slide, k: int, sizes: list[tuple[int, int]], tile: int) -> Iterator[np.ndarray]:
    """Tiles of pyramid level ``k`` in row-major order, each ``(tile, tile, 3)`` (edges padded white)."""
    w, h = sizes[k]
    factor = 2**k
    src_level = slide.best_level_for_downsample(factor)
    src_ds = slide.level_downsamples[src_level]
    span0 = tile * factor  # level-0 pixels one output tile covers
    read = max(1, round(span0 / src_ds))  # the same span in source-level pixels
    for ty in range(math.ceil(h / tile)):
        for tx in range(math.ceil(w / tile)):
            region = slide.read_region((tx * span0, ty * span0), src_level, (read, read))
            if read != tile:
                region = cv2.resize(region, (tile, tile), interpolation=cv2.INTER_AREA)
            yield np.ascontiguousarray(region)
