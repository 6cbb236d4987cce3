"""Stain analysis (core, napari-free): deconvolution, DAB masks and bins, HER2 estimate, slide analysis."""

from .analysis import AnalysisCancelled, AnalysisResult, AnalysisSettings, analyze_image, analyze_slide
from .calibration import (
    StainCalibration,
    StainEstimationError,
    calibrate,
    estimate_background,
    estimate_stain_vectors,
)
from .deconvolution import (
    StainMatrix,
    StainVectorError,
    dab_only_rendering,
    deconvolve,
    hdab_matrix,
    hed_matrix,
    rgb_to_hed,
    skimage_hed,
)
from .her2 import CellTable, Her2Estimate, Her2Rules, categorize, classify_cells, measure_cells
from .membrane import DabBins, bin_fractions, dab_bins, tdkstain_membrane_mask

__all__ = [
    "AnalysisCancelled",
    "AnalysisResult",
    "AnalysisSettings",
    "CellTable",
    "DabBins",
    "Her2Estimate",
    "Her2Rules",
    "StainCalibration",
    "StainEstimationError",
    "StainMatrix",
    "StainVectorError",
    "analyze_image",
    "analyze_slide",
    "bin_fractions",
    "calibrate",
    "categorize",
    "classify_cells",
    "dab_bins",
    "dab_only_rendering",
    "deconvolve",
    "estimate_background",
    "estimate_stain_vectors",
    "hdab_matrix",
    "hed_matrix",
    "measure_cells",
    "rgb_to_hed",
    "skimage_hed",
    "tdkstain_membrane_mask",
]
