"""The project's safetensors format: round trip, header, atomic write, overrides, format version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from napari_virtual_ihc.models import (
    FORMAT_VERSION,
    GENERATORS,
    HEADER_KEY,
    ModelSpec,
    ShapeMismatchError,
    UnknownArchitectureError,
    UnsupportedFormatVersionError,
    build_generator,
    file_sha256,
    load_generator,
    norm_kind,
    register_generator,
    save_generator,
)


def _spec(**kw) -> ModelSpec:
    base = dict(
        arch="resnet",
        arch_kwargs={"ngf": 8, "n_blocks": 3, "norm": "batch"},
        mpp=0.5,
        target_stain="HER2",
        name="tiny",
        provenance={"data": "BCI", "preset": "pyramidp2p", "epochs": 3, "git": "abc123"},
    )
    base.update(kw)
    return ModelSpec(**base)


def _trained_like(spec: ModelSpec) -> torch.nn.Module:
    net = build_generator(spec.arch, **spec.arch_kwargs)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(
                    torch.rand_like(t) + 0.5 if name.endswith("running_var") else torch.randn_like(t) * 0.2
                )
    return net.eval()


def test_round_trip_keeps_weights_header_and_outputs(tmp_path: Path) -> None:
    spec = _spec()
    net = _trained_like(spec)
    out = save_generator(tmp_path / "sub" / "m.safetensors", net, spec)

    assert out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["m.safetensors"]  # no temp file left behind
    with safe_open(str(out), framework="pt") as fh:
        header = json.loads(fh.metadata()[HEADER_KEY])
    assert header["arch"] == "resnet"
    assert header["arch_kwargs"] == {"ngf": 8, "n_blocks": 3, "norm": "batch"}
    assert header["mpp"] == 0.5
    assert header["target_stain"] == "HER2"
    assert header["input_norm"] == header["output_norm"] == "minus_one_one"
    assert header["provenance"]["git"] == "abc123"
    assert header["format_version"] == FORMAT_VERSION

    loaded = load_generator(out)
    assert loaded.spec == spec
    assert loaded.sha256 == file_sha256(out) and len(loaded.sha256) == 64
    assert loaded.source == str(out.resolve())
    assert not loaded.module.training
    assert norm_kind(loaded.module) == "batch"
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), net(x))


def test_overrides_replace_spec_fields(tmp_path: Path) -> None:
    spec = _spec()
    path = save_generator(tmp_path / "m.safetensors", _trained_like(spec), spec)
    loaded = load_generator(path, mpp=0.25, name="renamed", target_stain="PD-L1")
    assert (loaded.spec.mpp, loaded.spec.name, loaded.spec.target_stain) == (0.25, "renamed", "PD-L1")
    assert load_generator(path, mpp=None).spec.mpp == 0.5  # None means "not given"


def test_save_refuses_a_spec_that_does_not_describe_the_module(tmp_path: Path) -> None:
    net = build_generator("resnet", ngf=8, n_blocks=3)
    with pytest.raises(ShapeMismatchError, match="missing keys"):
        save_generator(tmp_path / "m.safetensors", net, _spec(arch_kwargs={"ngf": 8, "n_blocks": 4}))
    with pytest.raises(UnknownArchitectureError):
        save_generator(tmp_path / "m.safetensors", net, _spec(arch="no_such_net"))
    assert list(tmp_path.iterdir()) == []


def test_save_replaces_an_existing_file_atomically(tmp_path: Path) -> None:
    spec = _spec()
    path = tmp_path / "m.safetensors"
    save_generator(path, _trained_like(spec), spec)
    first = file_sha256(path)
    save_generator(path, _trained_like(spec), spec)
    assert file_sha256(path) != first
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_newer_format_version_is_refused_clearly(tmp_path: Path) -> None:
    net = build_generator("resnet", ngf=8, n_blocks=1)
    header = _spec(arch_kwargs={"ngf": 8, "n_blocks": 1}, format_version=FORMAT_VERSION + 1).to_dict()
    path = tmp_path / "future.safetensors"
    save_file(dict(net.state_dict()), str(path), metadata={HEADER_KEY: json.dumps(header)})
    with pytest.raises(UnsupportedFormatVersionError, match=f"version {FORMAT_VERSION + 1}.*upgrade"):
        load_generator(path)


def test_header_with_unknown_architecture(tmp_path: Path) -> None:
    net = build_generator("resnet", ngf=8, n_blocks=1)
    header = _spec(arch="transformer_9000").to_dict()
    path = tmp_path / "alien.safetensors"
    save_file(dict(net.state_dict()), str(path), metadata={HEADER_KEY: json.dumps(header)})
    with pytest.raises(UnknownArchitectureError, match="transformer_9000"):
        load_generator(path)


def test_bare_safetensors_state_dict_is_detected_like_a_pth(tmp_path: Path) -> None:
    net = _trained_like(_spec(arch_kwargs={"ngf": 8, "n_blocks": 6, "norm": "instance"}))
    path = tmp_path / "bare.safetensors"
    save_file(dict(net.state_dict()), str(path))
    loaded = load_generator(path)
    assert loaded.spec.arch == "resnet" and loaded.spec.arch_kwargs["n_blocks"] == 6
    assert loaded.spec.mpp is None


def test_registry_accepts_new_architectures(tmp_path: Path) -> None:
    @register_generator("test_tiny_conv")
    def _tiny(ch: int = 4) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(3, ch, 3, padding=1), torch.nn.Conv2d(ch, 3, 1))

    try:
        assert "test_tiny_conv" in GENERATORS
        net = build_generator("test_tiny_conv", ch=5)
        spec = ModelSpec(arch="test_tiny_conv", arch_kwargs={"ch": 5}, mpp=1.0)
        loaded = load_generator(save_generator(tmp_path / "t.safetensors", net, spec))
        assert loaded.module[0].out_channels == 5
        assert norm_kind(loaded.module) == "none"
    finally:
        GENERATORS.pop("test_tiny_conv", None)
    with pytest.raises(UnknownArchitectureError, match="bad arguments"):
        build_generator("resnet", n_blockz=3)
    with pytest.raises(UnknownArchitectureError, match="norm"):
        build_generator("resnet", norm="group")
