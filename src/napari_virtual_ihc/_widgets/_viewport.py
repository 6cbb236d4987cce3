"""What the user is looking at, in the source slide's level-0 pixels, and how the IHC layer is shown.

``visible_box`` runs on the GUI thread (it reads the camera and the canvas); the run keeps its latest
answer in a plain attribute that the engine's priority provider reads from the worker thread.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..geometry import Box
from ..slides.base import Slide


def _viewbox_size(viewer: Any) -> tuple[float, float]:
    """Canvas pixels ``(h, w)`` of one view: the whole canvas, or one cell in grid (side-by-side) mode."""
    h, w = (float(s) for s in viewer.canvas.size)
    grid = viewer.canvas.grid
    if grid.enabled:
        rows, cols = grid.actual_shape(viewer.layers)
        h, w = h / max(1, rows), w / max(1, cols)
    return h, w


def visible_box(viewer: Any, source_layer: Any, dimensions: tuple[int, int]) -> Box | None:
    """The part of ``source_layer`` in view, as a level-0 box clipped to ``dimensions`` (w, h).

    None when nothing of the slide is visible (then the engine keeps its own order).
    """
    camera = viewer.scene.camera
    zoom = float(camera.zoom)
    if not math.isfinite(zoom) or zoom <= 0:
        return None
    vh, vw = _viewbox_size(viewer)
    cy, cx = (float(c) for c in tuple(camera.center)[-2:])
    half_h, half_w = vh / zoom / 2.0, vw / zoom / 2.0
    world = np.asarray(viewer.dims.point, dtype=float)
    corners = []
    for dy in (-half_h, half_h):
        for dx in (-half_w, half_w):
            pos = world.copy()
            pos[-2:] = (cy + dy, cx + dx)
            corners.append(np.asarray(source_layer.world_to_data(pos), dtype=float)[-2:])
    pts = np.vstack(corners)
    (y0, x0), (y1, x1) = pts.min(axis=0), pts.max(axis=0)
    # Data coordinates of a multiscale layer are level-0 pixels; pixel centres are at integers.
    w0, h0 = dimensions
    xs, ys = max(0, math.floor(x0 + 0.5)), max(0, math.floor(y0 + 0.5))
    xe, ye = min(w0, math.ceil(x1 + 0.5)), min(h0, math.ceil(y1 + 0.5))
    if xe <= xs or ye <= ys:
        return None
    return (xs, ys, xe - xs, ye - ys)


def show_side_by_side(viewer: Any, enabled: bool) -> None:
    """napari grid mode: each layer in its own view, one shared camera, so panning stays in sync."""
    viewer.canvas.grid.enabled = enabled


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
