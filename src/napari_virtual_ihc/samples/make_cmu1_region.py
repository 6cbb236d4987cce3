"""Rebuild ``CMU-1-region.tif`` from OpenSlide's CMU-1-Small-Region.svs (kept for provenance).

Usage: ``python -m napari_virtual_ihc.samples.make_cmu1_region tests/data/CMU-1-Small-Region.svs``
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

#: Level-0 top-left of the crop in CMU-1-Small-Region.svs (dense tissue, a gland and epithelium).
CROP_XY = (768, 1664)
CROP_SIZE = 1024
MPP = 0.499


def build(svs: Path, out: Path) -> None:
    import openslide
    import tifffile
    from skimage.transform import downscale_local_mean

    with openslide.OpenSlide(str(svs)) as osr:
        rgba = np.asarray(osr.read_region(CROP_XY, 0, (CROP_SIZE, CROP_SIZE)))
    level0 = np.ascontiguousarray(rgba[..., :3])
    level1 = np.clip(np.rint(downscale_local_mean(level0, (2, 2, 1))), 0, 255).astype(np.uint8)
    res = (1e4 / MPP, 1e4 / MPP)
    with tifffile.TiffWriter(out) as tw:
        opts: dict[str, Any] = {
            "tile": (256, 256),
            "compression": "jpeg",
            "compressionargs": {"level": 95},
            "photometric": "rgb",
        }
        tw.write(
            level0,
            subifds=1,
            resolution=res,
            resolutionunit="CENTIMETER",
            description=f"CMU-1-Small-Region.svs crop x={CROP_XY[0]} y={CROP_XY[1]} "
            f"{CROP_SIZE}x{CROP_SIZE} MPP = {MPP}",
            **opts,
        )
        tw.write(
            level1, subfiletype=1, resolution=(res[0] / 2, res[1] / 2), resolutionunit="CENTIMETER", **opts
        )


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(__file__).parent / "CMU-1-region.tif")
