"""The dropout confidence map (``<name>.confidence.ome.zarr``) as a napari layer over the H&E.

Written by the engine with ``dropout="mean:N"``: per pixel the spread (standard deviation, grey levels) of the
N dropout samples; bright = the samples disagree, so the stain there is less certain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ...ihc_store import PROVENANCE_KEY
from .layer import placement_over


def add_confidence_layer(viewer: Any, store: str | Path, source_layer: Any, name: str) -> Any | None:
    """Show ``store`` (single-channel OME-Zarr) over ``source_layer``; None if it cannot be read."""
    try:
        group = zarr.open_group(str(store), mode="r")
        attrs: dict[str, Any] = dict(group.attrs)
        datasets = attrs["multiscales"][0]["datasets"]
        levels: list[Any] = [group[ds["path"]] for ds in datasets]
    except (OSError, KeyError, ValueError, IndexError):
        return None
    prov = dict(attrs.get(PROVENANCE_KEY) or {})
    d = float(prov.get("level0_downsample", 1.0) or 1.0)
    planes: list[Any] = [lv[0] if lv.ndim == 3 else lv for lv in levels]  # (1, H, W) -> (H, W)
    top = float(np.asarray(planes[-1][:]).max()) if planes else 0.0
    return viewer.add_image(
        [np.asarray(p) for p in planes] if sum(p.size for p in planes) < 64e6 else planes,
        name=f"{name} confidence (dropout spread)",
        multiscale=True,
        colormap="magma",
        contrast_limits=(0, max(1.0, top)),
        blending="additive",
        visible=True,
        metadata={PROVENANCE_KEY: {**prov, "store": str(Path(store).resolve())}},
        **placement_over(source_layer, d),
    )
