"""Typed errors for slide input, so the API and the GUI can tell the user what went wrong."""


class SlideError(Exception):
    """Base class: the file could not be opened or read as a slide."""


class UnsupportedFormatError(SlideError):
    """The file's extension or content is not a format this reader handles."""


class CorruptSlideError(SlideError):
    """The file claims a supported format but its content is broken, empty or truncated."""


class UnsupportedImageError(SlideError):
    """The file is readable but its pixels are not something we can show as H&E/IHC (e.g. 5 channels)."""
