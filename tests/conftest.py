"""Shared test fixtures: paths to the real data shipped in tests/data, and a quiet, deterministic torch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")  # pytest-xvfb gives us a real X server
os.environ.setdefault("NAPARI_ASYNC", "0")
# pytest-qt and napari (through qtpy) must drive the same Qt binding. With PyQt5 and PyQt6 both installed (an
# old venv after ``pip install .[all,test]``), pytest-qt would take PyQt6 and qtpy PyQt5; follow qtpy's choice
# (``QT_API``, else its own order).
os.environ.setdefault("PYTEST_QT_API", __import__("qtpy").API)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def cmu1_path() -> Path:
    return DATA / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="session")
def tcga_path() -> Path:
    return DATA / "tcga-cr-7395-01a-01-ts1.svs"


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True, scope="session")
def _calibration_cache(tmp_path_factory) -> None:
    """Measured precision decisions and torch.compile's kernels (bf16 Winograd's transforms) go to per-session
    folders, never the user's caches."""
    os.environ["VIRTUAL_IHC_CACHE_DIR"] = str(tmp_path_factory.mktemp("vihc-cache"))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("inductor-cache"))
