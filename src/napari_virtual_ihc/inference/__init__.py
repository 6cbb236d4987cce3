"""The tile engine: halo'd, blended, batched, resumable whole-slide inference into OME-Zarr."""

from .api import Box, EngineSettings, RunReport, TileProgress
from .engine import stain_slide

__all__ = ["Box", "EngineSettings", "RunReport", "TileProgress", "stain_slide"]
