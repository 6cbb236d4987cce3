"""Checkpoints run as their reference test.py ran them: batch norm with the image's own statistics, dropout on
(positional masks, no seams), the mean of N samples with a confidence map."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import zarr
from engine_helpers import small_generator

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.confidence import confidence_store_path
from napari_virtual_ihc.inference.dropout import (
    DropoutContext,
    DropoutMode,
    DropoutModeError,
    PositionalDropout,
    install_positional_dropout,
    keep_mask,
    set_positions,
)
from napari_virtual_ihc.inference.engine import run_json_path
from napari_virtual_ihc.inference.quality import psnr
from napari_virtual_ihc.inference.run_mode import RunModeError
from napari_virtual_ihc.inference.runner import to_input, to_uint8
from napari_virtual_ihc.models import build_generator, load_generator
from napari_virtual_ihc.slides.base import ArraySlide


def level0(store) -> np.ndarray:
    return np.asarray(zarr.open_group(str(store), mode="r")["0"][:]).transpose(1, 2, 0)


def reference_train_mode(module: torch.nn.Module, img: np.ndarray) -> np.ndarray:
    """What pix2pix/BCI test.py does without --eval: train mode, batch 1 (on a copy: it updates running stats)."""
    net = copy.deepcopy(module).train()
    with torch.no_grad():
        return to_uint8(net(to_input(img[None], "minus_one_one")), "minus_one_one")[0]


def batchnorm_pth(tmp_path, use_dropout: bool = False, ngf: int = 8, n_blocks: int = 9):
    """A BatchNorm ResNet in the reference define_G('resnet_9blocks', norm='batch') layout, saved as test.py
    loads it (a plain state dict), with non-trivial running statistics."""
    torch.manual_seed(0)
    net = build_generator("resnet", ngf=ngf, n_blocks=n_blocks, norm="batch", use_dropout=use_dropout)
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    path = tmp_path / "latest_net_G.pth"
    torch.save(net.state_dict(), path)
    return path, net


def test_slide_mode_equals_reference_train_mode_forward_on_real_he(he_1024, tmp_path):
    path, net = batchnorm_pth(tmp_path, ngf=4)
    model = load_generator(path)
    assert model.spec.bn_stats == "slide"  # an imported .pth runs as its test.py does
    assert any("test.py" in n for n in model.notes) and any("µm/px" in n for n in model.notes)
    img = he_1024[:256, :256]  # real H&E, small enough to run whole
    ref = reference_train_mode(net, img)
    rep = stain_slide(ArraySlide(img, 0.5), model, tmp_path / "s.ome.zarr", EngineSettings(tile=128))
    out = level0(tmp_path / "s.ome.zarr")
    assert rep.settings["run_mode"]["bn_stats"] == "slide"
    assert rep.settings["run_mode"]["source"]["bn_stats"] == "checkpoint"
    diff = np.abs(out.astype(int) - ref.astype(int))
    print(f"slide BN vs reference train-mode: max {diff.max()} grey levels, PSNR {psnr(out, ref):.1f} dB")
    assert diff.max() <= 1
    # Eval mode (running statistics) is a different image: the mode matters.
    stain_slide(
        ArraySlide(img, 0.5), model, tmp_path / "r.ome.zarr", EngineSettings(tile=128, bn_stats="running")
    )
    assert psnr(level0(tmp_path / "r.ome.zarr"), ref) < 30
    prov = dict(zarr.open_group(str(tmp_path / "s.ome.zarr"), mode="r").attrs)["virtual_ihc"]
    assert prov["run_mode"]["bn_stats"] == "slide" and any("µm/px" in w for w in prov["warnings"])
    # The whole-slide path (statistics sampled from windows, then frozen tiles) stays close to it.
    stain_slide(
        ArraySlide(img, 0.5), model, tmp_path / "w.ome.zarr", EngineSettings(tile=128, pooled_pass_mp=0.0)
    )
    assert psnr(level0(tmp_path / "w.ome.zarr"), ref) >= 35.0


def test_dropout_masks_are_a_function_of_slide_position_so_tiles_add_no_seams(he_1024, tmp_path):
    path, net = batchnorm_pth(tmp_path, use_dropout=True, n_blocks=2)
    model = load_generator(path)
    assert model.spec.dropout == "sample"
    img = he_1024[:192, :192]
    # Reference: the whole image in one pass through the same positional dropout (plane origin 0, 0).
    whole = copy.deepcopy(net).eval()
    ctx = DropoutContext(seed=7)
    assert install_positional_dropout(whole, ctx) == 2
    x = to_input(img[None], "minus_one_one")
    set_positions(whole, [(0, 0)], (192, 192))
    with torch.no_grad():
        ref = to_uint8(whole(x), "minus_one_one")[0]
    outs = []
    for tile in (64, 96):  # different tilings of the same slide
        settings = EngineSettings(tile=tile, bn_stats="running", dropout_seed=7, pooled_pass_mp=0.0)
        stain_slide(ArraySlide(img, 0.5), model, tmp_path / f"t{tile}.ome.zarr", settings)
        outs.append(level0(tmp_path / f"t{tile}.ome.zarr"))
        assert np.abs(outs[-1].astype(int) - ref.astype(int)).max() <= 1
    assert np.abs(outs[0].astype(int) - outs[1].astype(int)).max() <= 1
    # And it really is a dropout sample: eval mode gives another image, another seed another sample.
    with torch.no_grad():
        evald = to_uint8(net.eval()(x), "minus_one_one")[0]
    assert np.abs(evald.astype(int) - ref.astype(int)).max() >= 3
    stain_slide(
        ArraySlide(img, 0.5),
        model,
        tmp_path / "seed8.ome.zarr",
        EngineSettings(tile=96, bn_stats="running", dropout_seed=8),
    )
    assert not np.array_equal(level0(tmp_path / "seed8.ome.zarr"), outs[1])


def test_mean_of_samples_writes_a_deterministic_confidence_map(he_1024, tmp_path):
    path, _ = batchnorm_pth(tmp_path, use_dropout=True, ngf=4, n_blocks=2)
    model = load_generator(path)
    img = he_1024[:192, :192]
    maps = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        settings = EngineSettings(tile=96, bn_stats="running", dropout="mean:3", dropout_seed=seed)
        rep = stain_slide(ArraySlide(img, 0.5), model, tmp_path / f"{name}.ome.zarr", settings)
        conf = confidence_store_path(tmp_path / f"{name}.ome.zarr")
        assert rep.settings["confidence_store"] == str(conf)
        maps.append(np.asarray(zarr.open_group(str(conf), mode="r")["0"][:])[0])
    assert maps[0].shape == (192, 192)
    assert np.array_equal(maps[0], maps[1])  # same seed: the same map
    assert not np.array_equal(maps[0], maps[2])
    assert maps[0].max() > 0 and maps[0].mean() > 0.5  # dropout samples disagree somewhere
    assert rep.settings["run_mode"]["dropout"] == "mean:3"


def test_confidence_is_zero_without_dropout_and_said_so(he_1024, tmp_path):
    model = small_generator("batch", ngf=4, n_blocks=1)
    img = he_1024[:128, :128]
    rep = stain_slide(
        ArraySlide(img, 0.5), model, tmp_path / "n.ome.zarr", EngineSettings(tile=64, dropout="mean:4")
    )
    conf = np.asarray(zarr.open_group(str(confidence_store_path(tmp_path / "n.ome.zarr")), mode="r")["0"][:])
    assert conf.shape[0] == 1 and not conf.any()
    assert any("no dropout layers" in w for w in rep.warnings)
    assert any("no dropout layers" in w for w in json.loads(run_json_path(rep.store).read_text())["warnings"])


def test_unwritable_confidence_store_leaves_the_stain_alone(he_1024, tmp_path):
    path, _ = batchnorm_pth(tmp_path, use_dropout=True, ngf=4, n_blocks=1)
    model = load_generator(path)
    img = he_1024[:128, :128]
    confidence_store_path(tmp_path / "x.ome.zarr").write_text("in the way")  # a file where the store goes
    rep = stain_slide(
        ArraySlide(img, 0.5), model, tmp_path / "x.ome.zarr", EngineSettings(tile=64, dropout="mean:2")
    )
    assert rep.settings["complete"] and rep.settings["confidence_store"] is None
    assert any("confidence map not written" in w for w in rep.warnings)
    assert level0(tmp_path / "x.ome.zarr").shape == (128, 128, 3)


def test_bad_modes_are_refused_clearly(he_1024, tmp_path):
    with pytest.raises(DropoutModeError, match="mean:N"):
        DropoutMode.parse("mean:1")
    assert (
        DropoutMode.parse("mean:8") == DropoutMode("mean", 8) and str(DropoutMode.parse("SAMPLE")) == "sample"
    )
    model = small_generator("batch", ngf=4, n_blocks=1)
    with pytest.raises(RunModeError, match="running"):
        stain_slide(
            ArraySlide(he_1024[:64, :64], 0.5),
            model,
            tmp_path / "e.ome.zarr",
            EngineSettings(bn_stats="train"),
        )


def test_keep_mask_keeps_half_and_depends_on_every_coordinate():
    m = keep_mask(0, 0, 0, 16, 0, 0, 64, 64, 0.5, "cpu")
    assert abs(m.float().mean().item() - 0.5) < 0.02
    shifted = keep_mask(0, 0, 0, 16, 10, 20, 64, 64, 0.5, "cpu")
    assert torch.equal(m[:, 10:, 20:], shifted[:, :54, :44])  # the same slide position, the same decision
    for other in (
        keep_mask(1, 0, 0, 16, 0, 0, 64, 64, 0.5, "cpu"),
        keep_mask(0, 1, 0, 16, 0, 0, 64, 64, 0.5, "cpu"),
        keep_mask(0, 0, 1, 16, 0, 0, 64, 64, 0.5, "cpu"),
    ):
        assert 0.4 < (other != m).float().mean().item() < 0.6  # seed, sample, layer: independent masks
    assert 0.4 < (m[1:] != m[:-1]).float().mean().item() < 0.6  # channels independent


def test_the_mask_hashed_in_chunks_and_laid_out_channels_last_is_the_one_hash_of_every_unit(monkeypatch):
    """Masks decide a store's pixels: chunking (speed) must not change a single decision, in either layout."""
    import napari_virtual_ihc.inference.dropout as dropout

    def whole(seed, sample, layer, channels, y0, x0, h, w, p):  # the hash over the whole map at once
        mix, ar, m62 = dropout._mix, torch.arange, dropout._MASK62
        base = mix(
            torch.tensor((seed * dropout._MIX[0] + sample * dropout._MIX[1] + layer * dropout._MIX[2]) & m62)
        )
        hc = mix((ar(channels) * dropout._MIX[3] + int(base)) & m62)
        hy = mix((ar(y0, y0 + h) * dropout._MIX[4]) & m62)
        hx = mix(ar(x0, x0 + w) & m62)
        v = mix(hc.view(-1, 1, 1) ^ (hy.view(1, -1, 1) * 3 & m62) ^ hx.view(1, 1, -1))
        return (v & ((1 << 24) - 1)) >= int(p * (1 << 24))

    monkeypatch.setattr(dropout, "MASK_CHUNK", 100)  # a few rows per chunk, the last one ragged
    want = whole(3, 1, 2, 12, 40, 7, 23, 17, 0.3)
    assert torch.equal(keep_mask(3, 1, 2, 12, 40, 7, 23, 17, 0.3, "cpu"), want)
    last = keep_mask(3, 1, 2, 12, 40, 7, 23, 17, 0.3, "cpu", channels_last=True)
    assert torch.equal(last, want) and last.permute(1, 2, 0).is_contiguous()
    x = torch.randn(1, 12, 23, 17).to(torch.bfloat16)
    ctx = DropoutContext(3)
    ctx.sample, ctx.origins, ctx.input_hw = 1, [(7, 40)], (23, 17)
    drop = PositionalDropout(0.3, 2, ctx)
    expected = (x * want.to(x.dtype)) * (1 / 0.7)
    assert torch.equal(drop(x), expected)  # NCHW
    assert torch.equal(drop(x.contiguous(memory_format=torch.channels_last)), expected)  # channels-last
