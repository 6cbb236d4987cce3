"""Winograd F(4x4, 3x3) in fp32 (the same convolution as torch's to fp32 rounding) and F(2x2, 3x3) in bf16,
used only where they are fast and safe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from engine_helpers import small_generator
from torch import nn

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.devices import resolve_batch
from napari_virtual_ihc.inference.quality import psnr
from napari_virtual_ihc.inference.winograd import (
    WinogradConv2d,
    filter_transform,
    use_winograd,
    winograd_conv3x3,
)
from napari_virtual_ihc.slides.base import ArraySlide


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("size", [(3, 3), (6, 6), (13, 21), (38, 40)])  # 1 output px, exact tiles, ragged
@pytest.mark.parametrize("channels_last", [True, False])
def test_valid_convolution_equals_conv2d(size, channels_last):
    torch.manual_seed(0)
    x = torch.randn(2, 9, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(5, 9, 3, 3), torch.randn(5)
    ref = F.conv2d(x.double(), w.double(), b.double())
    out = winograd_conv3x3(x, filter_transform(w), b)
    assert out.shape == ref.shape
    assert _relative_error(out, ref) < 1e-5


def test_small_bands_give_the_same_result():
    torch.manual_seed(1)
    x, w = torch.randn(1, 8, 30, 26), torch.randn(4, 8, 3, 3)
    u = filter_transform(w)
    banded, whole = winograd_conv3x3(x, u, None, band=1), winograd_conv3x3(x, u, None)
    # Relative to the outputs' magnitude (~20 here): BLAS kernels differ in rounding from CPU to CPU.
    assert _relative_error(banded, whole.double()) < 1e-5


@pytest.mark.parametrize("padding", [0, 1])
def test_module_replaces_zero_padded_conv(padding):
    torch.manual_seed(2)
    conv = nn.Conv2d(16, 12, 3, padding=padding)
    x = torch.randn(1, 16, 23, 17)
    with torch.inference_mode():
        assert _relative_error(WinogradConv2d(conv)(x), conv(x)) < 1e-5


def test_absorbed_reflection_pad_matches_pad_then_conv():
    torch.manual_seed(3)
    seq = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(128, 128, 3), nn.ReLU())
    x = torch.randn(1, 128, 19, 22).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = seq(x)
        assert use_winograd(seq) == 1
        assert isinstance(seq[0], nn.Identity) and isinstance(seq[1], WinogradConv2d) and seq[1].reflect
        assert _relative_error(seq(x), ref) < 1e-5


def test_falls_back_to_conv2d_for_gradients_and_other_dtypes():
    torch.manual_seed(4)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    wconv = WinogradConv2d(conv)
    x = torch.randn(1, 8, 10, 10, requires_grad=True)
    wconv(x).sum().backward()  # the Winograd path has no backward; the fallback does
    assert x.grad is not None
    xd = torch.randn(1, 8, 10, 10, dtype=torch.float64)
    assert wconv(xd).dtype == torch.float64


def test_only_wide_plain_3x3_convolutions_are_converted():
    model = small_generator("instance", ngf=32, n_blocks=2).module  # trunk 128 channels: eligible
    before = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    x = torch.rand(1, 3, 64, 72) * 2 - 1
    with torch.inference_mode():
        ref = model(x)
        assert use_winograd(model) == 4  # two per residual block; the 7x7 and strided convs stay
        out = model(x)
    assert len(before) - sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 4
    assert (out - ref).abs().max() < 1e-4
    narrow = small_generator("instance", ngf=8, n_blocks=2).module
    assert use_winograd(narrow) == 0  # 32 channels: the transforms would cost more than they save


def test_engine_uses_winograd_on_cpu_fp32_and_output_matches_direct(he_1024, tmp_path):
    model = small_generator("instance", ngf=32, n_blocks=2)
    img = he_1024[:512, :512]
    common = dict(tile=256, skip_background=False, pooled_pass_mp=0.0)  # the tiled whole-slide path
    fast = stain_slide(ArraySlide(img, 0.5), model, tmp_path / "w.ome.zarr", EngineSettings(**common))
    direct = stain_slide(
        ArraySlide(img, 0.5), model, tmp_path / "d.ome.zarr", EngineSettings(winograd=False, **common)
    )
    assert fast.settings["winograd_convs"] == 4 and direct.settings["winograd_convs"] == 0
    assert fast.settings["batch"] == 1  # CPU default

    import zarr

    a = np.asarray(zarr.open_group(str(tmp_path / "w.ome.zarr"), mode="r")["0"][:])
    b = np.asarray(zarr.open_group(str(tmp_path / "d.ome.zarr"), mode="r")["0"][:])
    assert psnr(a, b) >= 60.0
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_batch_auto_is_one_on_cpu_and_explicit_values_are_kept():
    assert resolve_batch(None, torch.device("cpu")) == 1
    assert resolve_batch(0, torch.device("cpu")) == 1
    assert resolve_batch(None, torch.device("cuda")) == 4
    assert resolve_batch(3, torch.device("cpu")) == 3


@pytest.mark.parametrize(
    ("conv", "size"),
    [
        (nn.Conv2d(32, 24, 3, padding=1), (27, 30)),  # zero padding, odd output: two bands, a ragged edge
        (nn.Conv2d(32, 24, 3), (19, 20)),  # valid: 9 tile rows, the one-row last band merged
    ],
)
def test_bf16_autocast_runs_f2_winograd_close_to_bf16_direct(conv, size):
    """Forced (any CPU: bf16 is emulated where it has no instructions): F(2x2, 3x3) in bf16, compiled."""
    torch.manual_seed(0)
    conv = conv.eval()
    wc = WinogradConv2d(conv)
    x = torch.randn(2, 32, *size)
    with torch.inference_mode():
        ref = conv(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = wc(x)
            direct = conv(x).float()
    assert wc.f2 is not None and out.dtype == torch.bfloat16  # the F(2x2) path ran
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
    rel = float((out.float() - ref).abs().mean() / ref.abs().mean())
    rel_direct = float((direct - ref).abs().mean() / ref.abs().mean())
    # additions only in the transforms: about 2-3x bf16 direct's rounding (F(4x4)'s was ~10x), no garbage
    assert rel < 4 * rel_direct and rel < 0.01


def test_bf16_f2_absorbs_a_reflection_pad():
    torch.manual_seed(1)
    seq = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(16, 16, 3)).eval()
    x = torch.randn(1, 16, 22, 17)
    with torch.inference_mode():
        ref = seq(x)
        assert use_winograd(seq, min_channels=0) == 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = seq(x)
    assert out.shape == ref.shape
    assert float((out.float() - ref).abs().mean() / ref.abs().mean()) < 0.01
