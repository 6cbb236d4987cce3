"""Shared by the engine tests and their subprocess scripts: small real generators, an OpenSlide Slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from napari_virtual_ihc.models import ModelSpec, build_generator
from napari_virtual_ihc.models.spec import LoadedGenerator
from napari_virtual_ihc.slides.base import Slide


def small_generator(norm: str = "instance", ngf: int = 8, n_blocks: int = 3, seed: int = 0, mpp=None):
    """A real pix2pix ResNet generator, small enough for CI, random but seeded weights."""
    torch.manual_seed(seed)
    module = build_generator("resnet", ngf=ngf, n_blocks=n_blocks, norm=norm).eval()
    if norm == "batch":  # give BatchNorm non-trivial running statistics, as a trained model has
        g = torch.Generator().manual_seed(seed + 1)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    spec = ModelSpec("resnet", {"ngf": ngf, "n_blocks": n_blocks, "norm": norm}, mpp=mpp, name=f"test-{norm}")
    return LoadedGenerator(
        module=module, spec=spec, source="test", sha256=f"test-{norm}-{ngf}-{n_blocks}-{seed}"
    )


class OpenSlideSlide(Slide):
    """A Slide over openslide-python (used when the slides package's reader is not needed)."""

    def __init__(self, path: Path) -> None:
        import openslide

        self._os = openslide.OpenSlide(str(path))
        self.path = path

    @property
    def level_dimensions(self):
        return [tuple(d) for d in self._os.level_dimensions]

    @property
    def mpp(self):
        p = self._os.properties
        try:
            return (float(p["openslide.mpp-x"]), float(p["openslide.mpp-y"]))
        except (KeyError, ValueError):
            return None

    def read_region(self, location, level, size):
        rgba = np.asarray(self._os.read_region(location, level, size))
        rgb = rgba[..., :3].copy()
        rgb[rgba[..., 3] == 0] = 255
        return rgb

    def close(self) -> None:
        self._os.close()


def assert_same_up_to_rounding(actual: np.ndarray, desired: np.ndarray, share: float = 1e-5) -> None:
    """The same image but for float rounding: at most 1 grey level apart, in at most ``share`` of the values.

    Why not bit-identical: a batch's windows share one crop of the trunk (the sides all of them can spare), so a
    tile run beside another partner (field of view first, a resumed run) convolves a tensor of another extent.
    Some CPUs' float32 kernels block by extent (an AVX2 EPYC: 1-2 values per million flip by one grey level);
    AVX-512 ones gave identical bytes."""
    a, d = np.asarray(actual).astype(np.int16), np.asarray(desired).astype(np.int16)
    assert a.shape == d.shape
    diff = np.abs(a - d)
    assert int(diff.max(initial=0)) <= 1 and float(np.mean(diff > 0)) <= share, (
        int(diff.max(initial=0)),
        int((diff > 0).sum()),
    )
