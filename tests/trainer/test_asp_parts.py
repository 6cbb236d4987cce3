"""ASP / AMMFI parts against direct computations on hand-made features: PatchNCE, ASP weights and schedule,
Gaussian-pyramid L1, the patch sampler, the discriminator, AMMFI's gate, the multi-magnification views."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from virtual_ihc_train.methods.asp.losses import (
    GaussPyramidL1,
    asp_loss,
    asp_weights,
    gauss_pyramid,
    lambda_linear_p,
    patch_nce_logits,
    patch_nce_loss,
)
from virtual_ihc_train.methods.asp.magnification import VIEWS, make_view, view_box
from virtual_ihc_train.methods.asp.networks import AspDiscriminator, PatchSampleF, l2_normalize

from napari_virtual_ihc.models import build_generator
from napari_virtual_ihc.models.ammfi import AMMFI

T = 0.07


def unit(rows):
    x = torch.tensor(rows, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


# three patches of one image, 2-D features, chosen so every dot product is easy to write down
Q = unit([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
K = unit([[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]])


def test_patch_nce_logits_positive_first_negatives_with_minus_ten_diagonal_over_temperature():
    logits = patch_nce_logits(Q, K, batch_size=1, temperature=T)
    s = 1 / math.sqrt(2)
    # row i: [q_i.k_i, q_i.k_0, q_i.k_1, q_i.k_2] with q_i.k_i replaced by -10 among the negatives
    expected = (
        torch.tensor(
            [
                [1.0, -10.0, s, 0.0],
                [s, 0.0, -10.0, -1.0],
                [-s, s, 1.0, -10.0],
            ],
            dtype=torch.float64,
        )
        / T
    )
    assert torch.allclose(logits, expected, rtol=1e-12, atol=1e-12)
    loss = patch_nce_loss(Q.float(), K.float(), 1, T)
    direct = torch.stack([-torch.log_softmax(row, 0)[0] for row in expected])
    assert torch.allclose(loss.double(), direct, rtol=1e-5)


def test_patch_nce_negatives_come_from_the_same_image_only_and_keys_are_detached():
    q = torch.cat((Q, Q * -1)).float().requires_grad_(True)
    k = torch.cat((K, K)).float().requires_grad_(True)
    logits = patch_nce_logits(q, k, batch_size=2, temperature=T)
    assert logits.shape == (6, 4)  # 1 positive + 3 negatives of the same image, not 5 across the batch
    second = patch_nce_logits((Q * -1), K, 1, T)
    assert torch.allclose(
        logits[3:].double(), second.double(), rtol=1e-5, atol=1e-6 * float(second.abs().max())
    )
    patch_nce_loss(q, k, 2, T).sum().backward()
    assert q.grad is not None and k.grad is None


def test_asp_weights_and_renormalisation():
    # q.k+ = [1, 1/sqrt2, -1/sqrt2]: relu -> [1, s, 0]; w = p + (1 - p) relu(q.k+), then * N / sum
    s = 1 / math.sqrt(2)
    for p in (1.0, 0.6, 0.1, 0.0):
        w = asp_weights(Q, K, p)
        raw_t = torch.tensor([p + (1 - p) * 1.0, p + (1 - p) * s, p], dtype=torch.float64)
        assert torch.allclose(w, raw_t * 3 / raw_t.sum(), rtol=1e-12)
        assert math.isclose(float(w.mean()), 1.0, rel_tol=1e-12)
    loss = asp_loss(Q, K, 1, 0.6, T)
    assert torch.allclose(loss, patch_nce_loss(Q, K, 1, T).double() * asp_weights(Q, K, 0.6), rtol=1e-6)


@pytest.mark.parametrize(("epoch", "p"), [(1, 1.0), (30, 1.0), (31, 1.0), (35, 0.6), (40, 0.1)])
def test_lambda_linear_schedule_on_the_mist_epochs(epoch, p):
    assert math.isclose(lambda_linear_p(epoch, 30, 10), p, rel_tol=1e-12, abs_tol=1e-12)


def _reflect_conv_numpy(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    padded = np.pad(img, 2, mode="reflect")  # torch's reflect: the edge pixel is not repeated
    out = np.zeros_like(img)
    for dy in range(5):
        for dx in range(5):
            out += kernel[dy, dx] * padded[dy : dy + img.shape[0], dx : dx + img.shape[1]]
    return out


def test_gaussian_pyramid_loss_equals_a_direct_computation():
    rng = np.random.default_rng(0)
    fake, real = rng.uniform(-1, 1, (2, 1, 64, 64))
    row = np.array([1, 4, 6, 4, 1], dtype=np.float64)
    kernel = np.outer(row, row) / 256
    weights = [1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]

    def levels(img):
        out, cur = [], img
        for _ in range(5):
            f = _reflect_conv_numpy(cur, kernel)
            out.append(f)
            cur = f[::2, ::2]
        return [*out, cur]

    lf, lr = levels(fake[0]), levels(real[0])
    assert [x.shape for x in lf] == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    direct = np.mean([w * np.abs(a - b).mean() for w, a, b in zip(weights, lf, lr, strict=True)])
    t_fake = torch.from_numpy(fake[None].copy())
    t_real = torch.from_numpy(real[None].copy())
    assert [tuple(x.shape[-2:]) for x in gauss_pyramid(t_fake)] == [
        (64, 64),
        (32, 32),
        (16, 16),
        (8, 8),
        (4, 4),
        (2, 2),
    ]
    assert math.isclose(float(GaussPyramidL1(weights)(t_fake, t_real)), direct, rel_tol=1e-10)
    assert float(GaussPyramidL1(weights)(t_fake, t_fake)) == 0.0


def test_patch_sampler_same_positions_l2_rows_and_fewer_positions_than_asked():
    torch.manual_seed(0)
    netF = PatchSampleF(nc=16)
    feats = [torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)]  # 64 and 16 positions, 256 asked
    netF.create_mlp([3, 5])
    ids = PatchSampleF.sample_ids(feats, 256, torch.Generator().manual_seed(1))
    assert [len(i) for i in ids] == [64, 16] and all(len(set(i.tolist())) == len(i) for i in ids)
    out = netF(feats, ids)
    assert [tuple(o.shape) for o in out] == [(128, 16), (32, 16)]
    for o in out:  # unit rows up to ASP's +1e-7 inside the norm (a visible share of xavier-0.02 outputs)
        assert torch.allclose(o.norm(dim=1), torch.ones(o.shape[0]), rtol=1e-2)
    # the row for sample b, position ids[j] is MLP(feat[b, :, y, x]), L2-normalised
    j, b = 5, 1
    y, x = divmod(int(ids[0][j]), 8)
    direct = l2_normalize(netF.mlps[0](feats[0][b, :, y, x][None]))
    assert torch.allclose(out[0][b * 64 + j], direct[0], rtol=1e-5, atol=1e-6)
    # a loss over these patches: 16 positions, no index error
    assert torch.isfinite(patch_nce_loss(out[1], out[1].detach(), 2, T)).all()


def test_asp_discriminator_is_unconditional_antialiased_and_spectral():
    d = AspDiscriminator(3, ndf=8, n_layers=3)
    out = d(torch.randn(1, 3, 64, 64))
    assert out.shape[:2] == (1, 1) and out.shape[-1] >= 1
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(hasattr(c, "weight_orig") for c in convs) and all(c.stride == (1, 1) for c in convs)


def test_ammfi_shapes_and_gate():
    torch.manual_seed(0)
    block = AMMFI(16).eval()
    f_e, f_d = torch.randn(2, 16, 12, 10), torch.randn(2, 16, 12, 10)
    alpha = block.gate_map(f_e, f_d)
    assert alpha.shape == (2, 1, 12, 10)
    assert bool((alpha > 0).all()) and bool((alpha < 1).all())
    out = block(f_e, f_d)
    assert out.shape == f_e.shape
    assert torch.equal(out, alpha * f_e)
    g = build_generator("ammfi_resnet", ngf=8, n_blocks=2)
    assert g(torch.randn(1, 3, 64, 48)).shape == (1, 3, 64, 48)
    assert [tuple(f.shape[1:]) for f in g.encode(torch.randn(1, 3, 32, 32), [0, 4, 8, 12])] == [
        (3, 34, 34),
        (16, 32, 32),
        (32, 16, 16),
        (32, 8, 8),
    ]
    fuse = g.decoder[0].fuse  # C/2 channels each branch, one-channel gate
    assert fuse.enc_proj[0].out_channels == fuse.dec_proj[0].out_channels == 8 and fuse.gate.out_channels == 1


def test_multi_magnification_view_geometry():
    rng = np.random.default_rng(0)
    h, w = 96, 128
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    boxes = {v: view_box(v, w, h, np.random.default_rng(1)) for v in VIEWS}
    assert boxes["native"] == boxes["down2"] == (0, 0, w, h)
    for view, factor in (("zoom2", 2), ("zoom4", 4)):
        x, y, bw, bh = boxes[view]
        assert (bw, bh) == (w // factor, h // factor) and 0 <= x <= w - bw and 0 <= y <= h - bh
    for view in VIEWS:
        assert make_view(img, view, boxes[view]).shape == img.shape
    assert np.array_equal(make_view(img, "native", boxes["native"]), img)
    # a x2 zoom shows the region enlarged: the centre of output block (i, j) is source block (i, j) of the box
    blocks = np.kron(rng.integers(0, 256, (h // 4, w // 4, 3)), np.ones((4, 4, 1))).astype(np.uint8)
    x, y, bw, bh = 8, 4, w // 2, h // 2
    zoomed = make_view(blocks, "zoom2", (x, y, bw, bh)).astype(int)
    src = blocks[y + 1 : y + bh : 4, x + 1 : x + bw : 4].astype(int)
    assert np.abs(zoomed[4::8, 4::8] - src).max() <= 1
    # x2 down then up keeps the field of view and loses detail: a checkerboard of 1 px averages to grey
    checker = (np.indices((h, w)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, 2)
    down = make_view(checker, "down2", boxes["down2"])
    assert abs(float(down.mean()) - 127.5) < 1.0 and float(down.std()) < 2.0
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert view_box("zoom4", w, h, rng_a) == view_box("zoom4", w, h, rng_b)  # same box for H&E and IHC


def test_asp_and_ammfi_presets_carry_the_launcher_defaults():
    from virtual_ihc_train.presets import preset_config

    a = preset_config("asp")
    assert (a.method, a.model.arch, a.model.ndf, a.model.n_layers_d, a.model.norm_d) == (
        "asp",
        "asp_resnet",
        32,
        5,
        "instance",
    )
    assert a.model.arch_kwargs == {"ngf": 64, "n_blocks": 6, "norm": "instance", "spectral_norm": True}
    assert (a.loss.gan_mode, a.asp.lambda_nce, a.asp.lambda_asp, a.asp.lambda_gp) == (
        "lsgan",
        10.0,
        10.0,
        10.0,
    )
    assert (a.asp.nce_layers, a.asp.num_patches, a.asp.nce_temperature) == ([0, 4, 8, 12, 16], 256, 0.07)
    assert (a.data.crop_size, a.train.batch_size, a.optim.n_epochs, a.optim.n_epochs_decay) == (
        512,
        1,
        30,
        10,
    )
    assert (a.optim.lr, a.optim.beta1, a.optim.beta2, a.asp.multi_magnification) == (2e-4, 0.5, 0.999, False)
    m = preset_config("ammfi")
    assert (m.method, m.model.arch, m.asp.multi_magnification) == ("asp", "ammfi_resnet", True)
