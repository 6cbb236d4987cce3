"""`virtual-ihc analyze IMAGE_OR_SLIDE --out DIR`: stain/nuclei maps, summary.json, optional cells CSV."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..export.geojson import cell_features, write_geojson
from ..slides.tiff_backend import PLAUSIBLE_MPP
from .argtypes import float_in, int_in

if TYPE_CHECKING:
    from ..slides.base import Slide
    from ..stain.analysis import AnalysisSettings

SMALL_IMAGE_PX = 4096 * 4096  # at or below: PNG maps; above: OME-Zarr maps


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="DAB bins, membrane mask, nuclei, density and a HER2 estimate for an image or slide",
        description="Maps (PNG for small images, OME-Zarr for slides), summary.json and optional cells.csv. "
        "The HER2 category is an estimate for comparison, not a diagnosis.",
    )
    p.add_argument("image", help="IHC image or slide (any format open_slide reads)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument(
        "--mpp",
        type=float_in(*PLAUSIBLE_MPP, unit="µm/px"),
        default=None,
        help="µm/px when the image carries none (else 0.5 assumed)",
    )
    p.add_argument("--cellpose-model", default="nuclei", help="Cellpose built-in name or local model path")
    p.add_argument("--nuclei", choices=("auto", "cellpose", "classical"), default="auto")
    p.add_argument("--he", action="store_true", help="H&E input: nuclei and density only")
    p.add_argument("--gpu", action="store_true", help="run Cellpose on CUDA")
    p.add_argument("--diameter-um", type=float_in(1.0, 100.0, unit="µm"), default=7.0)
    p.add_argument(
        "--sigma-um", type=float_in(1.0, 5000.0, unit="µm"), default=25.0, help="density Gaussian sigma in µm"
    )
    p.add_argument(
        "--cutoffs",
        type=float,
        nargs=3,
        default=(0.2, 0.4, 0.6),
        metavar=("WEAK", "MOD", "STRONG"),
        help="DAB OD cut-offs (uncalibrated defaults)",
    )
    p.add_argument(
        "--background",
        choices=("auto", "default"),
        default="auto",
        help="white point: estimated from the slide's glass (auto) or 255 (default)",
    )
    p.add_argument(
        "--stain-vectors",
        choices=("default", "estimate"),
        default="default",
        help="H-DAB vectors: QuPath's defaults (or --hematoxylin/--dab) or estimated from the slide (Macenko)",
    )
    p.add_argument(
        "--hematoxylin", type=float, nargs=3, metavar=("R", "G", "B"), help="hematoxylin OD vector"
    )
    p.add_argument("--dab", type=float, nargs=3, metavar=("R", "G", "B"), help="DAB OD vector")
    p.add_argument("--tile", type=int_in(128, 8192), default=1024)
    p.add_argument("--cells-csv", action="store_true", help="also write cells.csv (one row per nucleus)")
    p.add_argument(
        "--cells-geojson",
        action="store_true",
        help="also write cells.geojson (QuPath detections: centroid, HER2 class, measurements)",
    )
    p.set_defaults(func=run)


def _check_out(out: Path) -> str | None:
    """Why ``out`` cannot take the results (None if it can): checked before any computing."""
    from ..ihc_store import check_writable_folder
    from ..inference.errors import OutputNotWritableError

    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a folder"
    try:
        check_writable_folder(out)
    except OutputNotWritableError as e:
        return str(e)
    return None


def run(args: argparse.Namespace) -> int:
    from ..slides import open_slide
    from ..slides.errors import SlideError
    from ..stain.analysis import AnalysisSettings
    from ..stain.deconvolution import QUPATH_DAB, QUPATH_HEMATOXYLIN, hdab_matrix
    from ..stain.her2 import Her2Rules
    from ..stain.membrane import DabBins

    out = Path(args.out)
    problem = _check_out(out)
    if problem:
        print(f"virtual-ihc analyze: {problem}", file=sys.stderr)
        return 2
    try:
        bins = DabBins(*args.cutoffs)
        stains = hdab_matrix(
            tuple(args.hematoxylin) if args.hematoxylin else QUPATH_HEMATOXYLIN,
            tuple(args.dab) if args.dab else QUPATH_DAB,
        )
        settings = AnalysisSettings(
            stains=stains,
            background=args.background,
            stain_vectors=args.stain_vectors,
            mode="he" if args.he else "ihc",
            nuclei_method=args.nuclei,
            cellpose_model=args.cellpose_model,
            gpu=args.gpu,
            diameter_um=args.diameter_um,
            density_sigma_um=args.sigma_um,
            bins=bins,
            rules=Her2Rules(bins=bins),
            tile=args.tile,
            mpp=args.mpp,
        )
        slide = open_slide(args.image)
    except (ValueError, SlideError, OSError) as e:
        print(f"virtual-ihc analyze: {e}", file=sys.stderr)
        return 2
    from ..nuclei import CellposeUnavailable

    try:
        return _analyze_and_write(args, slide, settings, out)
    except CellposeUnavailable as e:
        print(
            f"virtual-ihc analyze: Cellpose: {e}; use --nuclei classical or a local --cellpose-model PATH",
            file=sys.stderr,
        )
        return 1
    except (SlideError, ValueError, MemoryError) as e:  # e.g. a slide corrupt past its header
        print(
            f"virtual-ihc analyze: {args.image}: {' '.join(str(e).split()) or type(e).__name__}",
            file=sys.stderr,
        )
        return 1
    except OSError as e:
        print(f"virtual-ihc analyze: {e.filename or args.image}: {e.strerror or e}", file=sys.stderr)
        return 1


def _analyze_and_write(args: argparse.Namespace, slide: Slide, settings: AnalysisSettings, out: Path) -> int:
    """Compute, then write maps, summary.json and cells.csv into ``out`` (already known writable)."""
    from ..stain.analysis import analyze_slide

    w, h = slide.dimensions
    small = w * h <= SMALL_IMAGE_PX
    settings.map_downsample = 1 if small else max(1, int(np.ceil(np.sqrt(w * h / SMALL_IMAGE_PX))))
    try:
        from tqdm import tqdm

        with tqdm(total=1, desc="analyze", unit="tile") as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            result = analyze_slide(slide, settings, progress=progress)
    finally:
        slide.close()
    summary = result.summary(rules=settings.rules)
    summary["source"] = str(Path(args.image).resolve())
    summary["map_downsample"] = result.map_downsample
    maps = _maps(result)
    if small:
        from skimage.io import imsave

        for name, arr in maps.items():
            imsave(out / f"{name}.png", arr, check_contrast=False)
        summary["maps"] = {k: f"{k}.png" for k in maps}
    else:
        _write_zarr(out / "maps.ome.zarr", maps, result.mpp * result.map_downsample)
        summary["maps"] = {k: f"maps.ome.zarr/{k}" for k in maps}
    if args.cells_csv:
        _write_cells(out / "cells.csv", result)
        summary["cells_csv"] = "cells.csv"
    if args.cells_geojson:
        summary["cells_geojson"] = write_geojson(
            cell_features(result.cells, result.mpp), out / "cells.geojson"
        ).name
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    her2 = summary.get("her2", {})
    print(
        f"{result.n_nuclei} nuclei ({result.nuclei_method}), "
        + (f"HER2 estimate {her2['label']}, H-score {her2['h_score']:.0f}; " if her2 else "")
        + f"wrote {out}"
    )
    return 0


def _maps(result: Any) -> dict[str, np.ndarray]:
    maps: dict[str, np.ndarray] = {
        "nuclei_labels": (result.labels % 65535).astype(np.uint16),
        "density_per_mm2": np.clip(result.density, 0, 65535).astype(np.uint16),
    }
    if result.dab_classes is not None:
        maps["dab_bins"] = result.dab_classes  # 0..3
        maps["membrane_mask"] = result.membrane_mask.astype(np.uint8) * 255
    return maps


def _write_zarr(path: Path, maps: dict[str, np.ndarray], mpp: float) -> None:
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    for name, arr in maps.items():
        g = root.create_group(name)
        g.create_array("0", data=arr, chunks=(1024, 1024))
        g.attrs["multiscales"] = [
            {
                "version": "0.4",
                "name": name,
                "axes": [
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [mpp, mpp]}]}
                ],
            }
        ]


def _write_cells(path: Path, result: Any) -> None:
    from ..stain.her2 import CELL_CLASSES

    c = result.cells
    with path.open("w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(
            [
                "id",
                "y_px",
                "x_px",
                "y_um",
                "x_um",
                "area_um2",
                "ring_dab_od",
                "completeness",
                "intensity_bin",
                "cell_class",
            ]
        )
        a = result.mpp**2
        for i in range(len(c)):
            wr.writerow(
                [
                    int(c.label[i]),
                    f"{c.y[i]:.1f}",
                    f"{c.x[i]:.1f}",
                    f"{c.y[i] * result.mpp:.2f}",
                    f"{c.x[i] * result.mpp:.2f}",
                    f"{c.area_px[i] * a:.2f}",
                    f"{c.ring_dab_od[i]:.4f}",
                    f"{c.completeness[i]:.3f}",
                    int(c.intensity_bin[i]),
                    CELL_CLASSES[int(c.cell_class[i])],
                ]
            )
