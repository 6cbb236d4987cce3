"""Reference checkpoints load by auto-detection and compute exactly what the module they came from computes.

The key lists below were dumped from the reference implementations (junyanz/pytorch-CycleGAN-and-pix2pix
layout as in balball/TDKstain ``models/networks.py``; lifangda01/AdaptiveSupervisedPatchNCE
``models/networks.py`` with ``--weight_norm spectral``), built with ngf 64.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from napari_virtual_ihc.models import build_generator, load_generator, norm_kind

# (key, shape) pairs from the reference ResnetGenerator(resnet_9blocks, norm instance, ngf 64): 48 keys.
RESNET9_INSTANCE = [
    ("model.1.weight", (64, 3, 7, 7)),
    ("model.1.bias", (64,)),
    ("model.4.weight", (128, 64, 3, 3)),
    ("model.4.bias", (128,)),
    ("model.7.weight", (256, 128, 3, 3)),
    ("model.7.bias", (256,)),
    ("model.10.conv_block.1.weight", (256, 256, 3, 3)),
    ("model.10.conv_block.1.bias", (256,)),
    ("model.10.conv_block.5.weight", (256, 256, 3, 3)),
    ("model.10.conv_block.5.bias", (256,)),
    ("model.18.conv_block.1.weight", (256, 256, 3, 3)),
    ("model.18.conv_block.5.bias", (256,)),
    ("model.19.weight", (256, 128, 3, 3)),
    ("model.19.bias", (128,)),
    ("model.22.weight", (128, 64, 3, 3)),
    ("model.22.bias", (64,)),
    ("model.26.weight", (3, 64, 7, 7)),
    ("model.26.bias", (3,)),
]
# resnet_9blocks, norm batch, dropout (PyramidPix2pix's setting): 140 keys; second conv at conv_block.6.
RESNET9_BATCH_DROPOUT = [
    ("model.1.weight", (64, 3, 7, 7)),
    ("model.2.weight", (64,)),
    ("model.2.bias", (64,)),
    ("model.2.running_mean", (64,)),
    ("model.2.running_var", (64,)),
    ("model.2.num_batches_tracked", ()),
    ("model.4.weight", (128, 64, 3, 3)),
    ("model.5.weight", (128,)),
    ("model.10.conv_block.1.weight", (256, 256, 3, 3)),
    ("model.10.conv_block.2.weight", (256,)),
    ("model.10.conv_block.2.running_var", (256,)),
    ("model.10.conv_block.6.weight", (256, 256, 3, 3)),
    ("model.10.conv_block.7.weight", (256,)),
    ("model.10.conv_block.7.num_batches_tracked", ()),
    ("model.22.weight", (128, 64, 3, 3)),
    ("model.23.running_mean", (64,)),
    ("model.26.weight", (3, 64, 7, 7)),
    ("model.26.bias", (3,)),
]
# TDKstain: resnet_9blocks, n_downsampling 3, instance norm: 52 keys, first block at model.13.
TDKSTAIN = [
    ("model.1.weight", (64, 3, 7, 7)),
    ("model.4.weight", (128, 64, 3, 3)),
    ("model.7.weight", (256, 128, 3, 3)),
    ("model.10.weight", (512, 256, 3, 3)),
    ("model.10.bias", (512,)),
    ("model.13.conv_block.1.weight", (512, 512, 3, 3)),
    ("model.13.conv_block.5.bias", (512,)),
    ("model.21.conv_block.5.weight", (512, 512, 3, 3)),
    ("model.22.weight", (512, 256, 3, 3)),
    ("model.25.weight", (256, 128, 3, 3)),
    ("model.28.weight", (128, 64, 3, 3)),
    ("model.28.bias", (64,)),
    ("model.32.weight", (3, 64, 7, 7)),
    ("model.32.bias", (3,)),
]
# pix2pix unet_256, batch norm: 82 keys.
UNET256 = [
    ("model.model.0.weight", (64, 3, 4, 4)),
    ("model.model.1.model.1.weight", (128, 64, 4, 4)),
    ("model.model.1.model.2.weight", (128,)),
    ("model.model.1.model.2.num_batches_tracked", ()),
    ("model.model.1.model.3.model.1.weight", (256, 128, 4, 4)),
    ("model.model.1.model.3.model.2.bias", (256,)),
    ("model.model.1.model.5.weight", (256, 64, 4, 4)),
    ("model.model.1.model.6.running_var", (64,)),
    ("model.model.3.weight", (128, 3, 4, 4)),
    ("model.model.3.bias", (3,)),
]
# ASP (MIST HER2 setting): resnet_6blocks, instance norm, spectral norm, anti-aliased: 76 keys.
ASP_RESNET6 = [
    ("model.1.bias", (64,)),
    ("model.1.weight_orig", (64, 3, 7, 7)),
    ("model.1.weight_u", (64,)),
    ("model.1.weight_v", (147,)),
    ("model.4.weight_orig", (128, 64, 3, 3)),
    ("model.4.weight_v", (576,)),
    ("model.7.filt", (128, 1, 3, 3)),
    ("model.12.conv_block.1.weight_orig", (256, 256, 3, 3)),
    ("model.12.conv_block.1.weight_v", (2304,)),
    ("model.12.conv_block.5.bias", (256,)),
    ("model.19.weight_orig", (128, 256, 3, 3)),
    ("model.19.weight_v", (2304,)),
    ("model.22.filt", (128, 1, 4, 4)),
    ("model.23.weight_orig", (64, 128, 3, 3)),
    ("model.27.bias", (3,)),
    ("model.27.weight_orig", (3, 64, 7, 7)),
    ("model.27.weight_u", (3,)),
    ("model.27.weight_v", (3136,)),
]


@pytest.mark.parametrize(
    ("arch", "kwargs", "expected", "n_keys"),
    [
        ("resnet", {"n_blocks": 9, "norm": "instance"}, RESNET9_INSTANCE, 48),
        ("resnet", {"n_blocks": 9, "norm": "batch", "use_dropout": True}, RESNET9_BATCH_DROPOUT, 140),
        ("resnet", {"n_blocks": 9, "norm": "instance", "n_downsampling": 3}, TDKSTAIN, 52),
        ("unet_256", {"norm": "batch"}, UNET256, 82),
        ("asp_resnet", {"n_blocks": 6, "norm": "instance"}, ASP_RESNET6, 76),
    ],
    ids=["resnet9-instance", "resnet9-batch-dropout", "tdkstain", "unet256", "asp-resnet6"],
)
def test_state_dict_keys_match_reference(arch: str, kwargs: dict, expected: list, n_keys: int) -> None:
    with torch.device("meta"):
        sd = build_generator(arch, ngf=64, **kwargs).state_dict()
    assert len(sd) == n_keys
    for key, shape in expected:
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial weights and batch-norm statistics (fresh BN stats would hide running-stat bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.dtype.is_floating_point or name.endswith(".filt"):
                continue
            noise = torch.randn(t.shape, generator=g) * 0.2
            t.copy_(noise.abs() + 0.5 if name.endswith("running_var") else noise)


LAYOUTS: list[tuple[str, str, dict[str, Any], int]] = [
    ("resnet9-instance", "resnet", {"ngf": 8, "n_blocks": 9, "norm": "instance"}, 32),
    ("resnet9-batch-dropout", "resnet", {"ngf": 8, "n_blocks": 9, "norm": "batch", "use_dropout": True}, 32),
    ("tdkstain", "resnet", {"ngf": 8, "n_blocks": 9, "norm": "instance", "n_downsampling": 3}, 32),
    ("unet256", "unet_256", {"ngf": 4, "norm": "batch"}, 256),
    ("asp-resnet6", "asp_resnet", {"ngf": 8, "n_blocks": 6, "norm": "instance"}, 32),
]


@pytest.mark.parametrize(("label", "arch", "kwargs", "size"), LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_pth_autodetected_output_equals_direct_forward(
    tmp_path: Path, label: str, arch: str, kwargs: dict, size: int
) -> None:
    torch.manual_seed(0)
    net = build_generator(arch, **kwargs)
    _randomise(net, seed=len(label))
    if arch == "asp_resnet":  # spectral norm's power-iteration vectors as a trained model would have them
        net.train()
        with torch.no_grad():
            net(torch.rand(1, 3, size, size) * 2 - 1)
    net.eval()
    path = tmp_path / f"{label}_net_G.pth"
    torch.save(net.state_dict(), path)  # exactly what the reference save_networks writes

    loaded = load_generator(path)

    assert loaded.spec.arch == arch
    for k, v in kwargs.items():
        assert loaded.spec.arch_kwargs[k] == v, k
    assert loaded.spec.mpp is None
    assert not loaded.module.training
    assert norm_kind(loaded.module) == kwargs["norm"]
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        expected = net(x)
        got = loaded.module(x)
    assert torch.equal(got, expected)
    assert expected.std() > 1e-3  # the comparison is not between two constant images


def test_pyramidpix2pix_dataparallel_nesting_is_unwrapped(tmp_path: Path) -> None:
    net = build_generator("resnet", ngf=8, n_blocks=9, norm="batch", use_dropout=True)
    _randomise(net, seed=3)
    net.eval()
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 200}, tmp_path / "latest_net_G.pth")
    loaded = load_generator(tmp_path / "latest_net_G.pth")
    assert loaded.spec.arch_kwargs["use_dropout"] is True
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), net(x))


def test_old_pytorch_instance_norm_running_stats_are_dropped(tmp_path: Path) -> None:
    """PyTorch 0.4-era CycleGAN checkpoints carry InstanceNorm running stats the reference code deletes."""
    net = build_generator("resnet", ngf=8, n_blocks=6, norm="instance")
    _randomise(net, seed=4)
    sd = dict(net.state_dict())
    sd["model.2.running_mean"] = torch.zeros(8)
    sd["model.2.running_var"] = torch.ones(8)
    sd["model.10.conv_block.2.running_mean"] = torch.zeros(32)
    torch.save(sd, tmp_path / "old.pth")
    loaded = load_generator(tmp_path / "old.pth")
    assert loaded.spec.arch_kwargs == {**loaded.spec.arch_kwargs, "norm": "instance", "n_blocks": 6}
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), net.eval()(x))
