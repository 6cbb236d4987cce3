"""What a file really is, from its first bytes (extensions lie: a text file renamed ``.svs``)."""

from __future__ import annotations

from pathlib import Path

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

OPENSLIDE_EXTENSIONS = (".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide")
TIFF_EXTENSIONS = (".tif", ".tiff")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
ZARR_EXTENSIONS = (".zarr",)
SUPPORTED_EXTENSIONS = OPENSLIDE_EXTENSIONS + TIFF_EXTENSIONS + IMAGE_EXTENSIONS + ZARR_EXTENSIONS


def read_magic(path: Path, n: int = 16) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def content_kind(head: bytes) -> str | None:
    """``"tiff"``, ``"png"``, ``"jpeg"`` or None (unknown) from a file's first bytes."""
    if head[:4] in TIFF_MAGICS:
        return "tiff"
    if head.startswith(PNG_MAGIC):
        return "png"
    if head.startswith(JPEG_MAGIC):
        return "jpeg"
    return None


def suffix(path: Path) -> str:
    """Lower-case extension, with ``.ome.tif(f)``/``.ome.zarr`` reduced to their last part."""
    return path.suffix.lower()


def is_zarr_dir(path: Path) -> bool:
    """A directory that holds a zarr group (v2 ``.zgroup``/``.zattrs`` or v3 ``zarr.json``)."""
    return path.is_dir() and any((path / f).is_file() for f in (".zgroup", ".zattrs", "zarr.json"))


#: A PNG with an alpha channel is taken for a slide only when it is larger than an 8K screen both ways: below
#: that, an RGBA PNG is a screenshot (napari's own are RGBA), which napari's reader shows as it is.
SCREEN_MAX_PX = (7680, 4320)


def is_brightfield_tiff(path: Path) -> bool:
    """One 8-bit RGB plane per pixel (photometric RGB/YCbCr, any pyramid): a brightfield scan or image.

    Grey-scale stacks, separate-channel (fluorescence) OME-TIFFs, 16-bit or float RGB and RGB time/z
    stacks are not: napari's reader shows them with their planes and bit depth.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = max(tif.series, key=lambda s: s.levels[0].size)
        page = series.keyframe
        rgb_like = page.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
        one_plane = series.levels[0].get_axes(squeeze=True) in ("YXS", "YXC")
        return bool(rgb_like and page.samplesperpixel in (3, 4) and series.dtype == "uint8" and one_plane)


def is_brightfield_picture(path: Path) -> bool:
    """An 8-bit RGB PNG/JPEG, or an RGBA one larger than any screen (see ``SCREEN_MAX_PX``)."""
    from PIL import Image

    with Image.open(path) as im:
        mode, (w, h) = im.mode, im.size
    if mode == "RGB":
        return True
    return mode == "RGBA" and w > SCREEN_MAX_PX[0] and h > SCREEN_MAX_PX[1]
