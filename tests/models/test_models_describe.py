"""The analytic receptive field bounds the measured one tightly; size multiples and norm kinds are right."""

from __future__ import annotations

import pytest
import torch

from napari_virtual_ihc.models import build_generator, describe, receptive_field, size_multiple


def _measured_receptive_field(module: torch.nn.Module, size: int = 224) -> int:
    """Extent of input pixels with non-zero gradient for the centre output pixel (norm-free nets only)."""
    x = torch.randn(1, 3, size, size, requires_grad=True)
    module(x)[0, :, size // 2, size // 2].sum().backward()
    assert x.grad is not None
    rows = (x.grad[0].abs().sum(0) > 0).any(1).nonzero()
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        ("resnet", {"n_blocks": 6, "n_downsampling": 2}),
        ("resnet", {"n_blocks": 2, "n_downsampling": 3}),
        ("asp_resnet", {"n_blocks": 2, "spectral_norm": False}),
    ],
)
def test_receptive_field_is_a_tight_upper_bound(arch: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    net = build_generator(arch, ngf=4, norm="none", **kwargs).eval()
    measured = _measured_receptive_field(net)
    analytic = receptive_field(net)
    assert measured <= analytic <= measured + 8


def test_describe_reference_models() -> None:
    with torch.device("meta"):
        r9 = build_generator("resnet", ngf=64, n_blocks=9)
        tdk = build_generator("resnet", ngf=64, n_blocks=9, n_downsampling=3)
        unet = build_generator("unet_256", ngf=64)
        asp = build_generator("asp_resnet", ngf=64)
    assert describe(r9) == {
        "norm": "instance",
        "receptive_field": 169,
        "size_multiple": 4,
        "parameters": 11378179,
    }
    assert size_multiple(tdk) == 8
    assert size_multiple(unet) == 256 and describe(unet)["norm"] == "batch"
    assert describe(asp)["norm"] == "instance" and size_multiple(asp) == 4
