"""Issue 20, models part: headers checked before allocating, NaN weights refused, BN ResNets without dropout
detected, code-carrying zip pickles named as such, integer weights refused, checkpoint file modes."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from napari_virtual_ihc.models import (
    HEADER_KEY,
    CheckpointError,
    CorruptCheckpointError,
    InvalidSpecError,
    ModelSpec,
    NonFiniteWeightsError,
    UnknownArchitectureError,
    UnsafeCheckpointError,
    build_generator,
    load_generator,
    norm_kind,
    save_generator,
)

from .limited import run_capped


def _tiny_resnet() -> torch.nn.Module:
    return build_generator("resnet", ngf=4, n_blocks=1, norm="instance")


def _write_with_header(path: Path, sd: dict[str, torch.Tensor], header: dict[str, Any]) -> Path:
    save_file(
        {k: v.contiguous() for k, v in sd.items()},
        str(path),
        metadata={HEADER_KEY: json.dumps(header), "format": "napari-virtual-ihc"},
    )
    return path


def _header(**arch_kwargs: Any) -> dict[str, Any]:
    kwargs = {"ngf": 4, "n_blocks": 1, "norm": "instance", **arch_kwargs}
    return {"arch": "resnet", "arch_kwargs": kwargs, "mpp": 0.5, "format_version": 1}


# --- item 8: header validated before allocating ---------------------------------------------------------
@pytest.mark.parametrize(
    ("arch_kwargs", "match"),
    [({"n_downsampling": 20}, "n_downsampling = 20"), ({"n_blocks": 100_000}, "n_blocks = 100000")],
    ids=["n_downsampling-20", "n_blocks-100000"],
)
def test_absurd_header_arguments_are_refused_before_building(
    tmp_path: Path, arch_kwargs: dict, match: str
) -> None:
    path = _write_with_header(
        tmp_path / "bomb.safetensors", dict(_tiny_resnet().state_dict()), _header(**arch_kwargs)
    )
    assert path.stat().st_size < 200_000
    code = f"""
from napari_virtual_ihc.models import load_generator, CheckpointError
try:
    load_generator({str(path)!r})
except CheckpointError as e:
    print("REFUSED", e)
"""
    res = run_capped(code)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "REFUSED" in res.stdout and match in res.stdout, res.stdout
    assert res.peak_rss_mb is not None and res.peak_rss_mb < 1024


def test_in_bounds_header_that_does_not_fit_is_refused_before_building(tmp_path: Path) -> None:
    """Arguments inside the bounds but a 64-block, 8192-channel net (~300 GB): the shapes are compared on
    the meta device, so the refusal costs nothing."""
    header = _header(ngf=512, n_downsampling=4, n_blocks=64)
    path = _write_with_header(tmp_path / "big.safetensors", dict(_tiny_resnet().state_dict()), header)
    res = run_capped(
        f"""
from napari_virtual_ihc.models import load_generator, ShapeMismatchError
try:
    load_generator({str(path)!r})
except ShapeMismatchError as e:
    print("REFUSED", str(e)[:200])
"""
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "REFUSED" in res.stdout and "does not fit" in res.stdout
    assert res.peak_rss_mb is not None and res.peak_rss_mb < 1024


def test_command_line_overrides_are_bounded_too(tmp_path: Path) -> None:
    path = tmp_path / "net_G.pth"
    torch.save(_tiny_resnet().state_dict(), path)
    with pytest.raises(UnknownArchitectureError, match="n_blocks = 100000"):  # the bound, before building
        load_generator(path, n_blocks=100_000)


# --- item 12: header values validated on load and on write ----------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("input_norm", "bogus", "input_norm"),
        ("output_norm", 3, "output_norm"),
        ("mpp", 0, "mpp = 0"),
        ("mpp", float("nan"), "mpp must be a finite"),
        ("mpp", "0.5", "mpp must be a finite"),
        ("arch_kwargs", [1, 2], "arch_kwargs must be an object"),
    ],
)
def test_bad_header_values_are_refused_on_load(tmp_path: Path, field: str, value: Any, match: str) -> None:
    header = {**_header(), field: value}
    path = _write_with_header(tmp_path / "bad.safetensors", dict(_tiny_resnet().state_dict()), header)
    with pytest.raises(InvalidSpecError, match=match) as info:
        load_generator(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"input_norm": "bogus"}, "input_norm"), ({"mpp": 0.0}, "mpp"), ({"mpp": math.nan}, "mpp")],
)
def test_bad_header_values_are_refused_on_write(tmp_path: Path, changes: dict, match: str) -> None:
    net = _tiny_resnet()
    spec = ModelSpec(arch="resnet", arch_kwargs={"ngf": 4, "n_blocks": 1, "norm": "instance"}, **changes)
    target = tmp_path / "m.safetensors"
    with pytest.raises(InvalidSpecError, match=match):
        save_generator(target, net, spec)
    assert not target.exists() and not list(tmp_path.iterdir())


# --- item 5: non-finite weights refused on load and on export/save --------------------------------------
def _nan_net() -> torch.nn.Module:
    net = _tiny_resnet()
    with torch.no_grad():
        net.model[1].weight[0, 0, 0, 0] = float("nan")
        net.model[4].bias.fill_(float("inf"))
    return net


def test_nan_weights_refused_on_load(tmp_path: Path) -> None:
    net = _nan_net()
    path = _write_with_header(tmp_path / "nan.safetensors", dict(net.state_dict()), _header())
    with pytest.raises(NonFiniteWeightsError, match=r"NaN or infinity \(model.1.weight, model.4.bias\)"):
        load_generator(path)
    torch.save(net.state_dict(), tmp_path / "nan_net_G.pth")
    with pytest.raises(NonFiniteWeightsError):
        load_generator(tmp_path / "nan_net_G.pth")


def test_nan_weights_refused_on_save(tmp_path: Path) -> None:
    spec = ModelSpec(arch="resnet", arch_kwargs={"ngf": 4, "n_blocks": 1, "norm": "instance"}, mpp=0.5)
    with pytest.raises(NonFiniteWeightsError):
        save_generator(tmp_path / "nan.safetensors", _nan_net(), spec)
    assert not list(tmp_path.iterdir())


# --- item 17: integer weights and file modes ------------------------------------------------------------
def test_int64_float_weights_are_refused_not_cast(tmp_path: Path) -> None:
    sd = dict(_tiny_resnet().state_dict())
    sd["model.1.weight"] = torch.ones_like(sd["model.1.weight"], dtype=torch.int64)
    torch.save(sd, tmp_path / "int_net_G.pth")
    with pytest.raises(CorruptCheckpointError, match=r"model.1.weight \(int64\).*refused rather than cast"):
        load_generator(tmp_path / "int_net_G.pth")
    path = _write_with_header(tmp_path / "int.safetensors", sd, _header())
    with pytest.raises(CorruptCheckpointError, match="int64"):
        load_generator(path)


def test_integer_batch_counters_still_load(tmp_path: Path) -> None:
    net = build_generator("resnet", ngf=4, n_blocks=1, norm="batch")
    assert any(v.dtype == torch.int64 for v in net.state_dict().values())  # num_batches_tracked
    torch.save(net.state_dict(), tmp_path / "bn_net_G.pth")
    assert load_generator(tmp_path / "bn_net_G.pth").spec.arch_kwargs["norm"] == "batch"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_safetensors_mode_follows_umask(tmp_path: Path, umask: int, mode: int) -> None:
    spec = ModelSpec(arch="resnet", arch_kwargs={"ngf": 4, "n_blocks": 1, "norm": "instance"}, mpp=0.5)
    old = os.umask(umask)
    try:
        out = save_generator(tmp_path / "m.safetensors", _tiny_resnet(), spec)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == mode


# --- item 16: zip-format pickle with code ---------------------------------------------------------------
class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickle_calling_os_system_is_named_as_code_and_never_runs(tmp_path: Path, zip_format: bool) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save(
        {"model.1.weight": torch.zeros(2), "x": _RunsCode(marker)},
        path,
        _use_new_zipfile_serialization=zip_format,
    )
    with pytest.raises(UnsafeCheckpointError) as info:
        load_generator(path)
    msg = str(info.value)
    assert "contains code" in msg or "names Python code" in msg
    assert "system" in msg and "nothing in it ran" in msg
    assert "weights_only" not in msg
    assert not marker.exists()


def test_zip_with_unknown_class_never_suggests_weights_only_false(tmp_path: Path) -> None:
    path = tmp_path / "obj.pth"
    torch.save(
        {"w": torch.zeros(1), "opt": torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1)}, path
    )
    with pytest.raises(CheckpointError) as info:
        load_generator(path)
    assert "weights_only" not in str(info.value)


def test_zip_bomb_is_refused_unread(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("bomb/data/0", b"\x00" * (64 << 20))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(CorruptCheckpointError, match="claim"):
        load_generator(path)


# --- item 14: every norm x dropout x blocks combination of the reference ResNet layouts -----------------
def _randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.dtype.is_floating_point or name.endswith(".filt"):
                continue
            noise = torch.randn(t.shape, generator=g) * 0.2
            t.copy_(noise.abs() + 0.5 if name.endswith("running_var") else noise)


# resnet_6blocks / resnet_9blocks with every norm and dropout (reflect padding, the reference default);
# ASP's resnet_6blocks with every norm and dropout; zero padding where it shifts the slots (BN, no dropout).
COMBOS = [
    *[
        ("resnet", norm, dropout, blocks, "reflect")
        for norm in ("instance", "batch", "none")
        for dropout in (False, True)
        for blocks in (6, 9)
    ],
    *[
        ("asp_resnet", norm, dropout, 6, "reflect")
        for norm in ("instance", "batch", "none")
        for dropout in (False, True)
    ],
    *[(arch, "batch", dropout, 6, "zero") for arch in ("resnet", "asp_resnet") for dropout in (False, True)],
]


@pytest.mark.parametrize(
    ("arch", "norm", "dropout", "blocks", "padding"),
    COMBOS,
    ids=[f"{a}-{n}-{'drop' if d else 'nodrop'}-{b}blocks-{p}" for a, n, d, b, p in COMBOS],
)
def test_reference_resnet_layouts_are_detected(
    tmp_path: Path, arch: str, norm: str, dropout: bool, blocks: int, padding: str
) -> None:
    kwargs = {"ngf": 4, "norm": norm, "use_dropout": dropout, "n_blocks": blocks, "padding_type": padding}
    net = build_generator(arch, **kwargs)
    _randomise(net, seed=blocks + 3 * dropout)
    if arch == "asp_resnet":  # spectral norm's power-iteration vectors as after training
        net.train()
        with torch.no_grad():
            net(torch.rand(1, 3, 32, 32) * 2 - 1)
    net.eval()
    path = tmp_path / "latest_net_G.pth"
    torch.save(net.state_dict(), path)

    loaded = load_generator(path)

    assert loaded.spec.arch == arch
    for k, v in kwargs.items():
        assert loaded.spec.arch_kwargs[k] == v, k
    assert norm_kind(loaded.module) == norm
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), net(x))


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
@pytest.mark.parametrize("arch", ["unet_256", "unet_128"])
def test_reference_unet_layouts_are_detected(tmp_path: Path, arch: str, norm: str) -> None:
    """U-Net dropout has no parameters: detection keeps the reference default (False); the output of an
    eval-mode net does not depend on it."""
    net = build_generator(arch, ngf=2, norm=norm, use_dropout=True)
    _randomise(net, seed=5)
    net.eval()
    torch.save(net.state_dict(), tmp_path / "unet_net_G.pth")
    loaded = load_generator(tmp_path / "unet_net_G.pth")
    assert loaded.spec.arch == arch and loaded.spec.arch_kwargs["norm"] == norm
    size = 256 if arch == "unet_256" else 128
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), net(x))
