"""Whole-slide cases: re-encode any slide (SVS, OME-Zarr store, TIFF, image) as one canonical tiled pyramid.

Every whole-slide image of a bundle, real or virtual, becomes a BigTIFF with 256 x 256 RGB tiles,
uncompressed, level 0 plus half-size sub-IFD levels down to <= 512 px, and no descriptive tag (no
software, description, date, ICC or scale): the tags are the same for every image of a given size and the
byte size depends only on width and height (compressed tile sizes would tell smooth generated tiles
from real ones). Pixels are read tile by tile from the source (its own pyramid level nearest each output
level), resampled to the case's target size, so a slide never has to fit in memory. Readers get the
levels lazily (``read_levels``: zarr arrays over the file) for a multiscale napari layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .cases import ImageSource
from .errors import BundleError, CaseTableError

TILE = 256
SMALLEST_LEVEL = 512  # stop halving when both sides are at most this
BAND_TILES = 8  # tiles read from the source per read_region call


def pyramid_sizes(width: int, height: int) -> list[tuple[int, int]]:
    """(width, height) of every level: level 0, then halved (rounded up) while a side exceeds 512 px."""
    sizes = [(width, height)]
    while max(sizes[-1]) > SMALLEST_LEVEL:
        w, h = sizes[-1]
        sizes.append((-(-w // 2), -(-h // 2)))
    return sizes


def source_size(source: ImageSource) -> tuple[int, int]:
    """(width, height) of a source image or its region, without reading pixels."""
    if source.region is not None:
        return source.region[2], source.region[3]
    from napari_virtual_ihc.slides import SlideError, open_slide

    try:
        with open_slide(source.path) as slide:
            return slide.dimensions
    except (SlideError, OSError, ValueError) as exc:
        raise CaseTableError(f"cannot read {source.path}: {exc}") from exc


class ResampledSource:
    """Tiles of a source slide (or region) resampled to a target size, at any pyramid level."""

    def __init__(self, source: ImageSource, target: tuple[int, int]) -> None:
        from napari_virtual_ihc.slides import SlideError, open_slide

        try:
            self.slide = open_slide(source.path)
        except (SlideError, OSError, ValueError) as exc:
            raise CaseTableError(f"cannot read {source.path}: {exc}") from exc
        self.path = source.path
        W, H = self.slide.dimensions
        self.box = source.region or (0, 0, W, H)  # level-0 region of the source
        self.target = target

    def close(self) -> None:
        self.slide.close()

    def read(self, level_size: tuple[int, int], x: int, y: int, w: int, h: int) -> np.ndarray:
        """RGB (h, w) of the output level of size ``level_size`` at (x, y)."""
        bx, by, bw, bh = self.box
        fx = bw / level_size[0]  # source level-0 px per output px
        fy = bh / level_size[1]
        x0, y0 = bx + x * fx, by + y * fy
        x1, y1 = bx + (x + w) * fx, by + (y + h) * fy
        level = self.slide.best_level_for_downsample(min(fx, fy))
        ds = self.slide.level_downsamples[level]
        lx, ly = math.floor(x0), math.floor(y0)
        rw = max(1, math.ceil((x1 - lx) / ds))
        rh = max(1, math.ceil((y1 - ly) / ds))
        try:
            rgb = np.asarray(self.slide.read_region((lx, ly), level, (rw, rh)))[..., :3]
        except (OSError, ValueError) as exc:
            raise CaseTableError(f"cannot read {self.path}: {exc}") from exc
        if rgb.shape[:2] == (h, w):
            return np.ascontiguousarray(rgb, dtype=np.uint8)
        from PIL import Image

        # crop the sub-pixel offset of the floor, then resample to exactly (w, h)
        crop = (
            (x0 - lx) / ds,
            (y0 - ly) / ds,
            (x1 - lx) / ds,
            (y1 - ly) / ds,
        )
        im = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
        return np.asarray(im.resize((w, h), Image.Resampling.LANCZOS, box=crop))


def _tiles(src: ResampledSource, size: tuple[int, int], tile: int) -> Iterator[np.ndarray]:
    """Tiles in row-major order, read from the source a band of up to BAND_TILES tiles at a time (one
    read and one resampling per band: far fewer source decodes, no seams between the band's tiles)."""
    w, h = size
    band = tile * BAND_TILES
    for y in range(0, h, tile):
        th = min(tile, h - y)
        for bx in range(0, w, band):
            bw = min(band, w - bx)
            strip = src.read(size, bx, y, bw, th)
            for x in range(0, bw, tile):
                tw = min(tile, bw - x)
                block = np.zeros((tile, tile, 3), np.uint8)  # edge tiles padded with 0 (outside the image)
                block[:th, :tw] = strip[:, x : x + tw]
                yield block


def write_tiled(
    path: Path,
    source: ImageSource,
    target: tuple[int, int],
    tile: int = TILE,
    progress: Callable[[], None] | None = None,
) -> list[tuple[int, int]]:
    """Write ``source`` resampled to ``target`` (width, height) as the canonical tiled pyramid."""
    import tifffile

    sizes = pyramid_sizes(*target)
    src = ResampledSource(source, target)
    try:
        with tifffile.TiffWriter(path, bigtiff=True) as tw:
            for k, (w, h) in enumerate(sizes):
                tw.write(
                    _tiles(src, (w, h), tile),
                    shape=(h, w, 3),
                    dtype=np.uint8,
                    tile=(tile, tile),
                    photometric="rgb",
                    compression=None,
                    subifds=len(sizes) - 1 if k == 0 else None,
                    subfiletype=1 if k else 0,
                    metadata=None,
                    software=False,
                )
                if progress is not None:
                    progress()
    finally:
        src.close()
    return sizes


def read_levels(path: Path) -> list[Any]:
    """Every level of a bundle pyramid as a lazily read zarr array (full resolution first)."""
    import tifffile
    import zarr

    try:
        with tifffile.TiffFile(path) as tif:  # the level count from the file: tifffile's store may not list
            n_levels = len(tif.series[0].levels)
        store = tifffile.imread(path, aszarr=True)
        if n_levels == 1:  # tifffile writes a one-level pyramid (cases <= 512 px) as an array, not a group
            return [zarr.open_array(store, mode="r")]
        group = zarr.open_group(store, mode="r")
        return [group[str(k)] for k in range(n_levels)]
    # IndexError: a TIFF without an image series; zarr's errors: a store that is neither array nor group
    except (
        OSError,
        ValueError,
        KeyError,
        IndexError,
        tifffile.TiffFileError,
        zarr.errors.BaseZarrError,
    ) as exc:
        raise BundleError(f"bundle image {path.name} is unreadable: {exc}") from exc


def tiff_tags(path: Path) -> list[list[tuple[int, Any]]]:
    """(code, value) of every tag of every pyramid level, offsets included (for blinding audits)."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        return [
            [(t.code, _plain(t.value)) for t in level.keyframe.tags.values()] for level in tf.series[0].levels
        ]


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    return int(value) if isinstance(value, (int, np.integer)) else value
