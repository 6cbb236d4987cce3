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
