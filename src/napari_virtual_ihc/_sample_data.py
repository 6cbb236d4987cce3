"""npe2 sample-data entry points (thin): the packaged H&E region and the packaged H&E + IHC pair."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SAMPLE_DIR = Path(__file__).parent / "samples"
CMU1_REGION = SAMPLE_DIR / "CMU-1-region.tif"
KIDNEY_HE = SAMPLE_DIR / "Rat-Kidney_HE.jpg"
KIDNEY_IHC = SAMPLE_DIR / "Rat-Kidney_PanCytokeratin.jpg"

LayerData = tuple[Any, dict[str, Any], str]


def cmu1_region() -> list[LayerData]:
    """A 1024 x 1024 H&E crop of OpenSlide's CMU-1-Small-Region (CC0), two JPEG-tiled levels, 0.499 µm/px."""
    return [_slide_layer(CMU1_REGION, "CMU-1 H&E region")]


def kidney_he_ihc_pair() -> list[LayerData]:
    """Serial rat kidney sections, H&E and pan-cytokeratin IHC (ANHIR, BSD-3-Clause), not yet aligned:
    real IHC to try registration and the stain overlays on. No recorded pixel size (shown in pixels)."""
    return [
        _slide_layer(KIDNEY_HE, "Rat kidney H&E (ANHIR)"),
        _slide_layer(KIDNEY_IHC, "Rat kidney pan-cytokeratin IHC (ANHIR)"),
    ]


def _slide_layer(path: Path, name: str) -> LayerData:
    from ._reader import close_with_layer
    from .slides import open_slide
    from .slides.layers import slide_layer_data

    slide = open_slide(path)
    data, kwargs, kind = slide_layer_data(slide, name=name)
    close_with_layer(slide)
    return (data, kwargs, kind)
