"""Issue 29, checkpoint items: a header nested 100000 deep is a clear error (9), a class channel on
3-channel weights is refused at load, ``convert X X`` never overwrites its input, ``--dropout mean:N`` is
capped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.models import (
    CheckpointError,
    ModelSpec,
    build_generator,
    load_generator,
    save_generator,
)
from napari_virtual_ihc.models.checkpoint import HEADER_KEY


def tiny(tmp_path: Path, **spec_args: object) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    kwargs = {"ngf": 4, "n_blocks": 1, "norm": "instance"}
    module = build_generator("resnet", **kwargs).eval()
    spec = ModelSpec("resnet", kwargs, mpp=None, name="t", **spec_args)  # type: ignore[arg-type]
    return save_generator(tmp_path / "m.safetensors", module, spec), module


# --- 9. a deeply nested header -----------------------------------------------------------------------------
def test_a_header_nested_100000_deep_is_a_clear_error(tmp_path: Path, capsys) -> None:
    _, module = tiny(tmp_path)
    bomb = tmp_path / "deep.safetensors"
    save_file(
        {k: v.contiguous() for k, v in module.state_dict().items()},
        bomb,
        metadata={HEADER_KEY: "[" * 100000 + "]" * 100000, "format": "napari-virtual-ihc"},
    )
    with pytest.raises(CheckpointError, match="nested"):
        load_generator(bomb)
    assert main(["convert", str(bomb), str(tmp_path / "out.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "nested" in err and "Traceback" not in err and not (tmp_path / "out.safetensors").exists()
    (tmp_path / "s.png").write_bytes(b"")
    assert main(["stain", str(tmp_path / "s.png"), "--model", str(bomb), "--out", str(tmp_path / "o")]) == 2
    assert "nested" in capsys.readouterr().err


def test_a_huge_header_is_a_clear_error(tmp_path: Path) -> None:
    _, module = tiny(tmp_path)
    bomb = tmp_path / "big.safetensors"
    big = '{"arch": "resnet", "name": "' + "x" * (2 << 20) + '"}'
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, bomb, metadata={HEADER_KEY: big})
    with pytest.raises(CheckpointError, match=r"header of .* bytes"):
        load_generator(bomb)


# --- a class channel on weights without one ------------------------------------------------------------------
def test_a_class_channel_on_three_channel_weights_is_refused_at_load(tmp_path: Path) -> None:
    header = {"channel": 3, "classes": {"non-tumour": -1.0, "tumour": 1.0}}
    with pytest.raises(CheckpointError, match="class channel"):
        tiny(tmp_path, class_channel=header)  # refused on write
    path, module = tiny(tmp_path)
    import json

    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = dict(fh.metadata())
    spec = json.loads(meta[HEADER_KEY])
    spec["class_channel"] = header
    meta[HEADER_KEY] = json.dumps(spec)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, path, metadata=meta)
    with pytest.raises(CheckpointError, match="class channel"):
        load_generator(path)


# --- convert X X -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_convert_never_writes_over_its_input(tmp_path: Path, capsys, how: str) -> None:
    path, _ = tiny(tmp_path)
    before = path.read_bytes()
    dst = tmp_path / "dst.safetensors"
    if how == "same":
        dst = path
    elif how == "symlink":
        dst.symlink_to(path)
    else:
        os.link(path, dst)
    assert main(["convert", str(path), str(dst)]) == 1
    assert "is the input" in capsys.readouterr().err
    assert path.read_bytes() == before


# --- --dropout mean:N ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["mean:65", "mean:100000"])
def test_dropout_mean_samples_are_capped(tmp_path: Path, capsys, value: str) -> None:
    path, _ = tiny(tmp_path)
    (tmp_path / "s.png").write_bytes(b"")
    code = main(
        [
            "stain",
            str(tmp_path / "s.png"),
            "--model",
            str(path),
            "--out",
            str(tmp_path / "o"),
            "--dropout",
            value,
        ]
    )
    assert code == 2
    assert "at most 64" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
