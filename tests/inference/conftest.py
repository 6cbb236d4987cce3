"""Fixtures for the engine tests: real H&E regions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # engine_helpers, also used by subprocess scripts

from engine_helpers import OpenSlideSlide


@pytest.fixture(scope="session")
def he_2048(tcga_path) -> np.ndarray:
    """A real 2048 x 2048 H&E region from the TCGA slide (level 0)."""
    s = OpenSlideSlide(tcga_path)
    w, h = s.dimensions
    x, y = max(0, w // 2 - 1024), max(0, h // 2 - 1024)
    img = s.read_region((x, y), 0, (2048, 2048))
    s.close()
    return img


@pytest.fixture(scope="session")
def he_1024(data_dir) -> np.ndarray:
    from skimage.io import imread

    return np.ascontiguousarray(imread(data_dir / "tiatoolbox-target-image.png")[:992, :992, :3])
