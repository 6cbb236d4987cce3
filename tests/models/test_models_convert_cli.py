"""``virtual-ihc convert``: a reference .pth becomes a project checkpoint that loads with its header."""

from __future__ import annotations

from pathlib import Path

import torch

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.models import build_generator, load_generator


def test_convert_writes_loadable_safetensors_with_mpp(tmp_path: Path, capsys) -> None:
    net = build_generator("resnet", ngf=8, n_blocks=6, norm="instance").eval()
    torch.save(net.state_dict(), tmp_path / "latest_net_G_A.pth")
    out = tmp_path / "her2.safetensors"
    rc = main(
        [
            "convert",
            str(tmp_path / "latest_net_G_A.pth"),
            str(out),
            "--model-mpp",
            "0.5",
            "--name",
            "cyclegan-her2",
        ]
    )
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    loaded = load_generator(out)
    assert loaded.spec.mpp == 0.5 and loaded.spec.name == "cyclegan-her2"
    assert loaded.spec.arch_kwargs["n_blocks"] == 6
    assert len(loaded.spec.provenance["source_sha256"]) == 64
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), net(x))


def test_convert_reports_errors_without_writing(tmp_path: Path, capsys) -> None:
    net = build_generator("resnet", ngf=8, n_blocks=2)
    torch.save(net.state_dict(), tmp_path / "m.pth")
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(tmp_path / "m.pth"), str(out), "--n-blocks", "4"]) == 1
    assert "missing keys" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "absent.pth"), str(out)]) == 1
    assert "not found" in capsys.readouterr().err
    assert not out.exists()
