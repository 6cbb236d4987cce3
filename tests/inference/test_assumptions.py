"""Say what is assumed: an unknown µm/px and the reference test.py's mode are said where the model is loaded
and in run.json; an IHC -> H&E checkpoint is refused with the name of the file to use instead."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage.io import imsave

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.models import WrongDirectionError, build_generator, load_generator


def _save(path, **kwargs):
    torch.manual_seed(0)
    torch.save(build_generator("resnet", ngf=4, n_blocks=1, **kwargs).state_dict(), path)
    return path


@pytest.mark.parametrize(
    ("name", "other"),
    [
        ("latest_net_G_B.pth", "latest_net_G_A.pth"),
        ("200_netG_B.pth", "200_netG_A.pth"),
        ("bci_ihc2he.pth", "bci_he2ihc.pth"),
    ],
)
def test_ihc_to_he_checkpoints_are_refused_naming_the_other_file(tmp_path, name, other):
    _save(tmp_path / name)
    (tmp_path / other).write_bytes((tmp_path / name).read_bytes())
    with pytest.raises(WrongDirectionError, match=other.replace(".", r"\.")) as info:
        load_generator(tmp_path / name)
    assert "exists" in str(info.value)  # it is right there
    assert load_generator(tmp_path / other).spec.arch == "resnet"  # the H&E -> IHC half loads


def test_a_checkpoint_holding_only_netG_B_is_refused(tmp_path):
    torch.save(
        {"netG_B": build_generator("resnet", ngf=4, n_blocks=1).state_dict()}, tmp_path / "cyclegan.pth"
    )
    with pytest.raises(WrongDirectionError, match="netG_A"):
        load_generator(tmp_path / "cyclegan.pth")


def test_cli_says_what_it_assumes_and_records_it(tmp_path, he_1024, capsys):
    model = _save(tmp_path / "latest_net_G.pth", norm="batch")
    slide = tmp_path / "case.png"
    imsave(slide, np.ascontiguousarray(he_1024[:160, :160]), check_contrast=False)
    out = tmp_path / "out"
    assert (
        main(["stain", str(slide), "--model", str(model), "--out", str(out), "--quiet", "--tile", "96"]) == 0
    )
    err = capsys.readouterr().err
    assert "note: imported checkpoint: runs as the papers' test.py" in err
    assert "--model-mpp" in err and "warning: case.png: no µm/px recorded" in err
    run = json.loads((out / "case.run.json").read_text())
    assert any("--model-mpp" in w for w in run["warnings"])
    assert run["settings"]["run_mode"]["bn_stats"] == "slide"
    # Told the resolution and eval mode: no warning, and it is recorded.
    out2 = tmp_path / "out2"
    args = ["stain", str(slide), "--model", str(model), "--out", str(out2), "--quiet", "--tile", "96"]
    assert main([*args, "--model-mpp", "0.5", "--bn-stats", "running", "--dropout", "off"]) == 0
    run2 = json.loads((out2 / "case.run.json").read_text())
    assert run2["warnings"] == [] and run2["settings"]["run_mode"]["bn_stats"] == "running"
    assert main([*args, "--dropout", "mean:1"]) == 2
    assert "mean:N" in capsys.readouterr().err
