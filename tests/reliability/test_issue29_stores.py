"""Issue 29, store items: a slide's identity is its whole content (1), a refused run writes nothing (2),
lock files are never followed through a link (14), store names stay distinct (13) and fit NAME_MAX."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
from skimage.io import imread

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.ihc_store import PROVENANCE_KEY, slide_stem, source_identity
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


def stain(slide: Path | str | list[str], checkpoint: Path, out: Path, *extra: str) -> int:
    args = [str(slide)] if isinstance(slide, Path | str) else [str(s) for s in slide]
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
    shutil.rmtree(out / ".cohort")  # an older version kept no cohort board beside its stores
    before = tree(store)
    capsys.readouterr()
    assert stain(slide, checkpoint, out) == 1
    err = capsys.readouterr().err
    assert "older version" in err and "cannot be verified" in err
    assert tree(store) == before
    assert zarr.open_group(str(store), mode="r")["0"].shape[1:] == (200, 200)  # old stores stay readable


def test_a_slide_replaced_at_the_same_path_is_checked_again_not_skipped(tmp_path, checkpoint, he, capsys):
    """The cohort board's ``done`` record holds only while the slide keeps its size and mtime: a slide
    replaced in place goes back to the engine, whose content identity refuses the old store."""
    slide = tmp_path / "s.tif"
    tifffile.imwrite(slide, he[:200, :200], photometric="rgb")
    out = tmp_path / "o"
    assert stain(slide, checkpoint, out) == 0
    before = tree(out / "s.ome.zarr")
    tifffile.imwrite(slide, he[200:400, :200], photometric="rgb")  # same size, other tissue
    capsys.readouterr()
    assert stain(slide, checkpoint, out) == 1
    assert "already settled" not in capsys.readouterr().out
    assert tree(out / "s.ome.zarr") == before


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
        ".cohort",  # the cohort board (claims and outcomes, cli/stain.py) and its summary
        ".slide.ome.zarr.lock",
        "cohort.csv",
        "slide.ome.zarr",
        "slide.run.json",
    ]


def test_a_run_record_that_is_a_symlink_is_replaced_not_followed(tmp_path, checkpoint, he):
    """Like the lock file (14): ``o/s.run.json -> ../victim.txt`` must not carry the record outside ``--out``."""
    tifffile.imwrite(tmp_path / "s.tif", he[:200, :200], photometric="rgb")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "o"
    out.mkdir()
    (out / "s.run.json").symlink_to(victim)
    assert stain(tmp_path / "s.tif", checkpoint, out) == 0
    assert victim.read_text() == "keep me"
    record = out / "s.run.json"
    assert not record.is_symlink() and json.loads(record.read_text())["tiles_total"] > 0


def test_the_engine_refuses_a_store_inside_its_input_ome_zarr(tmp_path, checkpoint, he):
    """Every caller (widget, API), not only ``stain``: a store inside the input slide's folder is refused
    before anything is written there."""
    from napari_virtual_ihc.ihc_store import ForeignPathError
    from napari_virtual_ihc.inference import EngineSettings, stain_slide
    from napari_virtual_ihc.models import load_generator

    tifffile.imwrite(tmp_path / "s.tif", he[:200, :200], photometric="rgb")
    assert stain(tmp_path / "s.tif", checkpoint, tmp_path / "o") == 0
    source = tmp_path / "o" / "s.ome.zarr"  # a stained store is a slide like any other
    before = tree(source)
    with open_slide(source) as slide, pytest.raises(ForeignPathError, match="inside the input slide"):
        stain_slide(
            slide, load_generator(checkpoint), source / "again" / "t.ome.zarr", EngineSettings(tile=128)
        )
    assert tree(source) == before


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


# --- 13. store names keep letters of every script, stay distinct and fit the file system --------------------
def test_store_names_keep_non_latin_letters_and_stay_distinct():
    assert slide_stem("漢字.png") == "漢字" and slide_stem("日本.png") == "日本"
    assert slide_stem("Präparat-3.svs") == "Präparat-3"
    assert slide_stem("a b.png") != slide_stem("a_b.png") == "a_b"
    assert slide_stem("a b.png").startswith("a_b-") and slide_stem("a b.png") == slide_stem("/x/a b.png")
    assert slide_stem("../..//.png") not in ("", ".", "..") and "/" not in slide_stem("a/b\\c:d*e?.png")
    for stem in ("x" * 240, "漢" * 100, "y" * 245 + " z"):
        name = slide_stem(stem + ".png")
        assert len(f".{name}-0123abcd.confidence.ome.zarr.creating-4194304-0123abcd".encode()) <= 255
    assert slide_stem("x" * 240 + "a.png") != slide_stem("x" * 240 + "b.png")


def test_two_inputs_of_one_name_in_one_command_get_two_stores(tmp_path, checkpoint, he):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    tifffile.imwrite(tmp_path / "a" / "漢字.tif", he[:128, :128], photometric="rgb")
    tifffile.imwrite(tmp_path / "b" / "日本.tif", he[128:256, :128], photometric="rgb")
    tifffile.imwrite(tmp_path / "a" / "s.tif", he[:128, 128:256], photometric="rgb")
    tifffile.imwrite(tmp_path / "b" / "s.tif", he[128:256, 128:256], photometric="rgb")
    out = tmp_path / "o"
    slides = [str(tmp_path / p) for p in ("a/漢字.tif", "b/日本.tif", "a/s.tif", "b/s.tif")]
    assert stain(slides, checkpoint, out) == 0
    stores = sorted(p.name for p in out.glob("*.ome.zarr"))
    assert (
        len(stores) == 4
        and "漢字.ome.zarr" in stores
        and "日本.ome.zarr" in stores
        and "s.ome.zarr" in stores
    )
    assert stain(slides, checkpoint, out) == 0  # the same command again resumes all four
    assert sorted(p.name for p in out.glob("*.ome.zarr")) == stores


def test_a_stem_of_240_characters_is_stained(tmp_path, checkpoint, he):
    slide = tmp_path / ("x" * 240 + ".tif")
    tifffile.imwrite(slide, he[:128, :128], photometric="rgb")
    assert stain(slide, checkpoint, tmp_path / "o", "--dropout", "off") == 0
    assert len(list((tmp_path / "o").glob("*.ome.zarr"))) == 1


# --- --out inside an input store ------------------------------------------------------------------------------
@pytest.mark.parametrize("sub", ["", "results", "results/deeper"])
def test_an_output_folder_inside_an_input_store_is_refused(tmp_path, checkpoint, he, capsys, sub):
    slide = tmp_path / "x.ome.zarr"
    group = zarr.open_group(str(slide), mode="w", zarr_format=3)
    arr = group.create_array("0", shape=(3, 128, 128), chunks=(3, 64, 64), dtype="uint8")
    arr[:] = np.moveaxis(he[:128, :128], -1, 0)
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    ds = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.5, 0.5]}]}]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": ds}]}
    before = tree(slide)
    assert stain(slide, checkpoint, slide / sub if sub else slide) == 2
    err = capsys.readouterr().err
    assert "inside the input" in err and "Traceback" not in err
    assert tree(slide) == before and not (slide / "results").exists()


def test_a_files_hash_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    from napari_virtual_ihc.ihc_store import identity

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(identity, "CACHE_MIN_BYTES", 0)
    monkeypatch.setattr(identity, "_hashes", {})
    f = tmp_path / "s.bin"
    f.write_bytes(b"a" * 1000)
    first = identity.file_identity(f)
    assert identity.cache_file().is_file() and first["sha256"] in identity.cache_file().read_text()
    monkeypatch.setattr(identity, "_hashes", {})
    assert identity.file_identity(f) == first  # from the cache file
    f.write_bytes(b"b" * 1000)  # same size, new content: another mtime, another key
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1000))
    assert identity.file_identity(f)["sha256"] != first["sha256"]


def test_a_run_refused_while_another_writes_leaves_its_record_alone(tmp_path, checkpoint, he, capsys):
    from napari_virtual_ihc.ihc_store.lock import StoreLock
    from napari_virtual_ihc.ihc_store.naming import lock_path

    tifffile.imwrite(tmp_path / "slide.tif", he[:200, :200], photometric="rgb")
    out = tmp_path / "o"
    assert stain(tmp_path / "slide.tif", checkpoint, out) == 0
    record = (out / "slide.run.json").read_bytes()
    shutil.rmtree(out / ".cohort")  # past the cohort board (which would skip a done slide): the engine's lock
    with StoreLock(lock_path(out / "slide.ome.zarr"), "the store"):  # another run writing it now
        assert stain(tmp_path / "slide.tif", checkpoint, out) == 1
    assert "being written by another run" in capsys.readouterr().err
    assert (out / "slide.run.json").read_bytes() == record
