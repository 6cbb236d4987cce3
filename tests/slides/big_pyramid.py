"""Write a huge tiled JPEG pyramidal TIFF in seconds: real H&E tiles encoded once, written pre-encoded.

Shared by ``test_big_tiff.py`` and ``benchmarks/bench_slides.py``. The slide is mostly glass (one white
tile, encoded once) with a block of real H&E tissue (a few CMU-1 tiles, each encoded once per level),
like a real scan, so the file stays small (~40 MB) while every tile is a genuine JPEG the reader decodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import imagecodecs
import numpy as np

TILE = 512
MPP = 0.25


#: Level-0 top-left corners of dense H&E tissue in CMU-1-Small-Region.svs (epithelium, dermis, a gland).
HE_TILE_ORIGINS = ((768, 1664), (1280, 1664), (768, 2176), (1280, 2176))


def he_tiles(svs: Path) -> list[np.ndarray]:
    """Four real 512 x 512 H&E tiles read with OpenSlide from CMU-1-Small-Region.svs."""
    import openslide

    with openslide.OpenSlide(str(svs)) as osr:
        return [np.asarray(osr.read_region(xy, 0, (TILE, TILE)))[..., :3].copy() for xy in HE_TILE_ORIGINS]


def tissue_block(level: int, size: int) -> tuple[int, int, int, int]:
    """Tile-index box (tx0, ty0, tx1, ty1) holding tissue at ``level`` for a ``size``-px level-0 square."""
    n0 = size // TILE
    c = n0 // 2
    half = 8  # a 16 x 16-tile (8192 px) block of tissue at level 0 in the middle
    f = 2**level
    return ((c - half) // f, (c - half) // f, -(-(c + half) // f), -(-(c + half) // f))


def write_big_pyramid(path: Path, tiles: list[np.ndarray], size: int = 65536, quality: int = 80) -> list[int]:
    """Write a ``size`` x ``size`` RGB pyramid (levels halve down to one tile); returns level sizes."""
    import tifffile

    white = imagecodecs.jpeg8_encode(np.full((TILE, TILE, 3), 245, np.uint8), level=quality)
    sizes = []
    s = size
    while True:
        sizes.append(s)
        if s <= TILE:
            break
        s //= 2
    encoded_per_level: list[list[bytes]] = []
    for lvl in range(len(sizes)):
        f = 2**lvl
        enc = []
        for t in tiles:
            if f > 1:  # the tile repeated f x f times, then downsampled by f (capped at 8 x 8 repeats)
                k = min(f, 8)
                small = t.reshape(TILE // k, k, TILE // k, k, 3).mean(axis=(1, 3)).astype(np.uint8)
                t = np.ascontiguousarray(np.tile(small, (k, k, 1)))
            enc.append(imagecodecs.jpeg8_encode(t, level=quality))
        encoded_per_level.append(enc)

    def level_tiles(lvl: int) -> Iterator[bytes]:
        n = -(-sizes[lvl] // TILE)
        tx0, ty0, tx1, ty1 = tissue_block(lvl, size)
        enc = encoded_per_level[lvl]
        for ty in range(n):
            for tx in range(n):
                if tx0 <= tx < tx1 and ty0 <= ty < ty1:
                    yield enc[(tx * 7 + ty * 3) % len(enc)]
                else:
                    yield white

    res = (1e4 / MPP, 1e4 / MPP)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for lvl, s in enumerate(sizes):
            extra = {"subifds": len(sizes) - 1} if lvl == 0 else {"subfiletype": 1}
            tw.write(
                level_tiles(lvl),
                shape=(s, s, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                compression="jpeg",
                photometric="rgb",
                resolution=(res[0] / 2**lvl, res[1] / 2**lvl),
                resolutionunit="CENTIMETER",
                **extra,
            )
    return sizes


def tiles_touched(x: int, y: int, w: int, h: int, tile: int = TILE) -> int:
    """Number of ``tile`` x ``tile`` tiles a (x, y, w, h) window intersects."""
    return ((x + w - 1) // tile - x // tile + 1) * ((y + h - 1) // tile - y // tile + 1)


def measure(path: Path) -> dict[str, object]:
    """Open ``path`` and pan across it like a viewer; run in a fresh process (peak RSS is per process).

    Returns open time, peak-RSS increase over the imported-but-idle process, and tiles read vs asked.
    """
    import resource
    import time

    import numpy as np

    from napari_virtual_ihc.slides import open_slide
    from napari_virtual_ihc.slides.layers import slide_layer_data

    def rss_mb() -> float:
        """Peak RSS of this process in MB. Linux ``VmHWM`` first: ``ru_maxrss`` survives fork+exec, so a
        child of a big process (pytest with napari loaded) would report its parent's peak."""
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB

    t_imp = time.perf_counter()
    import napari_virtual_ihc.slides.openslide_backend
    import napari_virtual_ihc.slides.tiff_backend  # noqa: F401 - backends are imported lazily by open_slide

    import_s = time.perf_counter() - t_imp
    base = rss_mb()
    t0 = time.perf_counter()
    slide = open_slide(path)
    data, _kw, _ = slide_layer_data(slide)
    open_s = time.perf_counter() - t0
    read_at_open = slide.tiles_read  # type: ignore[attr-defined]
    after_open = rss_mb()
    # Pan a 1920 x 1080 viewport across the tissue at full resolution, then look at a zoomed-out view.
    steps = []
    x, y, w, h = 32768 - 4000, 32768 - 540, 1920, 1080
    t1 = time.perf_counter()
    for _ in range(12):
        before = slide.tiles_read  # type: ignore[attr-defined]
        view = np.asarray(data[0][y : y + h, x : x + w])
        steps.append((slide.tiles_read - before, tiles_touched(x, y, w, h)))  # type: ignore[attr-defined]
        assert view.shape == (h, w, 3)
        x += 700
    pan_s = time.perf_counter() - t1
    before = slide.tiles_read  # type: ignore[attr-defined]
    overview = np.asarray(data[6][:, :])  # 1024 x 1024 overview level
    overview_tiles = (slide.tiles_read - before, tiles_touched(0, 0, 1024, 1024))  # type: ignore[attr-defined]
    assert overview.shape == (1024, 1024, 3)
    return {
        "size": list(slide.dimensions),
        "levels": len(data),
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "open_s": round(open_s, 3),
        "tiles_read_at_open": read_at_open,
        "backend_import_s": round(import_s, 3),
        "rss_base_mb": round(base, 1),
        "rss_open_delta_mb": round(after_open - base, 1),
        "rss_peak_delta_mb": round(rss_mb() - base, 1),
        "pan_steps_read_vs_touched": steps,
        "pan_s": round(pan_s, 3),
        "overview_read_vs_touched": list(overview_tiles),
        "tiles_read_total": slide.tiles_read,  # type: ignore[attr-defined]
        "tiles_in_file": sum(-(-d.shape[0] // TILE) * -(-d.shape[1] // TILE) for d in data),
        "mpp": list(slide.mpp or ()),
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(measure(Path(sys.argv[1]))))
