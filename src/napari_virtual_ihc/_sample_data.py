"""npe2 sample-data entry point (thin): the packaged CMU-1 H&E region, opened with its true µm/px."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SAMPLE_DIR = Path(__file__).parent / "samples"
CMU1_REGION = SAMPLE_DIR / "CMU-1-region.tif"


def cmu1_region() -> list[tuple[Any, dict[str, Any], str]]:
    """A 1024 x 1024 H&E crop of OpenSlide's CMU-1-Small-Region (CC0), two JPEG-tiled levels, 0.499 µm/px."""
    from ._reader import close_with_layer
    from .slides import open_slide
    from .slides.layers import slide_layer_data

    slide = open_slide(CMU1_REGION)
    data, kwargs, kind = slide_layer_data(slide, name="CMU-1 H&E region")
    close_with_layer(slide)
    return [(data, kwargs, kind)]
