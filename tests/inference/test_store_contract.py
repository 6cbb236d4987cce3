"""The store contract (issue 20, items 1-4): nothing at the store's path is wiped, two slides with one
name never share a store, one writer at a time, and a failed creation leaves no half-made store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from engine_helpers import small_generator
from skimage.io import imread, imsave

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.ihc_store import DONE_FILE, TileStore, slide_stem, store_path_for
from napari_virtual_ihc.models import save_generator

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    model = small_generator("batch", ngf=4, n_blocks=1)
    return save_generator(tmp_path / "m.safetensors", model.module, model.spec)


@pytest.fixture
def he(data_dir: Path) -> np.ndarray:
    return np.ascontiguousarray(imread(data_dir / "tiatoolbox-target-image.png")[:200, :260, :3])


def stain(slide: Path, checkpoint: Path, out: Path) -> int:
    return main(
        ["stain", str(slide), "--model", str(checkpoint), "--out", str(out), "--tile", "128", "--quiet"]
    )


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def ngff_v3_store(path: Path, rgb: np.ndarray) -> None:
    """A real zarr v3 / OME-NGFF 0.5 image (what another tool may have written)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    arr = group.create_array("0", shape=(3, *rgb.shape[:2]), chunks=(3, 64, 64), dtype="uint8")
    arr[:] = np.moveaxis(rgb, -1, 0)
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    ds = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.5, 0.5]}]}]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": ds}]}


# --- 1. never wipe what is not ours, never write into the input -----------------------------------------
def test_folder_with_files_at_the_store_path_is_refused_and_kept(tmp_path, checkpoint, he, capsys):
    imsave(tmp_path / "ok.png", he, check_contrast=False)
    out = tmp_path / "o"
    (out / "ok.ome.zarr" / "sub").mkdir(parents=True)
    (out / "ok.ome.zarr" / "precious.txt").write_text("x")
    before = tree(out / "ok.ome.zarr")
    assert stain(tmp_path / "ok.png", checkpoint, out) == 1
    assert "is not a virtual IHC store" in capsys.readouterr().err
    assert tree(out / "ok.ome.zarr") == before and (out / "ok.ome.zarr" / "sub").is_dir()


def test_zarr_v3_store_at_the_store_path_is_refused_and_kept(tmp_path, checkpoint, he, capsys):
    imsave(tmp_path / "ok.png", he, check_contrast=False)
    out = tmp_path / "o"
    ngff_v3_store(out / "ok.ome.zarr", he)
    before = tree(out / "ok.ome.zarr")
    assert stain(tmp_path / "ok.png", checkpoint, out) == 1
    assert "is not a virtual IHC store" in capsys.readouterr().err
    assert tree(out / "ok.ome.zarr") == before


def test_input_slide_is_never_the_output(tmp_path, checkpoint, he, capsys):
    """An NGFF 0.5 slide stained into its own folder would be its own store: refused, the slide kept."""
    slide = tmp_path / "x.ome.zarr"
    ngff_v3_store(slide, he)
    before = tree(slide)
    assert stain(slide, checkpoint, tmp_path) == 1
    assert "would overwrite the input slide" in capsys.readouterr().err
    assert tree(slide) == before


# --- 2. the source's identity is part of the run key ---------------------------------------------------
def test_two_slides_with_one_name_never_share_a_store(tmp_path, checkpoint, he, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    imsave(tmp_path / "a" / "slide.png", he, check_contrast=False)
    imsave(tmp_path / "b" / "slide.png", np.ascontiguousarray(he[::-1]), check_contrast=False)
    out = tmp_path / "out"
    assert stain(tmp_path / "a" / "slide.png", checkpoint, out) == 0
    store = out / "slide.ome.zarr"
    first = tree(store)
    assert stain(tmp_path / "b" / "slide.png", checkpoint, out) == 1
    err = capsys.readouterr().err
    assert "another slide with the same name" in err and str(tmp_path / "a" / "slide.png") in err
    assert tree(store) == first  # a's result untouched, nothing of b in it
    # the same slide again (even moved to another folder) still resumes its store
    (tmp_path / "c").mkdir()
    (tmp_path / "a" / "slide.png").rename(tmp_path / "c" / "slide.png")
    assert stain(tmp_path / "c" / "slide.png", checkpoint, out) == 0
    assert json.loads((out / "slide.run.json").read_text())["tiles_resumed"] == 6


# --- 3. one writer at a time ---------------------------------------------------------------------------
HOLD_LOCK = """
import sys
from pathlib import Path
from napari_virtual_ihc.ihc_store.lock import StoreLock
from napari_virtual_ihc.ihc_store.naming import lock_path
lock = StoreLock(lock_path(Path(sys.argv[1])), sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.readline()
"""


def test_a_second_writer_is_refused_while_the_first_holds_the_store(tmp_path, checkpoint, he, capsys):
    imsave(tmp_path / "ok.png", he, check_contrast=False)
    out = tmp_path / "o"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out / "ok.ome.zarr")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert stain(tmp_path / "ok.png", checkpoint, out) == 1
        assert "being written by another run" in capsys.readouterr().err
        assert not (out / "ok.ome.zarr").exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    assert stain(tmp_path / "ok.png", checkpoint, out) == 0  # the OS let go of the lock with its holder


# --- 4. creation is atomic; an old half-made store is recognised and recreated -------------------------
CREATE_WITH_A_TINY_DISK = """
import resource, signal, sys
from pathlib import Path
from napari_virtual_ihc.ihc_store import StoreWriteError, TileStore
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))
try:
    TileStore.open(Path(sys.argv[1]), (300, 200), 128, [1, 2], (0.5, 0.5), {"k": 1}, {"model": "m"})
except StoreWriteError as e:
    print("refused:", e)
"""


def test_a_creation_that_fails_midway_leaves_no_half_made_store(tmp_path):
    store = tmp_path / "s.ome.zarr"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", CREATE_WITH_A_TINY_DISK, str(store)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "refused: disk full" in done.stdout, done.stdout + done.stderr
    assert not store.exists()
    assert not [p for p in tmp_path.iterdir() if "creating" in p.name]
    ts = TileStore.open(store, (300, 200), 128, [1, 2], (0.5, 0.5), {"k": 1}, {"model": "m"})  # works now
    ts.close()


def test_a_half_made_store_of_an_older_version_is_recreated(tmp_path):
    """What a disk full between the arrays and the attributes left before creation was atomic."""
    store = tmp_path / "s.ome.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=2)
    group.create_array("0", shape=(3, 200, 300), chunks=(3, 128, 128), dtype="uint8", fill_value=255)
    ts = TileStore.open(store, (300, 200), 128, [1], (0.5, 0.5), {"k": 1}, {"model": "m"})
    ts.write_tile((0, 0, 128, 128), np.zeros((128, 128, 3), np.uint8))
    ts.mark_done([0], "d")
    ts.close()
    assert (store / DONE_FILE).read_text() == "0 d\n"
    # a store with pixels but no run key is not provably ours: refused, never deleted
    other = tmp_path / "t.ome.zarr"
    group = zarr.open_group(str(other), mode="w", zarr_format=2)
    group.create_array("0", shape=(3, 8, 8), chunks=(3, 8, 8), dtype="uint8")[:] = 7
    with pytest.raises(Exception, match="not a virtual IHC store"):
        TileStore.open(other, (8, 8), 8, [1], None, {"k": 1}, {})
    assert np.asarray(zarr.open_group(str(other), mode="r")["0"][:]).min() == 7


# --- one stem rule ---------------------------------------------------------------------------------------
def test_store_names_are_sanitised_the_same_everywhere():
    assert slide_stem("case 1 (HER2+).svs").startswith("case_1_HER2-")  # changed: a hash keeps it distinct
    assert slide_stem("case_1_HER2.svs") == "case_1_HER2"
    stem = slide_stem("case 1 (HER2+).svs")
    assert store_path_for("/o", Path("/x/case 1 (HER2+).ome.tiff")) == Path(f"/o/{stem}.ome.zarr")
