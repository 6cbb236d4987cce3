"""The tile engine: halo'd, blended, batched, resumable whole-slide inference into OME-Zarr."""

from .api import Box, EngineSettings, RunPlan, RunReport, TileProgress
from .engine import iter_stain_slide, stain_slide

__all__ = ["Box", "EngineSettings", "RunPlan", "RunReport", "TileProgress", "iter_stain_slide", "stain_slide"]
