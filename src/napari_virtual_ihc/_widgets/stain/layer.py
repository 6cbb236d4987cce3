"""The store as a napari multiscale layer, placed exactly over its H&E source layer.

Reading the store (lazily, chunk-cached) is ``ihc_store.reader``'s job; this module only knows napari
layers: where the IHC layer goes, what it is called, and how to find the one showing a store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...ihc_store import PROVENANCE_KEY
from .._napari_private import forget_lowest_level


def layer_name_for(model_name: str, target_stain: str | None = "HER2") -> str:
    """The layer's name says the stain only when the model makes HER2 (the demo model makes DAB-IHC look)."""
    what = "HER2 vIHC" if (target_stain or "HER2").upper() == "HER2" else "vIHC"
    return f"{what} - {model_name or 'model'}"


# --- placement ------------------------------------------------------------------------------------
def placement_over(source_layer: Any, level0_downsample: float = 1.0) -> dict[str, Any]:
    """``scale``/``translate``/``units`` putting store pixels exactly over the source layer's pixels.

    A store level-0 pixel covers ``d = level0_downsample`` source pixels, so its centre sits at source
    pixel ``i*d + (d-1)/2``: scale grows by ``d`` and the origin shifts by ``(d-1)/2`` source pixels.
    """
    d = float(level0_downsample)
    scale = np.asarray(source_layer.scale, dtype=float)[-2:]
    translate = np.asarray(source_layer.translate, dtype=float)[-2:]
    placement: dict[str, Any] = {
        "scale": tuple(float(s) for s in scale * d),
        "translate": tuple(float(t) for t in translate + scale * (d - 1.0) / 2.0),
    }
    units = getattr(source_layer, "units", None)
    if units is not None:
        placement["units"] = tuple(str(u) for u in tuple(units)[-2:])
    return placement


def ihc_layer_kwargs(
    level0_downsample: float, source_layer: Any, name: str, metadata: dict[str, Any], opacity: float = 1.0
) -> dict[str, Any]:
    """Everything ``viewer.add_image`` needs to show a store over ``source_layer``."""
    return {
        "name": name,
        "rgb": True,
        "multiscale": True,
        "contrast_limits": (0, 255),
        "metadata": metadata,
        "opacity": opacity,
        "blending": "translucent",
        **placement_over(source_layer, level0_downsample),
    }


def apply_placement(layer: Any, source_layer: Any, level0_downsample: float) -> None:
    """Re-place an existing IHC layer (re-run with another model resolution, source moved)."""
    for key, value in placement_over(source_layer, level0_downsample).items():
        current = getattr(layer, key, None)
        if current is not None and _same(current, value):
            continue  # napari redraws on every assignment, even of an equal value
        setattr(layer, key, value)


def _same(current: Any, value: Any) -> bool:
    """Numerically equal (scale, translate); anything else (napari's pint units) counts as different."""
    try:
        a, b = np.asarray(current, dtype=float), np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return False
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=0, atol=1e-12))


def refresh_layer(layer: Any) -> None:
    """Re-slice ``layer`` after its store changed (napari's cached smallest level forgotten first).

    Re-materialising reads only invalidated chunks from disk, the rest comes from the levels' chunk cache.
    """
    forget_lowest_level(layer)
    layer.refresh()


def find_ihc_layer(layers: Sequence[Any], store: str | Path) -> Any | None:
    """The layer already showing ``store`` (so re-running updates it instead of adding a duplicate)."""
    target = str(Path(store).resolve())
    for layer in layers:
        prov = layer.metadata.get(PROVENANCE_KEY) if isinstance(layer.metadata, dict) else None
        if isinstance(prov, dict) and prov.get("store") == target:
            return layer
    return None
