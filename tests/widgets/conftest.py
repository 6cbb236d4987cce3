"""Fixtures for the widget tests: a private settings folder, a real H&E crop, a tiny model built here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _private_widget_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the widget's persisted settings out of the user's real config folder."""
    config = tmp_path / "config"
    monkeypatch.setenv("NAPARI_VIRTUAL_IHC_CONFIG_DIR", str(config))
    return config


@pytest.fixture(scope="session")
def he_crop(data_dir: Path) -> np.ndarray:
    """A real H&E field (TIAToolbox target image), cropped small so the tests stay fast."""
    from skimage.io import imread

    rgb = imread(data_dir / "tiatoolbox-target-image.png")[..., :3]
    return np.ascontiguousarray(rgb[100:420, 60:460]).astype(np.uint8)  # 320 x 400


def _inverting_generator(ngf: int, n_blocks: int):  # type: ignore[no-untyped-def]
    """A real ResNet generator whose weights are set so that output = tanh(-input): a negative image.

    The first conv copies the RGB channels and its (eval-mode) batch norm adds 1 so the ReLU keeps them,
    the residual blocks are zeroed (identity), the last conv negates them back. Its output is a known per-pixel function of the input,
    so tests can check every written pixel and locate features in screenshots.
    """
    import torch

    from napari_virtual_ihc.models import build_generator

    module = build_generator("resnet", ngf=ngf, n_blocks=n_blocks, n_downsampling=0, norm="batch")
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
        first, first_norm, last = module.model[1], module.model[2], module.model[-2]
        first_norm.weight.fill_(1.0)
        first_norm.bias.fill_(1.0)
        for c in range(3):
            first.weight[c, c, 3, 3] = 1.0
            last.weight[c, c, 3, 3] = -1.0
            last.bias[c] = 1.0
    return module.eval()


def _expected_ihc(rgb: np.ndarray) -> np.ndarray:
    """What the inverting generator writes for ``rgb`` (uint8 in, uint8 out, -1..1 convention)."""
    x = rgb.astype(np.float32) / 127.5 - 1.0
    y = np.tanh(-x)
    return np.clip(np.round((y + 1.0) * 127.5), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def expected_ihc() -> Callable[[np.ndarray], np.ndarray]:
    return _expected_ihc


@pytest.fixture(scope="session")
def inverting_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_virtual_ihc.models import ModelSpec, save_generator

    kwargs = {"ngf": 4, "n_blocks": 1, "n_downsampling": 0, "norm": "batch"}
    module = _inverting_generator(4, 1)
    spec = ModelSpec(arch="resnet", arch_kwargs=kwargs, name="invert-test", mpp=None)
    return save_generator(tmp_path_factory.mktemp("models") / "invert-test.safetensors", module, spec)


@pytest.fixture(scope="session")
def inverting_model_1um(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same negative-image generator, declared as trained at 1.0 µm/px (the engine resamples to it)."""
    from napari_virtual_ihc.models import ModelSpec, save_generator

    kwargs = {"ngf": 4, "n_blocks": 1, "n_downsampling": 0, "norm": "batch"}
    spec = ModelSpec(arch="resnet", arch_kwargs=kwargs, name="invert-1um", mpp=1.0)
    return save_generator(
        tmp_path_factory.mktemp("models") / "invert-1um.safetensors", _inverting_generator(4, 1), spec
    )
