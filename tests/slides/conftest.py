"""Bad and unusual input files, made by the tests from real data where pixels matter."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile


@pytest.fixture(scope="session")
def he_rgb(data_dir: Path) -> np.ndarray:
    """A real 200 x 300 H&E patch (RGB uint8) from the tiatoolbox target tile."""
    img = imagecodecs.png_decode((data_dir / "tiatoolbox-target-image.png").read_bytes())
    return np.ascontiguousarray(img[300:500, 300:600, :3])


@pytest.fixture(scope="session")
def he_full(data_dir: Path) -> np.ndarray:
    """The whole 1000 x 1000 tiatoolbox H&E tile (RGB uint8)."""
    img = imagecodecs.png_decode((data_dir / "tiatoolbox-target-image.png").read_bytes())
    return np.ascontiguousarray(img[..., :3])


@pytest.fixture(scope="session")
def sample_tif() -> Path:
    """The packaged sample (two JPEG-tiled levels of a CMU-1 crop)."""
    from napari_virtual_ihc._sample_data import CMU1_REGION

    return CMU1_REGION


def write_png(path: Path, arr: np.ndarray) -> Path:
    path.write_bytes(imagecodecs.png_encode(arr))
    return path


def write_palette_png(path: Path, rgb: np.ndarray) -> tuple[Path, np.ndarray]:
    """An indexed-colour PNG (Pillow quantises), returned with the RGB it really encodes."""
    from PIL import Image

    im = Image.fromarray(rgb).quantize(colors=64)
    im.save(path)
    return path, np.asarray(im.convert("RGB"))


def write_tiff(path: Path, arr: np.ndarray, **kw: object) -> Path:
    tifffile.imwrite(path, arr, **kw)
    return path
