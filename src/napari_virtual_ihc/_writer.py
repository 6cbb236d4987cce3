"""npe2 writer entry point (thin): an RGB image layer to a pyramidal OME-TIFF (``export.ome_tiff``).

napari passes the layer's data (an array, or the list of levels of a multiscale layer) and attributes;
µm/px comes from the layer's scale when its units are micrometres (as this plugin's reader sets them).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .export import ExportError, write_ome_tiff
from .ihc_store import PROVENANCE_KEY
from .slides.base import ArraySlide


def write_ome_tiff_layer(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write one image layer; refuses (``ExportError``) what is not a 2-D RGB uint8 image."""
    levels = list(data) if attributes.get("multiscale") else [data]
    name = attributes.get("name", "layer")
    shape, dtype = tuple(levels[0].shape), np.dtype(levels[0].dtype)
    if len(shape) != 3 or shape[-1] != 3 or not attributes.get("rgb", True):
        raise ExportError(
            f"layer {name!r} has shape {shape}: only a 2-D RGB image (height, width, 3) can be written as a "
            "brightfield OME-TIFF; 3-D, grey-scale or multi-channel layers are refused"
        )
    if dtype != np.uint8:
        raise ExportError(
            f"layer {name!r} is {dtype}: only 8-bit RGB can be written as a brightfield OME-TIFF"
        )
    slide = ArraySlide(levels, mpp=_mpp(attributes))
    metadata = attributes.get("metadata") or {}
    provenance = {"layer": name, PROVENANCE_KEY: metadata.get(PROVENANCE_KEY)}
    out = write_ome_tiff(slide, path, provenance=provenance, overwrite=True)  # napari's dialog asked already
    return [str(out)]


def _mpp(attributes: dict[str, Any]) -> tuple[float, float] | None:
    scale = attributes.get("scale")
    units = [str(u) for u in attributes.get("units") or ()]
    if scale is None or len(scale) < 2 or units[-2:] != ["micrometer", "micrometer"]:
        return None
    sy, sx = float(scale[-2]), float(scale[-1])
    return (sx, sy) if math.isfinite(sx) and math.isfinite(sy) and sx > 0 and sy > 0 else None
