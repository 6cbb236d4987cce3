"""``open_slide``: pick the backend from the extension, then check the content really is that format."""

from __future__ import annotations

import os
from pathlib import Path

from ._sniff import (
    IMAGE_EXTENSIONS,
    OPENSLIDE_EXTENSIONS,
    SUPPORTED_EXTENSIONS,
    TIFF_EXTENSIONS,
    content_kind,
    is_brightfield_picture,
    is_brightfield_tiff,
    is_zarr_dir,
    read_magic,
)
from .base import Slide
from .errors import CorruptSlideError, UnsupportedFormatError, UnsupportedImageError

#: OpenSlide formats whose files are TIFF containers (their header must be a TIFF header).
_TIFF_BASED_VENDOR = (".svs", ".ndpi", ".scn", ".bif", ".svslide")
#: OpenSlide vendor detections that OpenSlide reads better than tifffile (TIFF files named .tif/.tiff).
_OPENSLIDE_TIFF_VENDORS = ("aperio", "philips", "ventana", "hamamatsu", "leica", "trestle")


def can_open(path: str | os.PathLike[str]) -> bool:
    """True when ``open_slide`` would try ``path`` (by name/kind only; the content is checked on open)."""
    p = Path(path)
    if p.is_dir():
        return is_zarr_dir(p)
    return p.suffix.lower() in SUPPORTED_EXTENSIONS


def is_brightfield(path: str | os.PathLike[str]) -> bool:
    """Whether the napari reader should claim ``path``: a brightfield slide or RGB image, from its header.

    Claimed: zarr stores, vendor slides (OpenSlide's formats, or a TIFF whose ``detect_format`` names a
    vendor), TIFFs holding one 8-bit RGB plane per pixel, 8-bit RGB PNG/JPEG (RGBA only above screen size).
    Not claimed (napari's own reader shows them as they are): grey-scale or multi-plane TIFFs, separate-
    channel (fluorescence) OME-TIFFs, 16-bit or float images, grey/palette/RGBA-screenshot PNGs, CMYK or
    grey JPEGs. A file that is empty, truncated or not what its name says is claimed, so that ``open_slide``
    says what is wrong with it rather than napari's reader failing on it.
    """
    p = Path(path)
    if not can_open(p):
        return False
    if p.is_dir() or p.suffix.lower() in OPENSLIDE_EXTENSIONS:
        return True
    try:
        kind = content_kind(read_magic(p))
        if kind == "tiff" and p.suffix.lower() in TIFF_EXTENSIONS:
            return _openslide_vendor(p) in _OPENSLIDE_TIFF_VENDORS or is_brightfield_tiff(p)
        if kind in ("png", "jpeg") and p.suffix.lower() in IMAGE_EXTENSIONS:
            return is_brightfield_picture(p)
    except Exception:  # unreadable header: open_slide names the defect
        return True
    return True  # content does not match the name: open_slide says so


#: Level-0 pixels above which a slide is refused at open: the largest scans are ~2e10 px (150k x 130k); a
#: header claiming more is corrupt or crafted, and tiling it would exhaust memory before any pixel is read.
MAX_SLIDE_PIXELS = 2**37  # ~1.4e11 px, e.g. 370k x 370k


def open_slide(path: str | os.PathLike[str]) -> Slide:
    """Open a whole-slide image or a plain image as a ``Slide`` (see ``_open``), refusing absurd sizes."""
    slide = _open(path)
    w, h = slide.dimensions
    if w * h > MAX_SLIDE_PIXELS:
        slide.close()
        raise UnsupportedImageError(
            f"{slide.path or path}: the file claims {w} x {h} px ({w * h:.3g} px), more than any scanner "
            f"makes (limit {MAX_SLIDE_PIXELS:.3g}); it is corrupt or not a slide"
        )
    return slide


def _open(path: str | os.PathLike[str]) -> Slide:
    """Open a whole-slide image or a plain image as a ``Slide``.

    Raises ``UnsupportedFormatError`` (extension/kind we do not read), ``CorruptSlideError`` (empty,
    truncated, wrong content for the extension) or ``UnsupportedImageError`` (e.g. multi-channel
    fluorescence). Messages name the file and what was wrong.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    if p.is_dir():
        if is_zarr_dir(p):
            from .zarr_backend import ZarrSlide

            return ZarrSlide(p)
        raise UnsupportedFormatError(f"{p}: a directory that is not an OME-Zarr image store")
    ext = p.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS or ext == ".zarr":
        raise UnsupportedFormatError(
            f"{p}: unsupported file type {ext or '(no extension)'!r}; supported: "
            + " ".join(e for e in SUPPORTED_EXTENSIONS if e != ".zarr")
            + " and OME-Zarr directories"
        )
    size = p.stat().st_size
    if size == 0:
        raise CorruptSlideError(f"{p}: the file is empty (0 bytes)")
    kind = content_kind(read_magic(p))
    if ext in OPENSLIDE_EXTENSIONS:
        return _open_vendor(p, ext, kind)
    if ext in TIFF_EXTENSIONS:
        if kind != "tiff":
            raise CorruptSlideError(f"{p}: named {ext} but the content is {_describe(kind)}, not a TIFF")
        return _open_tiff(p)
    assert ext in IMAGE_EXTENSIONS
    if kind not in ("png", "jpeg"):
        raise CorruptSlideError(f"{p}: named {ext} but the content is {_describe(kind)}, not a PNG/JPEG")
    from .image_backend import ImageSlide

    return ImageSlide(p, kind)


def _open_vendor(p: Path, ext: str, kind: str | None) -> Slide:
    if ext in _TIFF_BASED_VENDOR and kind != "tiff":
        raise CorruptSlideError(
            f"{p}: named {ext} but the content is {_describe(kind)}; a {ext} slide is a TIFF container"
        )
    if kind == "tiff":
        from ._integrity import check_tiff_complete

        check_tiff_complete(p)
    from .openslide_backend import OpenSlideSlide

    return OpenSlideSlide(p)


def _open_tiff(p: Path) -> Slide:
    """Vendor TIFFs (Aperio .tif, Philips, Ventana) go to OpenSlide; pyramidal/OME/plain TIFF to tifffile."""
    if _openslide_vendor(p) in _OPENSLIDE_TIFF_VENDORS:
        from ._integrity import check_tiff_complete
        from .openslide_backend import OpenSlideSlide

        check_tiff_complete(p)
        return OpenSlideSlide(p)
    from .tiff_backend import TiffSlide

    return TiffSlide(p)


def _openslide_vendor(p: Path) -> str | None:
    """OpenSlide's vendor name for ``p`` (``"aperio"``, ``"generic-tiff"``...) or None."""
    import openslide

    try:
        return openslide.OpenSlide.detect_format(str(p))
    except Exception:
        return None


def _describe(kind: str | None) -> str:
    return {"tiff": "TIFF", "png": "PNG", "jpeg": "JPEG"}.get(kind or "", "not an image format we recognise")
