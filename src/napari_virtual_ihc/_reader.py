"""npe2 reader entry point (thin: the work is in ``slides``).

``napari_get_reader`` returns None for paths that are not brightfield slides or RGB images (grey-scale
stacks, fluorescence OME-TIFFs, 16-bit images, RGBA screenshots: see ``slides.is_brightfield``), so napari
reads them with its own reader;
the returned function opens the slide eagerly, so a bad file raises a typed ``SlideError`` (napari shows
it as a notification) before any layer exists. The slide handle is closed when its layer is removed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .slides import is_brightfield, open_slide
from .slides.base import Slide
from .slides.layers import slide_layer_data

LayerData = tuple[Any, dict[str, Any], str]


def napari_get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths or not all(is_brightfield(p) for p in paths):
        return None
    return read_slides


def read_slides(path: str | list[str]) -> list[LayerData]:
    """Open every path as one multiscale RGB layer; on any error, close what was opened and re-raise."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    opened: list[Slide] = []
    try:
        layers = []
        for p in paths:
            slide = open_slide(Path(p))
            opened.append(slide)
            layers.append(slide_layer_data(slide))
    except BaseException:
        for s in opened:
            s.close()
        raise
    for s in opened:
        close_with_layer(s)
    return layers


def close_with_layer(slide: Slide) -> None:
    """Close ``slide`` when the layer holding it (``metadata["slide"]``) leaves the current viewer."""
    try:
        import napari
    except ImportError:  # pragma: no cover - the reader only runs inside napari
        return
    viewer = napari.current_viewer()
    if viewer is None:
        return

    def _on_removed(event: Any) -> None:
        layer = event.value
        if getattr(layer, "metadata", {}).get("slide") is slide:
            slide.close()
            viewer.layers.events.removed.disconnect(_on_removed)

    viewer.layers.events.removed.connect(_on_removed)
