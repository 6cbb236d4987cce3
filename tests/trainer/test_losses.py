"""Loss definitions against direct computations: BCI's Gaussian pyramid and the variance penalty (eqs 6-10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from virtual_ihc_train.discriminators import MultiscaleDiscriminator, NLayerDiscriminator
from virtual_ihc_train.losses import (
    GANLoss,
    PyramidL1,
    feature_matching_loss,
    gaussian_kernel_3x3,
    gaussian_pyramid,
    variance_penalty,
)


def _blur_direct(img: np.ndarray) -> np.ndarray:
    """3x3 Gaussian, sigma 1, mirrored border, written out by hand."""
    g = np.exp(-np.array([1.0, 0.0, 1.0]) / 2.0)
    k = np.outer(g, g) / np.outer(g, g).sum()
    p = np.pad(img, 1, mode="reflect")
    out = np.zeros_like(img)
    for dy in range(3):
        for dx in range(3):
            out += k[dy, dx] * p[dy : dy + img.shape[0], dx : dx + img.shape[1]]
    return out


def test_kernel_is_the_normalised_sigma1_gaussian():
    k = gaussian_kernel_3x3(1.0).numpy()
    assert k.sum() == pytest.approx(1.0)
    assert k[0, 0] / k[1, 1] == pytest.approx(np.exp(-1.0))  # corner: distance^2 = 2, exp(-2/2)
    assert k[0, 1] / k[1, 1] == pytest.approx(np.exp(-0.5))


def test_pyramid_is_four_blurs_then_subsample():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(2, 3, 37, 50))
    levels = gaussian_pyramid(torch.from_numpy(x), levels=4)
    expect = x.copy()
    for level in levels[1:]:
        nxt = np.empty((2, 3, (expect.shape[2] + 1) // 2, (expect.shape[3] + 1) // 2))
        for n in range(2):
            for c in range(3):
                im = expect[n, c]
                for _ in range(4):
                    im = _blur_direct(im)
                # scipy agrees with the hand-written blur (sigma 1, radius 1, mirror border)
                ref = expect[n, c]
                for _ in range(4):
                    ref = ndimage.gaussian_filter(ref, sigma=1.0, truncate=1.0, mode="mirror")
                np.testing.assert_allclose(im, ref, atol=1e-12)
                nxt[n, c] = im[::2, ::2]
        expect = nxt
        np.testing.assert_allclose(level.numpy(), expect, atol=1e-10)
    assert [lv.shape[-2:] for lv in levels] == [(37, 50), (19, 25), (10, 13), (5, 7)]


def test_pyramid_l1_weights_each_scale():
    torch.manual_seed(0)
    fake, real = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    total, terms = PyramidL1([25.0, 25.0, 25.0, 25.0])(fake, real)
    pf, pr = gaussian_pyramid(fake, 4), gaussian_pyramid(real, 4)
    direct = [25.0 * (a - b).abs().mean() for a, b in zip(pf, pr, strict=True)]
    torch.testing.assert_close(torch.stack(terms), torch.stack(direct))
    torch.testing.assert_close(total, sum(direct))
    only_l1, terms1 = PyramidL1([100.0])(fake, real)  # plain pix2pix
    torch.testing.assert_close(only_l1, 100.0 * (fake - real).abs().mean())
    assert len(terms1) == 1


def test_variance_penalty_on_hand_made_tensors():
    # batch of 2, one channel, 1x2 pixels
    fake = torch.tensor([[[[0.0, 1.0]]], [[[2.0, 1.0]]]])  # per-pixel batch variance: (1, 0)
    real = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 4.0]]]])  # per-pixel batch variance: (0, 4)
    # eq 6: mean over batch; eqs 7-8: 1/N sum (x - mean)^2; eq 9: |diff|; eq 10: mean over C, H, W
    assert variance_penalty(fake, real).item() == pytest.approx((abs(1 - 0) + abs(0 - 4)) / 2)
    # identical batches: no penalty; a collapsed generator (same output for all) is penalised by var(real)
    assert variance_penalty(real, real).item() == 0.0
    collapsed = real.mean(0, keepdim=True).expand_as(real)
    assert variance_penalty(collapsed, real).item() == pytest.approx(
        ((real - real.mean(0)) ** 2).mean().item()
    )


def test_variance_penalty_matches_numpy_per_channel_pixel():
    rng = np.random.default_rng(1)
    f, r = rng.normal(size=(8, 3, 5, 6)), rng.normal(size=(8, 3, 5, 6))
    direct = np.abs(f.var(axis=0) - r.var(axis=0)).mean()  # numpy var: population (1/N)
    assert variance_penalty(torch.from_numpy(f), torch.from_numpy(r)).item() == pytest.approx(direct)


def test_gan_losses():
    pred = torch.tensor([[0.3, -1.2]])
    vanilla = GANLoss("vanilla")
    assert vanilla(pred, True).item() == pytest.approx(-np.log(1 / (1 + np.exp(-pred.numpy()))).mean())
    assert GANLoss("lsgan")(pred, False).item() == pytest.approx((pred**2).mean().item())
    with pytest.raises(ValueError, match="gan_mode"):
        GANLoss("wgan")


def test_patchgan_is_70x70_and_multiscale_returns_features():
    d = NLayerDiscriminator(6, ndf=8, n_layers=3, norm="batch").eval()
    x = torch.zeros(1, 6, 128, 128, requires_grad=True)
    out = d(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    ys, xs = torch.nonzero(x.grad[0].abs().sum(0)).unbind(1)
    assert (ys.max() - ys.min() + 1).item() == 70 and (xs.max() - xs.min() + 1).item() == 70
    assert "model.0.weight" in d.state_dict()  # junyanz key layout
    md = MultiscaleDiscriminator(6, ndf=8, n_layers=3, norm="instance", num_d=3)
    feats = md(torch.randn(2, 6, 64, 64))
    assert len(feats) == 3 and all(len(f) == 5 for f in feats)
    assert feats[1][-1].shape[-1] < feats[0][-1].shape[-1]
    fm = feature_matching_loss(feats, feats)
    assert fm.item() == 0.0
