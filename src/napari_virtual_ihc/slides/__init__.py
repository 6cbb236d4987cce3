"""Reading slides: one ``Slide`` object per file, whatever the format."""

from ._pixels import SlideConversionWarning
from .base import ArraySlide, Slide
from .errors import CorruptSlideError, SlideError, UnsupportedFormatError, UnsupportedImageError
from .opening import can_open, is_brightfield, open_slide

__all__ = [
    "ArraySlide",
    "CorruptSlideError",
    "Slide",
    "SlideConversionWarning",
    "SlideError",
    "UnsupportedFormatError",
    "UnsupportedImageError",
    "can_open",
    "is_brightfield",
    "open_slide",
]
