"""A generator with a tumour-class channel is a first-class checkpoint: its header says so; the engine, the CLI
(``--tumour-class``, ``--classifier``) supply the plane; without a class it is refused, never run on zeros."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from skimage.io import imread, imsave

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.errors import ModelInputError
from napari_virtual_ihc.models import (
    ClassChannelError,
    ModelSpec,
    build_generator,
    load_generator,
    save_generator,
    supply_class_channel,
)
from napari_virtual_ihc.models.classifier import (
    ResNet34,
    class_plane_tilewise,
    load_classifier,
    load_imagenet_backbone,
    save_classifier,
)
from napari_virtual_ihc.slides.base import ArraySlide

HEADER = {"channel": 3, "classes": {"non-tumour": -1.0, "tumour": 1.0}, "classifier": "tumour.safetensors"}


@pytest.fixture
def class_model(tmp_path):
    torch.manual_seed(0)
    kwargs = {"input_nc": 4, "ngf": 4, "n_blocks": 1, "norm": "instance", "conditioning_planes": 1}
    g = build_generator("resnet", **kwargs)
    for p in g.parameters():
        p.data.normal_(0, 0.2)
    spec = ModelSpec(
        "resnet",
        kwargs,
        mpp=0.5,
        class_channel=HEADER,
        name="cg-class",
    )
    return save_generator(tmp_path / "cg.safetensors", g, spec)


@pytest.fixture
def he(data_dir):
    return np.ascontiguousarray(imread(data_dir / "tiatoolbox-target-image.png")[:256, :256, :3])


def test_torchvision_parameter_names_and_imagenet_loading():
    names = list(ResNet34().state_dict())
    assert names[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert "layer1.2.conv2.weight" in names and "layer4.0.downsample.0.weight" in names
    assert "layer3.5.bn2.running_var" in names and "layer3.6.conv1.weight" not in names  # 3, 4, 6, 3 blocks
    assert names[-2:] == ["fc.weight", "fc.bias"]
    assert sum(p.numel() for n, p in ResNet34(1000).named_parameters()) == 21_797_672  # torchvision resnet34
    imagenet = {
        k: torch.randn_like(v) if v.is_floating_point() else v for k, v in ResNet34(1000).state_dict().items()
    }
    m = ResNet34(2)
    loaded = load_imagenet_backbone(m, imagenet)
    assert "fc.weight" not in loaded and torch.equal(m.conv1.weight, imagenet["conv1.weight"])


def test_header_says_so_and_the_engine_refuses_without_a_class(class_model, he, tmp_path):
    model = load_generator(class_model)
    assert model.spec.class_channel == HEADER
    with pytest.raises(ModelInputError, match="tumour-class input channel"):
        stain_slide(ArraySlide(he, (0.5, 0.5)), model, tmp_path / "x.ome.zarr", EngineSettings(tile=128))
    with pytest.raises(ClassChannelError, match="not beside"):
        supply_class_channel(model)  # auto, and the named classifier is absent


def test_one_class_per_slide_is_the_fourth_plane(class_model, he, tmp_path):
    model = load_generator(class_model)
    x = torch.from_numpy(he).permute(2, 0, 1)[None].float() / 127.5 - 1
    for cls, value in (("tumour", 1.0), ("non-tumour", -1.0)):
        ready = supply_class_channel(model, cls)
        direct = model.module(torch.cat((x, torch.full_like(x[:, :1], value)), 1))
        torch.testing.assert_close(ready.module(x), direct)
    t = supply_class_channel(model, "tumour")
    n = supply_class_channel(model, "non-tumour")
    assert t.sha256 != n.sha256 != model.sha256  # separate stores per class choice
    rep = stain_slide(ArraySlide(he, (0.5, 0.5)), t, tmp_path / "t.ome.zarr", EngineSettings(tile=128))
    assert rep.tiles_done > 0
    stain_slide(ArraySlide(he, (0.5, 0.5)), n, tmp_path / "n.ome.zarr", EngineSettings(tile=128))
    stained = {c: np.asarray(zarr.open_group(str(tmp_path / f"{c}.ome.zarr"), mode="r")["0"]) for c in "tn"}
    diff = np.abs(stained["t"].astype(int) - stained["n"].astype(int))
    assert diff.mean() > 1.0  # the class reaches the engine's output (grey levels), not only rounding


def test_classifier_tilewise_plane_and_cli(class_model, he, tmp_path, capsys):
    torch.manual_seed(0)
    clf = ResNet34(2, width=8)
    save_classifier(tmp_path / "tumour.safetensors", clf.eval(), {"tile": 64})
    clf = load_classifier(tmp_path / "tumour.safetensors")
    x = torch.from_numpy(he).permute(2, 0, 1)[None].float() / 127.5 - 1
    plane = class_plane_tilewise(clf, x, 64)
    assert plane.shape == (1, 1, 256, 256) and set(plane.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(plane[0, 0, :64, :64], plane[0, 0, :1, :1].expand(64, 64))  # constant per tile
    # auto: the classifier named in the header, beside the checkpoint
    ready = supply_class_channel(load_generator(class_model))
    assert ready.module(x).shape == (1, 3, 256, 256)
    # the CLI: no class and no classifier -> clear message, exit 2; with a class -> stained
    png = tmp_path / "he.png"
    imsave(png, he, check_contrast=False)
    (tmp_path / "tumour.safetensors").unlink()
    assert (
        main(["stain", str(png), "--model", str(class_model), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    )
    assert "tumour-class input channel" in capsys.readouterr().err
    args = ["stain", str(png), "--model", str(class_model), "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*args, "--tumour-class", "tumour"]) == 0
    assert (tmp_path / "o" / "he.ome.zarr").is_dir()
