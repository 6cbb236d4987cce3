"""Reading slides: one ``Slide`` object per file, whatever the format."""

from .base import ArraySlide, Slide
from .errors import CorruptSlideError, SlideError, UnsupportedFormatError, UnsupportedImageError

__all__ = [
    "ArraySlide",
    "CorruptSlideError",
    "Slide",
    "SlideError",
    "UnsupportedFormatError",
    "UnsupportedImageError",
]
