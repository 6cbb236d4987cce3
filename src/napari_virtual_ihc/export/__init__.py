"""Exports in the formats other tools read: pyramidal OME-TIFF (QuPath, OMERO, OpenSlide), QuPath GeoJSON."""

from .errors import ExportError
from .ome_tiff import write_ome_tiff

__all__ = ["ExportError", "write_ome_tiff"]
