"""Nuclei (core, napari-free): Cellpose adapter, classical fallback, tiled de-duplication, density maps."""

from .cellpose_adapter import CellposeNuclei, CellposeUnavailable, load_cellpose
from .classical import segment_classical
from .density import density_map, integrate
from .segment import NucleiSegmenter, make_segmenter

__all__ = [
    "CellposeNuclei",
    "CellposeUnavailable",
    "NucleiSegmenter",
    "density_map",
    "integrate",
    "load_cellpose",
    "make_segmenter",
    "segment_classical",
]
