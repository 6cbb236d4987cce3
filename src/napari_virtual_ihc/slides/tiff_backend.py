"""Pyramidal, OME and plain TIFF through tifffile, read tile by tile through its zarr view (never whole)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from ._counting_store import CountingStore
from ._integrity import check_tiff_complete
from ._pixels import PixelPolicy, SlideConversionWarning, make_policy, read_labelled_window, read_window
from .base import Slide
from .errors import CorruptSlideError, SlideError, UnsupportedImageError

#: µm per pixel outside this range is not a microscope scan (e.g. a 72-dpi screen resolution tag).
PLAUSIBLE_MPP = (0.01, 50.0)
_UNIT_TO_UM = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}
_RGB_NAMES = ({"r", "g", "b"}, {"red", "green", "blue"})
_SMALL_SAMPLE_PIXELS = 4_000_000


class TiffSlide(Slide):
    """One TIFF file: the largest image series is the slide, its pyramid levels (SubIFD/OME) the levels."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._tif: tifffile.TiffFile | None = tifffile.TiffFile(path)
        except Exception as e:
            raise CorruptSlideError(f"{path}: not a readable TIFF ({type(e).__name__}: {e})") from e
        try:
            self._setup(self._tif)
        except Exception:
            self._tif.close()
            self._tif = None
            raise

    # --- opening ------------------------------------------------------------------------------------------
    def _setup(self, tif: tifffile.TiffFile) -> None:
        path = self.path
        assert path is not None
        try:
            all_series = list(tif.series)
        except Exception as e:
            raise CorruptSlideError(f"{path}: TIFF structure is broken ({type(e).__name__}: {e})") from e
        if not all_series:
            raise CorruptSlideError(f"{path}: the TIFF holds no image")
        check_tiff_complete(path, tif)
        main = max(all_series, key=lambda s: _plane_pixels(s.levels[0].shape, s.levels[0].axes))
        self._series = main
        axes = main.levels[0].axes
        if "Y" not in axes or "X" not in axes:
            raise UnsupportedImageError(f"{path}: image axes {axes!r} have no Y/X plane")
        page0 = main.pages[0] if main.pages else tif.pages[0]
        if not isinstance(page0, tifffile.TiffPage):
            page0 = tif.pages[0]
        assert isinstance(page0, tifffile.TiffPage)
        self._page0 = page0
        self._channel_axis, channels = self._channels(tif, axes, main.levels[0].shape)
        tif.filehandle.set_lock(True)  # reads serialised on the file, decoding may still run in parallel
        self._stores: list[CountingStore] = []
        self._arrays: list[Any] = []
        self._dims: list[tuple[int, int]] = []
        for i, level in enumerate(main.levels):
            store = CountingStore(main.aszarr(level=i))
            arr = zarr.open(store, mode="r")
            self._stores.append(store)
            self._arrays.append(arr)
            shape = dict(zip(level.axes, level.shape, strict=True))
            self._dims.append((int(shape["X"]), int(shape["Y"])))
        if any(w <= 0 or h <= 0 for w, h in self._dims):
            raise CorruptSlideError(f"{path}: image has zero size {self._dims[0]}")
        self._axes = axes
        extra = {a: n for a, n in zip(axes, main.levels[0].shape, strict=True) if a not in "YXSC" and n > 1}
        if extra:
            warnings.warn(
                f"{path}: only the first plane of axes {extra} is shown", SlideConversionWarning, stacklevel=3
            )
        photometric = page0.photometric
        if photometric == tifffile.PHOTOMETRIC.SEPARATED:
            raise UnsupportedImageError(f"{path}: CMYK (separated) TIFF is not supported; save it as RGB")
        palette = None
        if photometric == tifffile.PHOTOMETRIC.PALETTE and page0.colormap is not None:
            palette = np.asarray(page0.colormap).T  # (n, 3)
        dtype = np.dtype(main.dtype)
        if dtype.kind not in "uif" or dtype.itemsize > 8:
            raise UnsupportedImageError(f"{path}: {dtype} samples are not supported")
        sample = None
        if dtype != np.uint8 and palette is None:
            sample = self._smallest_level_sample()
        has_alpha = channels in (2, 4)
        self._policy: PixelPolicy = make_policy(
            path, dtype, channels, sample=sample, palette=palette, has_alpha=has_alpha
        )
        self._mpp = self._find_mpp(tif, page0)
        self._associated = {
            _assoc_name(s): s
            for s in all_series
            if s is not main and _plane_pixels(s.levels[0].shape, s.levels[0].axes) <= 16_000_000
        }
        tw, th = int(page0.tilewidth or 0), int(page0.tilelength or 0)
        self.tile_size: tuple[int, int] | None = (tw, th) if tw and th else None

    def _channels(self, tif: tifffile.TiffFile, axes: str, shape: tuple[int, ...]) -> tuple[str | None, int]:
        dims = dict(zip(axes, shape, strict=True))
        s, c = dims.get("S", 1), dims.get("C", 1)
        if s > 1 and c > 1:
            raise UnsupportedImageError(
                f"{self.path}: {c} channels of {s} samples each; only one RGB(A) or grayscale plane per "
                "pixel can be shown as H&E/IHC (multiplexed/fluorescence images are not supported)"
            )
        if c > 1:
            if c > 4:
                raise UnsupportedImageError(
                    f"{self.path}: {c} channels (fluorescence / multiplexed?); only brightfield RGB slides "
                    "are supported"
                )
            names = _ome_channel_names(tif)
            if c != 3 or not names or {n.lower() for n in names} not in _RGB_NAMES:
                raise UnsupportedImageError(
                    f"{self.path}: {c} separate channels {names or ''} are not red/green/blue; "
                    "fluorescence or multiplexed images cannot be shown as H&E/IHC"
                )
            return "C", c
        if s > 1:
            if s > 4:
                raise UnsupportedImageError(
                    f"{self.path}: {s} samples per pixel (multispectral?); only RGB(A) or grayscale is supported"
                )
            return "S", s
        return None, 1

    def _smallest_level_sample(self) -> np.ndarray | None:
        w, h = self._dims[-1]
        if w * h > _SMALL_SAMPLE_PIXELS:
            return None
        return self._read_raw(len(self._dims) - 1, 0, 0, w, h)

    def _find_mpp(self, tif: tifffile.TiffFile, page0: tifffile.TiffPage) -> tuple[float, float] | None:
        mpp = _ome_mpp(tif) or _aperio_mpp(page0) or _resolution_mpp(page0)
        if mpp is None:
            return None
        lo, hi = PLAUSIBLE_MPP
        if not all(lo <= v <= hi for v in mpp):
            self._implausible_mpp = mpp
            return None
        return mpp

    # --- contract -----------------------------------------------------------------------------------------
    @property
    def _file(self) -> tifffile.TiffFile:
        if self._tif is None:
            raise SlideError(f"{self.path}: slide is closed")
        return self._tif

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return self._dims

    @property
    def mpp(self) -> tuple[float, float] | None:
        return self._mpp

    @property
    def vendor(self) -> str:
        tif = self._file
        return "ome-tiff" if tif.is_ome else "tiff"

    @property
    def associated_names(self) -> list[str]:
        return list(self._associated)

    def associated_image(self, name: str) -> np.ndarray:
        if name not in self._associated:
            raise KeyError(f"{name!r}: {self.path} has associated images {list(self._associated)}")
        raw = np.asarray(self._associated[name].asarray())
        if raw.ndim == 2:
            raw = np.repeat(raw[..., None], 3, axis=-1)
        if raw.dtype != np.uint8:
            raw = make_policy(self.path, raw.dtype, raw.shape[-1], sample=raw).apply(raw)
        return np.ascontiguousarray(raw[..., :3])

    def properties(self) -> dict[str, Any]:
        page = self._page0
        out: dict[str, Any] = {"tiff.compression": str(getattr(page.compression, "name", page.compression))}
        if page.description:
            out["tiff.ImageDescription"] = page.description[:2000]
        if getattr(self, "_implausible_mpp", None):
            out["tiff.ignored_resolution_um_per_px"] = list(self._implausible_mpp)
        return out

    def metadata(self) -> dict[str, Any]:
        md = super().metadata()
        md["tile_size"] = list(self.tile_size) if self.tile_size else None
        return md

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        return read_window(
            location,
            self.level_downsamples[level],
            size,
            self._dims[level],
            lambda x, y, w, h: self._read_raw(level, x, y, w, h),
            self._policy,
        )

    def _read_raw(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """(h, w[, c]) raw samples of a window inside ``level`` (only its tiles are decoded)."""
        self._file  # noqa: B018 - raises when closed
        channel = self._channel_axis if self._channel_axis in ("S", "C") else None
        return read_labelled_window(
            self._arrays[level], self._axes, channel, x, y, w, h, f"{self.path}: reading level {level}"
        )

    @property
    def tiles_read(self) -> int:
        """Tiles (chunks) fetched from the file since opening, all levels together."""
        return sum(s.chunks_read for s in self._stores)

    def tiles_read_per_level(self) -> list[int]:
        return [s.chunks_read for s in self._stores]

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None

    @property
    def closed(self) -> bool:
        return self._tif is None


# --- helpers ----------------------------------------------------------------------------------------------
def _plane_pixels(shape: tuple[int, ...], axes: str) -> int:
    d = dict(zip(axes, shape, strict=True))
    return int(d.get("Y", 0)) * int(d.get("X", 0))


def _assoc_name(series: tifffile.TiffPageSeries) -> str:
    name = (series.name or "").strip().lower()
    return name or f"series{series.index}"


def _ome_channel_names(tif: tifffile.TiffFile) -> list[str]:
    if not tif.is_ome or not tif.ome_metadata:
        return []
    return re.findall(r"<Channel\b[^>]*?\bName=\"([^\"]*)\"", tif.ome_metadata)


def _ome_mpp(tif: tifffile.TiffFile) -> tuple[float, float] | None:
    if not tif.is_ome or not tif.ome_metadata:
        return None
    m = re.search(r"<Pixels\b[^>]*>", tif.ome_metadata)
    if not m:
        return None
    tag = m.group(0)

    def get(axis: str) -> float | None:
        v = re.search(rf"\bPhysicalSize{axis}=\"([^\"]+)\"", tag)
        if not v:
            return None
        u = re.search(rf"\bPhysicalSize{axis}Unit=\"([^\"]+)\"", tag)
        factor = _UNIT_TO_UM.get(u.group(1) if u else "µm")
        try:
            return float(v.group(1)) * factor if factor else None
        except ValueError:
            return None

    x, y = get("X"), get("Y")
    if x and y and x > 0 and y > 0:
        return (x, y)
    return None


def _aperio_mpp(page: tifffile.TiffPage) -> tuple[float, float] | None:
    desc = page.description or ""
    if not desc.startswith("Aperio"):
        return None
    m = re.search(r"\bMPP\s*=\s*([0-9.eE+-]+)", desc)
    if not m:
        return None
    try:
        v = float(m.group(1))
    except ValueError:
        return None
    return (v, v) if v > 0 else None


def _resolution_mpp(page: tifffile.TiffPage) -> tuple[float, float] | None:
    """µm/px from XResolution/YResolution + ResolutionUnit (inch or centimetre); None when unitless."""
    try:
        unit = int(page.resolutionunit)
        rx, ry = page.resolution
    except Exception:
        return None
    per_unit_um = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}.get(unit)  # 4/5: mm/µm (non-standard)
    if per_unit_um is None or not rx or not ry or rx <= 0 or ry <= 0:
        return None
    return (per_unit_um / float(rx), per_unit_um / float(ry))
