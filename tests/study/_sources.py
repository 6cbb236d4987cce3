"""Small real IHC crops and jittered "virtual" versions as study sources (shared with the widget tests)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

N_PAIRS = 40
CROP = 64
IHC_FILES = ("Rat-Kidney_PanCytokeratin.jpg", "Izd2-29-041-w35_proSPC.jpg")


def make_sources(data_dir: Path, folder: Path, n_pairs: int = N_PAIRS) -> Path:
    """Write n_pairs real/virtual source images and their case table; returns the table path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    ihc = [np.asarray(Image.open(data_dir / f).convert("RGB")) for f in IHC_FILES]
    rows = []
    for i in range(n_pairs):
        src = ihc[i % 2]
        y = int(rng.integers(0, src.shape[0] - CROP))
        x = int(rng.integers(0, src.shape[1] - CROP))
        real = src[y : y + CROP, x : x + CROP]
        gain = rng.uniform(0.85, 1.15, size=3)
        virtual = np.clip(real.astype(float) * gain + rng.normal(0, 4, real.shape), 0, 255).astype(np.uint8)
        virtual = np.asarray(Image.fromarray(virtual).resize((CROP + 16, CROP + 16)))  # another size
        real_name = f"case{i:02d}_real_{Path(IHC_FILES[i % 2]).stem}.jpg"
        virt_name = f"case{i:02d}_virtual_generated_pix2pix.png"
        Image.fromarray(real).save(folder / real_name, quality=92, dpi=(300, 300), comment=b"real IHC scan")
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", "virtual generator pix2pix")
        Image.fromarray(virtual).save(folder / virt_name, pnginfo=info, dpi=(72, 72))
        rows.append({"case_id": f"case{i:02d}", "real": real_name, "virtual": virt_name})
    table = folder / "cases.csv"
    with table.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["case_id", "real", "virtual"])
        w.writeheader()
        w.writerows(rows)
    return table


def stain_with_tiny_model(he: Path, store: Path) -> Path:
    """A virtual IHC OME-Zarr store of ``he`` written by the real engine with a tiny seeded generator."""
    import torch

    from napari_virtual_ihc.inference import stain_slide
    from napari_virtual_ihc.inference.api import EngineSettings
    from napari_virtual_ihc.models import ModelSpec, build_generator
    from napari_virtual_ihc.models.spec import LoadedGenerator
    from napari_virtual_ihc.slides import open_slide

    torch.manual_seed(0)
    kwargs = {"ngf": 4, "n_blocks": 1, "n_downsampling": 0, "norm": "batch"}
    module = build_generator("resnet", **kwargs).eval()
    model = LoadedGenerator(
        module=module, spec=ModelSpec("resnet", kwargs, name="tiny"), source="test", sha256="tiny-study-test"
    )
    with open_slide(he) as slide:
        report = stain_slide(slide, model, store, EngineSettings(device="cpu"))
    assert report.tiles_done == report.tiles_total
    return store


def make_whole_slide_sources(data_dir: Path, folder: Path) -> Path:
    """Four whole-slide cases: the two SVS slides and the two IHC photographs as real IHC, virtual IHC
    OME-Zarr stores stained by the engine from the two H&E photographs (resampled by the bundle to each
    real slide's size), the H&E beside the two photograph cases. Returns the case table."""
    folder.mkdir(parents=True, exist_ok=True)
    kidney = stain_with_tiny_model(data_dir / "Rat-Kidney_HE.jpg", folder / "kidney_virtual.ome.zarr")
    lung = stain_with_tiny_model(data_dir / "Izd2-29-041-w35_HE.jpg", folder / "izd2_virtual.ome.zarr")
    rows = [
        {"case_id": "ws1", "real": data_dir / "CMU-1-Small-Region.svs", "virtual": kidney, "he": ""},
        {"case_id": "ws2", "real": data_dir / "tcga-cr-7395-01a-01-ts1.svs", "virtual": lung, "he": ""},
        {
            "case_id": "ws3",
            "real": data_dir / "Rat-Kidney_PanCytokeratin.jpg",
            "virtual": kidney,
            "he": data_dir / "Rat-Kidney_HE.jpg",
        },
        {
            "case_id": "ws4",
            "real": data_dir / "Izd2-29-041-w35_proSPC.jpg",
            "virtual": lung,
            "he": data_dir / "Izd2-29-041-w35_HE.jpg",
        },
    ]
    table = folder / "whole_slides.csv"
    with table.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["case_id", "real", "virtual", "he"])
        w.writeheader()
        w.writerows(rows)
    return table
