"""A real virtual-IHC-format store holding a real IHC image (ANHIR rat kidney, pan-cytokeratin DAB)."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest

from napari_virtual_ihc.ihc_store.writer import TileStore


@pytest.fixture(scope="session")
def ihc_rgb(data_dir: Path) -> np.ndarray:
    rgb = imagecodecs.jpeg8_decode((data_dir / "Rat-Kidney_PanCytokeratin.jpg").read_bytes())
    return np.ascontiguousarray(rgb[:700, :900])


@pytest.fixture
def ihc_store(tmp_path: Path, ihc_rgb: np.ndarray) -> Path:
    """A complete 3-level store of ``ihc_rgb`` at 0.5 µm/px, written tile by tile as the engine does."""
    path = tmp_path / "kidney.ome.zarr"
    h, w = ihc_rgb.shape[:2]
    ts = TileStore.open(
        path,
        plane=(w, h),
        tile=256,
        factors=[1, 2, 4],
        mpp=(0.5, 0.5),
        run_key={"model": "test"},
        provenance={"model": {"name": "test-model"}, "target_stain": "HER2", "level0_downsample": 1.0},
    )
    for y in range(0, h, 256):
        for x in range(0, w, 256):
            x1, y1 = min(x + 256, w), min(y + 256, h)
            ts.write_tile((x, y, x1 - x, y1 - y), ihc_rgb[y:y1, x:x1])
    ts.close()
    return path
