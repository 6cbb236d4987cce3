"""AMMFI's attention BatchNorm runs as ASP's test.py runs it (issue 30 item 4).

The AMMFI generator is instance-norm except for the two BatchNorms of each attention module. ASP's test script
(whose code AMMFI builds on) runs without ``--eval``, so those layers normalise each test image by its own
statistics. The run mode's ``slide`` therefore applies to *every* BatchNorm layer, not only to batch-norm models;
the header records it; ``--bn-stats running`` gives the eval-mode forward.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from virtual_ihc_train.evaluation.protocol import ProtocolForward, reference_mode, resolve_protocol

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.runner import to_input, to_uint8
from napari_virtual_ihc.models import ModelSpec, build_generator, load_generator, save_generator
from napari_virtual_ihc.slides.base import ArraySlide

from .conftest import he_crops

KWARGS = {"ngf": 8, "n_blocks": 1, "norm": "instance", "spectral_norm": True, "reduction": 4}


def _ammfi(seed: int = 0) -> nn.Module:
    """A small AMMFI generator with random weights and non-trivial BatchNorm running statistics."""
    torch.manual_seed(seed)
    net = build_generator("ammfi_resnet", **KWARGS)
    g = torch.Generator().manual_seed(seed + 1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.3)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g) * 0.5 + 1)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.5)
    return net.eval()


def _train_bn_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ASP's test.py without --eval, as far as batch norm goes: BatchNorm in train mode, batch 1 (a fresh copy
    per image: train mode updates the running statistics). Spectral norm stays in eval mode (its stored
    vectors), as in the project's forward: see docs/training.md."""
    outs = []
    for i in range(x.shape[0]):
        model = copy.deepcopy(net).eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.train()
        with torch.no_grad():
            outs.append(model(x[i : i + 1]))
    return torch.cat(outs)


def _spec() -> ModelSpec:
    return ModelSpec(arch="ammfi_resnet", arch_kwargs=dict(KWARGS), name="ammfi test")


@pytest.fixture
def he(data_dir) -> torch.Tensor:
    crops = np.stack(he_crops(data_dir, 2, 64, seed=11))
    return to_input(crops, "minus_one_one")


def test_protocol_forward_is_the_train_mode_bn_forward_and_running_overrides(he):
    net = _ammfi()
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 4  # 2 attention modules x 2
    spec = reference_mode(_spec(), net)
    assert spec.bn_stats == "slide"  # the header records ASP's test mode for the attention's BN
    mode = resolve_protocol(net, spec)
    assert mode.slide_batch_norm and mode.source["bn_stats"] == "checkpoint" and not mode.warnings

    ref = _train_bn_forward(net, he)
    got = ProtocolForward(net, mode)(he)
    with torch.no_grad():
        eval_out = net(he)
    diff, gap = (got - ref).abs().max().item(), (eval_out - ref).abs().max().item()
    print(f"AMMFI protocol vs train-mode-BN forward: max {diff:.2e}; eval mode differs by {gap:.3f}")
    assert diff < 5e-4  # float rounding through the random net (measured 6.7e-5 here)
    assert gap > 0.05  # the running statistics really give another image here

    # the override: eval mode (running statistics) is the plain eval forward
    running = resolve_protocol(net, spec, bn_stats="running")
    assert not running.slide_batch_norm and running.source["bn_stats"] == "settings"
    assert torch.allclose(ProtocolForward(net, running)(he), eval_out, atol=1e-6)


def test_slide_is_still_refused_for_a_model_without_batch_norm():
    net = build_generator("asp_resnet", ngf=4, n_blocks=1, norm="instance")
    spec = reference_mode(ModelSpec(arch="asp_resnet", arch_kwargs={"ngf": 4, "n_blocks": 1}), net)
    assert spec.bn_stats is None
    mode = resolve_protocol(net, spec, bn_stats="slide")
    assert not mode.slide_batch_norm and "no BatchNorm layers" in mode.warnings[0]


def test_stain_runs_the_attention_bn_as_asp_test_py(tmp_path, data_dir):
    """The plugin's engine (``stain``): on an image small enough to run whole, the header's ``slide`` gives the
    train-mode-BN forward, ``bn_stats=running`` the eval forward."""
    import zarr

    net = _ammfi(seed=3)
    path = save_generator(tmp_path / "ammfi.safetensors", net, reference_mode(_spec(), net))
    model = load_generator(path)
    assert model.spec.bn_stats == "slide"
    img = he_crops(data_dir, 1, 128, seed=5)[0]
    x = to_input(img[None], "minus_one_one")
    ref = to_uint8(_train_bn_forward(model.module, x), "minus_one_one")[0]
    with torch.no_grad():
        eval_img = to_uint8(model.module.eval()(x), "minus_one_one")[0]

    def stain(name: str, **settings: object) -> np.ndarray:
        rep = stain_slide(ArraySlide(img, 0.5), model, tmp_path / name, EngineSettings(tile=64, **settings))
        assert rep.settings["run_mode"]["bn_stats"] == (settings.get("bn_stats") or "slide")
        return np.asarray(zarr.open_group(str(tmp_path / name), mode="r")["0"][:]).transpose(1, 2, 0)

    slide_out = stain("s.ome.zarr")
    assert np.abs(slide_out.astype(int) - ref.astype(int)).max() <= 1
    assert np.abs(eval_img.astype(int) - ref.astype(int)).max() > 5
    running_out = stain("r.ome.zarr", bn_stats="running")
    assert np.abs(running_out.astype(int) - eval_img.astype(int)).max() <= 1


def test_evaluate_runs_ammfi_under_asp_protocol_and_reports_deviations(tmp_path, data_dir, he):
    """``evaluate --checkpoint`` on an AMMFI export: the header's ``slide`` for the attention BN, the figure
    of the train-mode-BN forward, and the report's deviations (per-image BN pass, spectral norm)."""
    import json

    from PIL import Image
    from skimage.metrics import peak_signal_noise_ratio
    from virtual_ihc_train.cli import main
    from virtual_ihc_train.reporting import to_uint8 as tensor2im

    net = _ammfi(seed=4)
    ckpt = save_generator(tmp_path / "ammfi.safetensors", net, reference_mode(_spec(), net))
    crops = he_crops(data_dir, 2, 64, seed=11)
    for sub in ("he", "ihc"):
        (tmp_path / sub).mkdir()
    for i, crop in enumerate(crops):
        Image.fromarray(crop).save(tmp_path / "he" / f"{i}.png")
        Image.fromarray(crop[:, :, ::-1].copy()).save(tmp_path / "ihc" / f"{i}.png")
    fake = [tensor2im(f) for f in _train_bn_forward(net, he)]  # pix2pix's tensor2im, as evaluate
    want = np.mean(
        [peak_signal_noise_ratio(c[:, :, ::-1], f, data_range=255) for c, f in zip(crops, fake, strict=True)]
    )

    def evaluate(out: str, *extra: str) -> dict:
        args = [
            "evaluate",
            "--checkpoint",
            str(ckpt),
            "--paired",
            str(tmp_path / "he"),
            str(tmp_path / "ihc"),
        ]
        assert main([*args, "--out", str(tmp_path / out), "--metrics", "psnr", "--no-progress", *extra]) == 0
        return json.loads((tmp_path / out / "metrics.json").read_text())

    result = evaluate("ev")
    assert (
        result["protocol"]["bn_stats"] == "slide" and result["protocol"]["source"]["bn_stats"] == "checkpoint"
    )
    assert result["summary"]["overall"]["psnr"] == pytest.approx(want, abs=1e-3)
    assert any("own statistics" in d for d in result["deviations"])
    assert any("spectral norm" in d for d in result["deviations"])
    running = evaluate("ev_running", "--bn-stats", "running")
    assert any("running statistics (eval mode)" in d for d in running["deviations"])
    a = np.asarray(Image.open(tmp_path / "ev" / "generated" / "0.png"), dtype=int)
    b = np.asarray(Image.open(tmp_path / "ev_running" / "generated" / "0.png"), dtype=int)
    assert np.abs(a - fake[0]).max() <= 1 and np.abs(b - a).max() > 5  # eval mode: another image
