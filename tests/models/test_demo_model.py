"""The shipped demo model (H&E -> DAB-IHC appearance, not HER2): it is in the package, small, has the look it
is meant to have on real H&E, and ``virtual-ihc demo --headless`` writes the stained sample and a PNG."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2hed

from napari_virtual_ihc._sample_data import CMU1_REGION
from napari_virtual_ihc.cli import main
from napari_virtual_ihc.models import CheckpointError, demo_model_path, load_generator
from napari_virtual_ihc.models import demo_model as demo_module
from napari_virtual_ihc.slides import open_slide


def glass_mask(rgb: np.ndarray) -> np.ndarray:
    """Blank glass in an H&E: bright and unsaturated."""
    f = rgb.astype(np.float32)
    return (f.min(-1) > 215) & ((f.max(-1) - f.min(-1)) < 20)


def stain_look(ihc: np.ndarray, tissue: np.ndarray) -> dict[str, float]:
    """Share of tissue pixels that are brown (DAB optical density dominant) and blue (hematoxylin dominant)."""
    hed = rgb2hed(ihc)
    h, d = hed[..., 0], hed[..., 2]
    brown = (d > 0.05) & (d > h)
    blue = (h > 0.03) & (h > d)  # a light hematoxylin counterstain
    return {"brown": float(brown[tissue].mean()), "blue": float(blue[tissue].mean())}


def look_of(out: np.ndarray, he: np.ndarray) -> dict[str, float]:
    glass = glass_mask(he)
    tissue = ~glass
    look = stain_look(out, tissue)
    look["glass_white"] = float(out[glass].astype(np.float32).mean()) if glass.any() else 255.0
    look["tissue_dark"] = float(out[tissue].astype(np.float32).mean())
    return look


def test_demo_model_ships_small_and_says_what_it_is():
    path = demo_model_path()
    assert path.stat().st_size < 10 * 2**20
    spec = load_generator(path).spec
    assert "not HER2" in spec.name and spec.provenance["preset"] == "cyclegan"
    assert spec.mpp == pytest.approx(0.5) and spec.class_channel is None


def test_demo_output_on_real_he_is_brown_and_blue_tissue_on_white_glass():
    slide = open_slide(CMU1_REGION)
    he = slide.read_region((0, 0), 0, slide.dimensions)[..., :3]
    slide.close()
    # a real field with tissue and glass: the sample's top-left quarter (held out of the demo's training)
    he = np.ascontiguousarray(he[:512, :512])
    model = load_generator(demo_model_path())
    with torch.no_grad():
        x = torch.from_numpy(he).permute(2, 0, 1)[None].float() / 127.5 - 1
        y = model.module(x)[0]
    out = ((y.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    look = look_of(out, he)
    assert glass_mask(he).mean() > 0.05  # the check below is not vacuous
    assert look["brown"] > 0.15, look  # measured 0.38 (AMD EPYC, torch CPU)
    assert look["blue"] > 0.15, look  # measured 0.33
    assert look["glass_white"] > 200, look  # glass stays white
    assert look["tissue_dark"] < look["glass_white"] - 30, look  # tissue where the input has tissue


def test_headless_demo_writes_store_and_png(tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["demo", "--headless", "--out", str(tmp_path)]) == 0
    seconds = time.perf_counter() - t0
    assert (tmp_path / "CMU-1-region.ome.zarr").is_dir()
    png = np.asarray(Image.open(tmp_path / "CMU-1-region-side-by-side.png"))
    assert png.shape == (1024, 2048, 3)
    he, ihc = png[:, :1024], png[:, 1024:]
    look = look_of(ihc, he)
    assert look["brown"] > 0.15 and look["blue"] > 0.15 and look["glass_white"] > 200, look
    print(f"virtual-ihc demo --headless: {seconds:.1f} s")
    assert "not HER2" in capsys.readouterr().out


def test_missing_demo_file_is_named(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(demo_module, "__file__", str(tmp_path / "demo_model.py"))
    with pytest.raises(CheckpointError, match=r"demo-he-to-dab\.safetensors"):
        demo_model_path()
    assert main(["demo", "--headless", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "demo-he-to-dab.safetensors" in err and "missing" in err
