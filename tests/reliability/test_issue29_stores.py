"""Issue 29, store items: a slide's identity is its whole content (1), a refused run writes nothing (2),
lock files are never followed through a link (14), store names stay distinct (13) and fit NAME_MAX."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
from skimage.io import imread

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.ihc_store import PROVENANCE_KEY, source_identity
from napari_virtual_ihc.models import ModelSpec, build_generator, save_generator
from napari_virtual_ihc.slides import open_slide


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    module = build_generator("resnet", ngf=4, n_blocks=1, norm="instance").eval()
    spec = ModelSpec("resnet", {"ngf": 4, "n_blocks": 1, "norm": "instance"}, mpp=None, name="t")
    return save_generator(tmp_path_factory.mktemp("ckpt") / "m.safetensors", module, spec)


@pytest.fixture(scope="module")
def he(data_dir: Path) -> np.ndarray:
    return np.ascontiguousarray(imread(data_dir / "tiatoolbox-target-image.png")[:, :, :3])


def stain(slide: Path | str, checkpoint: Path, out: Path, *extra: str) -> int:
    args = [str(slide)] if isinstance(slide, Path | str) else list(slide)
    return main(
        ["stain", *args, "--model", str(checkpoint), "--out", str(out), "--tile", "128", "--quiet", *extra]
    )


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def glass_with_tissue(he: np.ndarray, flip: bool) -> np.ndarray:
    """1024^2 of white glass with tissue in rows 360-660: equal first and last MiB, another middle."""
    img = np.full((1024, 1024, 3), 245, np.uint8)
    tissue = he[:300, :300]
    img[360:660, 360:660] = tissue[::-1] if flip else tissue
    return img


# --- 1. identity is the whole content ---------------------------------------------------------------------
def test_equal_size_tiffs_differing_in_the_middle_never_share_a_store(tmp_path, checkpoint, he, capsys):
    for name, flip in (("a", False), ("b", True)):
        (tmp_path / name).mkdir()
        tifffile.imwrite(tmp_path / name / "slide.tif", glass_with_tissue(he, flip), photometric="rgb")
    a, b = tmp_path / "a" / "slide.tif", tmp_path / "b" / "slide.tif"
    assert a.stat().st_size == b.stat().st_size > 3 << 20
    with open_slide(a) as sa, open_slide(b) as sb:
        assert source_identity(sa)["sha256"] != source_identity(sb)["sha256"]
    out = tmp_path / "o"
    assert stain(a, checkpoint, out, "--region", "360,360,128,128") == 0
    first = tree(out / "slide.ome.zarr")
    assert stain(b, checkpoint, out, "--region", "360,360,128,128") == 1
    assert "another slide with the same name" in capsys.readouterr().err
    assert tree(out / "slide.ome.zarr") == first


def test_a_store_of_the_old_identity_is_refused_with_a_clear_message(tmp_path, checkpoint, he, capsys):
    slide = tmp_path / "s.png"
    tifffile.imwrite(slide.with_suffix(".tif"), he[:200, :200], photometric="rgb")
    slide = slide.with_suffix(".tif")
    out = tmp_path / "o"
    assert stain(slide, checkpoint, out) == 0
    store = out / "s.ome.zarr"
    attrs = json.loads((store / ".zattrs").read_text())
    old = {"size": slide.stat().st_size, "sha256": "0" * 64}  # what the head+tail identity recorded
    attrs[PROVENANCE_KEY]["run_key"]["source"] = old
    (store / ".zattrs").write_text(json.dumps(attrs))
    before = tree(store)
    capsys.readouterr()
    assert stain(slide, checkpoint, out) == 1
    err = capsys.readouterr().err
    assert "older version" in err and "cannot be verified" in err
    assert tree(store) == before
    assert zarr.open_group(str(store), mode="r")["0"].shape[1:] == (200, 200)  # old stores stay readable


# --- 2. a refused run writes nothing ------------------------------------------------------------------------
def test_a_refused_run_leaves_the_other_slides_record_alone(tmp_path, checkpoint, he, capsys):
    for name, img in (("a", he[:200, :200]), ("b", he[200:400, :200])):
        (tmp_path / name).mkdir()
        tifffile.imwrite(tmp_path / name / "slide.tif", img, photometric="rgb")
    out = tmp_path / "o"
    assert stain(tmp_path / "a" / "slide.tif", checkpoint, out) == 0
    record = (out / "slide.run.json").read_bytes()
    assert stain(tmp_path / "b" / "slide.tif", checkpoint, out) == 1
    assert "another slide with the same name" in capsys.readouterr().err
    assert (out / "slide.run.json").read_bytes() == record
    assert sorted(p.name for p in out.iterdir()) == [
        ".slide.ome.zarr.lock",
        "slide.ome.zarr",
        "slide.run.json",
    ]


# --- 14. a lock file is never followed through a link ------------------------------------------------------
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_linked_lock_file_is_refused_and_its_target_untouched(tmp_path, checkpoint, he, capsys, link):
    tifffile.imwrite(tmp_path / "he256.tif", he[:256, :256], photometric="rgb")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "o"
    out.mkdir()
    lock = out / ".he256.ome.zarr.lock"
    if link == "symlink":
        lock.symlink_to("../victim.txt")
    else:
        os.link(victim, lock)
    assert stain(tmp_path / "he256.tif", checkpoint, out) == 1
    err = capsys.readouterr().err
    assert "lock file" in err and "link" in err and "Traceback" not in err
    assert victim.read_text() == "precious\n"
    assert not (out / "he256.ome.zarr").exists() and not (out / "he256.run.json").exists()


def test_an_existing_lock_file_is_reused_not_rewritten(tmp_path, checkpoint, he):
    tifffile.imwrite(tmp_path / "he256.tif", he[:256, :256], photometric="rgb")
    out = tmp_path / "o"
    out.mkdir()
    (out / ".he256.ome.zarr.lock").write_text("left by someone\n")
    assert stain(tmp_path / "he256.tif", checkpoint, out) == 0
    assert (out / ".he256.ome.zarr.lock").read_text() == "left by someone\n"
