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
