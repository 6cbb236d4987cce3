"""The one layer adapter both widgets use: napari layer -> Slide, -> µm/px, -> where its result is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..ihc_store import PROVENANCE_KEY, store_path_for
from ..ihc_store.output import default_output_dir
from ..slides.base import ArraySlide, Slide

# Length units napari layers may carry, in micrometres.
_UM_PER_UNIT = {
    "micrometer": 1.0,
    "micron": 1.0,
    "um": 1.0,
    "µm": 1.0,
    "nanometer": 1e-3,
    "nm": 1e-3,
    "millimeter": 1e3,
    "mm": 1e3,
    "meter": 1e6,
    "m": 1e6,
}


class SourceLayerError(ValueError):
    """The layer cannot be stained (not RGB uint8, empty...)."""


def is_source_candidate(layer: Any) -> bool:
    """RGB image layers that are not themselves virtual IHC results."""
    from napari.layers import Image

    if not isinstance(layer, Image) or not layer.rgb:
        return False
    metadata = layer.metadata if isinstance(layer.metadata, dict) else {}
    return PROVENANCE_KEY not in metadata


def layer_mpp(layer: Any) -> tuple[float, float] | None:
    """µm/px ``(x, y)`` of a layer: its scale converted when its units are lengths; a scale other than 1 in
    napari's default "pixel" units is taken as µm (how most users set it); None for plain pixels."""
    sy, sx = (float(s) for s in np.asarray(layer.scale, dtype=float)[-2:])
    names = [str(u) for u in tuple(getattr(layer, "units", None) or ())[-2:]]
    factors = [_UM_PER_UNIT.get(n) for n in names]
    if len(factors) == 2 and factors[0] is not None and factors[1] is not None:
        return (sx * factors[1], sy * factors[0])
    if (sy, sx) != (1.0, 1.0) and all(n in ("pixel", "px", "") for n in names):
        return (sx, sy)
    return None


def layer_source_path(layer: Any) -> Path | None:
    """The file the layer shows: its Slide's path, else the file napari loaded it from."""
    slide = layer.metadata.get("slide") if isinstance(layer.metadata, dict) else None
    if isinstance(slide, Slide) and slide.path:
        return Path(slide.path)
    path = getattr(getattr(layer, "source", None), "path", None)
    return Path(path) if path else None


def slide_for_layer(layer: Any) -> Slide:
    """The reader's Slide when the layer has one, else the layer's pixels wrapped in an ArraySlide."""
    slide = layer.metadata.get("slide") if isinstance(layer.metadata, dict) else None
    if isinstance(slide, Slide):
        return slide
    levels_in = list(layer.data) if getattr(layer, "multiscale", False) else [layer.data]
    levels = []
    for level in levels_in:
        arr = np.asarray(level)
        if arr.ndim == 3 and arr.shape[-1] == 4:
            arr = arr[..., :3]
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise SourceLayerError(
                f"layer {layer.name!r} is not an RGB image (shape {arr.shape}); open the H&E slide as RGB"
            )
        if arr.dtype != np.uint8:
            raise SourceLayerError(
                f"layer {layer.name!r} has {arr.dtype} pixels; virtual IHC needs 8-bit RGB H&E (uint8)"
            )
        levels.append(np.ascontiguousarray(arr))
    return ArraySlide(levels, mpp=layer_mpp(layer), path=layer_source_path(layer), vendor="napari-layer")


def store_for_layer(layer: Any, output_dir: str | Path | None) -> Path:
    """Where the layer's virtual IHC lives: ``<output dir>/<slide stem>.ome.zarr``; no output dir: beside
    the slide, or the user's results folder for installed or read-only slides (``ihc_store.output``)."""
    path = layer_source_path(layer)
    out = Path(output_dir) if output_dir else default_output_dir(path)
    return store_path_for(out, path.name if path is not None else layer.name)


def fill_layer_combo(combo: Any, layers: list[Any], keep: Any = None, none_label: str | None = None) -> None:
    """Refill a QComboBox with ``layers`` (shown by name, the layer itself as item data: a renamed layer or two
    layers of one name cannot be confused), ``keep`` (default: the layer chosen now) still chosen if it is
    there; ``none_label`` first for an optional choice. No change signals while refilling."""
    keep = keep if keep is not None else combo_layer(combo)
    combo.blockSignals(True)
    try:
        combo.clear()
        if none_label is not None:
            combo.addItem(none_label, None)
        for layer in layers:
            combo.addItem(layer.name, layer)
        index = next((i for i in range(combo.count()) if keep is not None and combo.itemData(i) is keep), 0)
        combo.setCurrentIndex(index if combo.count() else -1)
    finally:
        combo.blockSignals(False)


def combo_layer(combo: Any) -> Any | None:
    """The layer chosen in a combo filled by ``fill_layer_combo`` (None for the optional 'none' entry)."""
    index = combo.currentIndex()
    return combo.itemData(index) if index >= 0 else None
