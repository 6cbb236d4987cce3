"""The "Stain overlays" widget: ``form`` (Qt controls), ``widget`` (runs the core's analysis as a
``WidgetTask``, layers, calibration files, QuPath GeoJSON), ``layers`` (a result as napari layer data)."""

from .widget import StainOverlayWidget

__all__ = ["StainOverlayWidget"]
