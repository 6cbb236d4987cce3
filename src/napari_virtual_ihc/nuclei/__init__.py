"""Nuclei (core, napari-free): Cellpose adapter, offline blob detector and classical method, positivity, tiled de-duplication, density maps."""

from .blobs import segment_blobs
from .cellpose_adapter import CellposeNuclei, CellposeUnavailable, load_cellpose
from .classical import segment_classical
from .density import density_map, integrate
from .positivity import NUCLEAR_DAB_CUTOFF, nuclear_dab_od, nuclear_dab_positive
from .segment import NUCLEI_METHODS, NucleiSegmenter, make_segmenter

__all__ = [
    "NUCLEAR_DAB_CUTOFF",
    "NUCLEI_METHODS",
    "CellposeNuclei",
    "CellposeUnavailable",
    "NucleiSegmenter",
    "density_map",
    "integrate",
    "load_cellpose",
    "make_segmenter",
    "nuclear_dab_od",
    "nuclear_dab_positive",
    "segment_blobs",
    "segment_classical",
]
