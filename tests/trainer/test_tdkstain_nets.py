"""TDKstain's estimator, multiscale discriminator and losses against direct computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from virtual_ihc_train.methods.tdkstain.losses import discriminator_loss, estimator_loss, generator_loss
from virtual_ihc_train.methods.tdkstain.nets import (
    MultiscalePatchDiscriminator,
    NucleiDensityEstimator,
    encoder_channels,
    encoder_features,
    encoder_layers,
)

from napari_virtual_ihc.models.resnet import ResnetGenerator


def small_generator() -> ResnetGenerator:
    torch.manual_seed(0)
    return ResnetGenerator(ngf=8, norm="instance", n_blocks=1, n_downsampling=3)


def test_encoder_layers_are_the_relus_closing_each_downsampling():
    g = small_generator()
    layers = encoder_layers(3)
    assert layers == [6, 9, 12]  # the reference's feat_layers for n_downsampling=3
    for i, ch in zip(layers, encoder_channels(8, 3), strict=True):
        conv = g.model[i - 2]
        assert isinstance(g.model[i], nn.ReLU) and isinstance(g.model[i - 1], nn.InstanceNorm2d)
        assert isinstance(conv, nn.Conv2d) and conv.stride == (2, 2) and conv.out_channels == ch
    assert isinstance(g.model[13], type(g.model[13])) and g.model[13].__class__.__name__ == "ResnetBlock"
    assert encoder_channels(64, 3) == [128, 256, 512]


def test_encoder_features_equal_the_full_forward_activations():
    g = small_generator()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    seen: dict[int, torch.Tensor] = {}
    hooks = [
        g.model[i].register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o.clone()))
        for i in (6, 9, 12)
    ]
    with torch.no_grad():
        g(x)
        feats = encoder_features(g, x, encoder_layers(3))
    for h in hooks:
        h.remove()
    assert [tuple(f.shape) for f in feats] == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]
    for f, i in zip(feats, (6, 9, 12), strict=True):
        torch.testing.assert_close(f, seen[i], rtol=0, atol=0)


def test_estimator_shapes_and_fusion():
    torch.manual_seed(0)
    e = NucleiDensityEstimator(16 + 32 + 64, 1, nef=8, n_blocks=4)
    assert NucleiDensityEstimator(896).model[0].in_channels == 896  # 128 + 256 + 512 for ngf 64
    blocks = [m for m in e.model if m.__class__.__name__ == "ResnetBlock"]
    assert len(blocks) == 4
    first, last = e.model[0], e.model[-2]
    assert first.kernel_size == (7, 7) and first.padding == "same" and first.out_channels == 8
    assert last.kernel_size == (7, 7) and last.out_channels == 1 and isinstance(e.model[-1], nn.Sigmoid)
    feats = [torch.rand(1, 16, 32, 32), torch.rand(1, 32, 16, 16), torch.rand(1, 64, 8, 8)]
    with torch.no_grad():
        half = e(feats)
        full = e(feats, out_size=(64, 64))
        fused = torch.cat(
            [feats[0]] + [F.interpolate(f, (32, 32), mode="bilinear", align_corners=True) for f in feats[1:]],
            1,
        )
        direct = e.model(fused)
    assert half.shape == (1, 1, 32, 32) and full.shape == (1, 1, 64, 64)
    torch.testing.assert_close(half, direct)
    torch.testing.assert_close(full, F.interpolate(direct, (64, 64), mode="bilinear", align_corners=True))
    assert float(full.min()) >= 0 and float(full.max()) <= 1


def _avg_pool_excluding_pad(x: torch.Tensor) -> torch.Tensor:
    """3x3 mean, stride 2, padding 1, dividing by the number of real pixels in each window."""
    ones = torch.ones_like(x[:, :1])
    k = torch.ones(1, 1, 3, 3, dtype=x.dtype)
    c = x.shape[1]
    s = F.conv2d(F.pad(x, (1, 1, 1, 1)), k.expand(c, 1, 3, 3), stride=2, groups=c)
    n = F.conv2d(F.pad(ones, (1, 1, 1, 1)), k, stride=2)
    return s / n


def test_discriminator_three_scales_and_patchgan_layout():
    torch.manual_seed(0)
    d = MultiscalePatchDiscriminator(6, ndf=8, n_layers=3, norm="instance", num_d=3)
    x = torch.rand(1, 6, 128, 128)
    ins = d.scale_inputs(x)
    assert [tuple(t.shape[-2:]) for t in ins] == [(128, 128), (64, 64), (32, 32)]
    torch.testing.assert_close(ins[1], _avg_pool_excluding_pad(x))
    torch.testing.assert_close(ins[2], _avg_pool_excluding_pad(_avg_pool_excluding_pad(x)))
    for patch in d.scales:
        convs = [m for m in patch.modules() if isinstance(m, nn.Conv2d)]
        assert [c.kernel_size for c in convs] == [(4, 4)] * 5 and all(c.padding == (1, 1) for c in convs)
        assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
        assert [c.out_channels for c in convs] == [8, 16, 32, 64, 1]
        assert sum(isinstance(m, nn.InstanceNorm2d) for m in patch.modules()) == 3
    with torch.no_grad():
        preds = d(x)
        assert [tuple(p.shape[-2:]) for p in preds] == [(14, 14), (6, 6), (2, 2)]
        for p, patch, xi in zip(preds, d.scales, ins, strict=True):
            torch.testing.assert_close(p, patch(xi))


def test_losses_equal_their_formulas():
    torch.manual_seed(0)
    preds = [torch.randn(1, 1, 6, 6), torch.randn(1, 1, 2, 2), torch.randn(1, 1, 1, 1)]
    preds_real = [torch.randn_like(p) for p in preds]
    fake, real, fake_m, dab = (torch.rand(1, 3, 16, 16) * 2 - 1 for _ in range(4))
    pred_k, k = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    g = generator_loss(preds, fake, real, fake_m, dab, pred_k, k, 10.0, 7.0, 3.0)
    assert float(g["G_GAN"]) == pytest.approx(sum(float(((p - 1) ** 2).mean()) for p in preds), rel=1e-6)
    assert float(g["G_L1"]) == pytest.approx(10 * float((fake - real).abs().mean()), rel=1e-6)
    assert float(g["G_mask"]) == pytest.approx(7 * float((fake_m - dab).abs().mean()), rel=1e-6)
    assert float(g["G_nuclei"]) == pytest.approx(3 * float(((pred_k - k) ** 2).mean()), rel=1e-6)
    assert float(g["G"]) == pytest.approx(
        sum(float(g[t]) for t in ("G_GAN", "G_L1", "G_mask", "G_nuclei")), rel=1e-6
    )
    dl = discriminator_loss(preds, preds_real)
    fake_term = sum(float((p**2).mean()) for p in preds)
    real_term = sum(float(((p - 1) ** 2).mean()) for p in preds_real)
    assert float(dl["D"]) == pytest.approx(0.5 * (fake_term + real_term), rel=1e-6)
    assert float(estimator_loss(pred_k, k, 10.0)) == pytest.approx(
        10 * float(((pred_k - k) ** 2).mean()), rel=1e-6
    )
