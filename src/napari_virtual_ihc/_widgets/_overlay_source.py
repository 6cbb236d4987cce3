"""Read a napari Image layer (slide layer or plain RGB array) as a Slide, and find the visible region."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..slides.base import ArraySlide, Slide
from ._stain_view import visible_box


def layer_slide(layer: Any) -> Slide:
    """The Slide behind a layer: the one the reader stored in metadata, else the layer's level-0 array."""
    slide = layer.metadata.get("slide") if isinstance(layer.metadata, dict) else None
    if isinstance(slide, Slide):
        return slide
    data = layer.data[0] if layer.multiscale else layer.data
    if data.ndim != 3 or data.shape[-1] not in (3, 4):
        raise ValueError(f"layer {layer.name!r} is not an RGB image (shape {data.shape})")
    if data.shape[-1] == 4:
        data = data[..., :3]
    if data.dtype != np.uint8:
        data = np.clip(np.asarray(data), 0, 255).astype(np.uint8)
    return ArraySlide(data)


def layer_mpp(layer: Any) -> float | None:
    """µm/px from the layer's scale when it is in micrometres (scale 1 = pixels, unknown)."""
    sy, sx = (float(v) for v in layer.scale[-2:])
    units = [str(u) for u in getattr(layer, "units", ())][-2:]
    if any("micro" in u or u in ("um", "µm") for u in units) or (sy, sx) != (1.0, 1.0):
        return (sy + sx) / 2
    return None


def visible_region(viewer: Any, layer: Any, slide: Slide) -> tuple[int, int, int, int]:
    """Level-0 (x, y, w, h) of the part of ``layer`` on screen (the stain widget's ``visible_box``)."""
    box = visible_box(viewer, layer, slide.dimensions)
    if box is None or box[2] < 16 or box[3] < 16:
        raise ValueError("the layer is not on screen: pan to it or choose the whole image")
    return box


def shapes_polygons(shapes: Any, layer: Any) -> list[np.ndarray]:
    """Polygons/rectangles of a Shapes layer as (n, 2) (row, col) arrays in the source's level-0 pixels."""
    out = []
    (sy, sx), (ty, tx) = np.asarray(layer.scale[-2:]), np.asarray(layer.translate[-2:])
    s_scale, s_trans = np.asarray(shapes.scale[-2:]), np.asarray(shapes.translate[-2:])
    for data, kind in zip(shapes.data, shapes.shape_type, strict=True):
        if kind not in ("polygon", "rectangle", "ellipse") or len(data) < 3:
            continue
        world = np.asarray(data)[:, -2:] * s_scale + s_trans
        out.append((world - [ty, tx]) / [sy, sx])
    return out
