"""Build the demo model's unpaired training folders from real public images (see docs/demo-model.md).

H&E (domain A): the six H&E patches of ``shared/data/he``, 384 px tiles with tissue from the two H&E slides
of ``shared/data/wsi`` (CMU-1-Small-Region minus the plugin's sample region, which stays unseen), and the
two H&E serial-section thumbnails of ``shared/data/pairs``. IHC (domain B): scikit-image's
``data.immunohistochemistry()`` (DAB + hematoxylin, colon) and tissue tiles of the pan-cytokeratin and
proSPC sections of ``shared/data/pairs``.

Usage: ``python docs/demo-model/prepare_data.py SHARED_DATA_DIR OUT_DIR`` (writes OUT_DIR/HE, OUT_DIR/IHC).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

TILE = 384
SAMPLE_BOX = (768, 1664, 1024, 1024)  # x, y, w, h of the plugin's CMU-1 sample inside CMU-1-Small-Region


def tissue_fraction(rgb: np.ndarray) -> float:
    """Share of pixels that are not glass (saturation above 0.1 or darker than 215 in every channel)."""
    f = rgb.astype(np.float32)
    sat = (f.max(-1) - f.min(-1)) / np.maximum(f.max(-1), 1)
    return float(((sat > 0.1) | (f.max(-1) < 215)).mean())


def tiles(
    rgb: np.ndarray,
    size: int,
    min_tissue: float,
    skip: tuple[int, int, int, int] | None = None,
    stride: int = 0,
):
    h, w = rgb.shape[:2]
    for y in range(0, h - size + 1, stride or size):
        for x in range(0, w - size + 1, stride or size):
            if skip is not None:
                sx, sy, sw, sh = skip
                if x < sx + sw and x + size > sx and y < sy + sh and y + size > sy:
                    continue
            t = rgb[y : y + size, x : x + size]
            if tissue_fraction(t) >= min_tissue:
                yield (x, y), t


def main(shared: Path, out: Path) -> None:
    import openslide
    from skimage import data

    he, ihc = out / "HE", out / "IHC"
    he.mkdir(parents=True, exist_ok=True)
    ihc.mkdir(parents=True, exist_ok=True)
    for f in sorted((shared / "he").glob("*.png")):
        Image.open(f).convert("RGB").save(he / f"patch-{f.stem}.png")
    for f in sorted((shared / "pairs").glob("*_HE.jpg")):
        Image.open(f).convert("RGB").save(he / f"section-{f.stem}.png")
    for slide in sorted((shared / "wsi").glob("*.svs")):
        with openslide.OpenSlide(str(slide)) as osr:
            rgb = np.asarray(osr.read_region((0, 0), 0, osr.dimensions).convert("RGB"))
        skip = SAMPLE_BOX if slide.name.startswith("CMU-1") else None
        for (x, y), t in tiles(rgb, TILE, 0.5, skip):
            Image.fromarray(t).save(he / f"slide-{slide.stem}-{x}-{y}.png")
    for (x, y), t in tiles(data.immunohistochemistry(), 256, 0.0, stride=128):  # 9 overlapping tiles
        Image.fromarray(t).save(ihc / f"skimage-immunohistochemistry-{x}-{y}.png")
    for f in sorted((shared / "pairs").glob("*.jpg")):
        if f.stem.endswith("_HE"):
            continue
        rgb = np.asarray(Image.open(f).convert("RGB"))
        for (x, y), t in tiles(rgb, 256, 0.4):
            Image.fromarray(t).save(ihc / f"section-{f.stem}-{x}-{y}.png")
    print(f"{len(list(he.iterdir()))} H&E images in {he}, {len(list(ihc.iterdir()))} IHC images in {ihc}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
