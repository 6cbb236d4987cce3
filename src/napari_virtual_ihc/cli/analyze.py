"""`virtual-ihc analyze IMAGE_OR_SLIDE --out DIR`: stain/nuclei maps, summary.json, optional cells CSV."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..export.geojson import result_cell_features, write_geojson
from ..slides.tiff_backend import PLAUSIBLE_MPP
from ..stain.markers import MARKER_CHOICES
from .argtypes import NUCLEI_CHOICES, float_in, int_in

if TYPE_CHECKING:
    from ..slides.base import Slide
    from ..stain.analysis import AnalysisSettings
    from ..stain.regions import TumourRegion

SMALL_IMAGE_PX = 4096 * 4096  # at or below: PNG maps; above: OME-Zarr maps


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="DAB bins, membrane mask, nuclei, density and a marker estimate (HER2, Ki-67, ER, PR)",
        description="Maps (PNG for small images, OME-Zarr for slides), summary.json and optional cells.csv. "
        "The marker's figures (HER2 category, Ki-67 index, ER/PR Allred and category) are estimates for "
        "comparison, not a diagnosis, over the tumour cells of --region (all cells without one).",
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
    p.add_argument("--nuclei", choices=NUCLEI_CHOICES, default="auto")
    p.add_argument("--he", action="store_true", help="H&E input: nuclei and density only")
    p.add_argument("--gpu", action="store_true", help="run Cellpose on CUDA")
    p.add_argument("--diameter-um", type=float_in(1.0, 100.0, unit="µm"), default=7.0)
    p.add_argument(
        "--fixed-diameter",
        action="store_true",
        help="H&E: read nuclei at --diameter-um only (by default a field of large nuclei is read at 12/7 of it)",
    )
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
    p.add_argument(
        "--marker",
        choices=MARKER_CHOICES,
        default="auto",
        help="her2 (membrane), ki67 / er / pr (nuclear), or auto: decided from where the DAB sits (reported)",
    )
    p.add_argument(
        "--region",
        metavar="FILE",
        help="tumour region: GeoJSON polygons (QuPath annotation export, level-0 pixels) or a mask image of "
        "the image's size; estimates count only the cells inside",
    )
    p.add_argument(
        "--region-mil",
        metavar="MODEL",
        help="tumour region from the MIL tumour classifier (virtual-ihc-train mil, .safetensors) run on the H&E "
        "the IHC came from: a virtual IHC store's own source slide, or --mil-he (+ --mil-transform for a real IHC)",
    )
    p.add_argument("--mil-he", metavar="SLIDE", help="the H&E the IHC came from (for --region-mil)")
    p.add_argument(
        "--mil-transform",
        metavar="T.json",
        help="registration transform of the IHC onto --mil-he (virtual-ihc register; fixed = H&E)",
    )
    p.add_argument(
        "--mil-threshold",
        type=float_in(0.0, 1.0),
        default=0.5,
        metavar="P",
        help="P(tumour) from which a classifier tile is tumour (recorded in summary.json)",
    )
    p.add_argument(
        "--mil-mpp",
        type=float_in(*PLAUSIBLE_MPP, unit="µm/px"),
        default=None,
        metavar="X",
        help="µm/px the classifier was trained at, when its file does not record it",
    )
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="a saved calibration (white point, stain vectors, DAB cut-offs) to read this image with",
    )
    p.add_argument(
        "--save-calibration",
        metavar="FILE",
        help="save this run's calibration (white point, vectors, cut-offs) for the next slide",
    )
    p.add_argument("--tile", type=int_in(128, 8192), default=1024)
    p.add_argument(
        "--workers",
        type=int_in(1, 64),
        default=None,
        help="threads reading tiles, 1..64 (default: one per CPU core, up to 4; 1 with Cellpose)",
    )
    p.add_argument(
        "--cells-csv",
        action="store_true",
        help="also write cells.csv (one row per nucleus: compartment DAB OD, class, the marker's call)",
    )
    p.add_argument(
        "--cells-geojson",
        action="store_true",
        help="also write cells.geojson (QuPath detections: centroid, the marker's call, measurements)",
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
    from ..models.errors import CheckpointError
    from ..slides import open_slide
    from ..slides.errors import SlideError
    from ..stain.analysis import AnalysisSettings
    from ..stain.calibration_file import load_calibration
    from ..stain.deconvolution import QUPATH_DAB, QUPATH_HEMATOXYLIN, hdab_matrix
    from ..stain.her2 import Her2Rules
    from ..stain.membrane import DabBins
    from ..stain.regions import read_region

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
        background, vectors, cal_name = args.background, args.stain_vectors, ""
        if args.calibration:  # the saved white point, vectors and cut-offs, used as they are
            cal_name, loaded, bins = load_calibration(args.calibration)
            stains, background, vectors = loaded.stains, "default", "default"
        settings = AnalysisSettings(
            stains=stains,
            background=background,
            stain_vectors=vectors,
            marker=args.marker,
            calibration_name=cal_name,
            mode="he" if args.he else "ihc",
            nuclei_method=args.nuclei,
            cellpose_model=args.cellpose_model,
            gpu=args.gpu,
            diameter_um=args.diameter_um,
            large_nuclei=not args.fixed_diameter,
            density_sigma_um=args.sigma_um,
            bins=bins,
            rules=Her2Rules(bins=bins),
            tile=args.tile,
            mpp=args.mpp,
            workers=args.workers or 0,
        )
        if args.region and args.region_mil:
            raise ValueError("give one tumour region: --region FILE or --region-mil MODEL, not both")
        if (args.mil_he or args.mil_transform) and not args.region_mil:
            raise ValueError("--mil-he and --mil-transform go with --region-mil MODEL")
        slide = open_slide(args.image)
        try:
            region = read_region(args.region, *slide.dimensions) if args.region else None
            if args.region_mil:
                region = _mil_region(args, slide.dimensions)
        except (ValueError, OSError, CheckpointError):
            slide.close()
            raise
    except (ValueError, SlideError, OSError, CheckpointError) as e:
        print(f"virtual-ihc analyze: {e}", file=sys.stderr)
        return 2
    from ..nuclei import CellposeUnavailable

    try:
        return _analyze_and_write(args, slide, settings, out, region)
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


def _mil_region(args: argparse.Namespace, dimensions: tuple[int, int]) -> TumourRegion:
    """The tumour map of the MIL classifier on the IHC's H&E, as the region (stain.tumour_map)."""
    from tqdm import tqdm

    from ..stain.tumour_map import mil_region

    with tqdm(total=1, desc=f"tumour map ({Path(args.region_mil).name})", unit="tile") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        return mil_region(
            args.image,
            dimensions,
            args.region_mil,
            he=args.mil_he,
            transform=args.mil_transform,
            threshold=args.mil_threshold,
            classifier_mpp=args.mil_mpp,
            device="cuda" if args.gpu else "cpu",
            progress=progress,
        )


def _analyze_and_write(
    args: argparse.Namespace, slide: Slide, settings: AnalysisSettings, out: Path, region: TumourRegion | None
) -> int:
    """Compute, then write maps, summary.json and cells.csv into ``out`` (already known writable)."""
    from ..stain.analysis import analyze_slide
    from ..stain.calibration_file import save_calibration

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
    summary = result.summary(region, rules=settings.rules)
    summary["source"] = str(Path(args.image).resolve())
    if args.region:
        summary["region_file"] = str(Path(args.region).resolve())
    if args.region_mil:
        summary["region_model"] = str(Path(args.region_mil).resolve())
    summary["map_downsample"] = result.map_downsample
    maps = _maps(result)
    if region is not None:  # where the estimate counted cells, on the maps' grid (255 inside)
        maps["tumour_region"] = region.raster(result.region, result.map_downsample).astype(np.uint8) * 255
    if small:
        from skimage.io import imsave

        for name, arr in maps.items():
            imsave(out / f"{name}.png", arr, check_contrast=False)
        summary["maps"] = {k: f"{k}.png" for k in maps}
    else:
        _write_zarr(out / "maps.ome.zarr", maps, result.mpp * result.map_downsample)
        summary["maps"] = {k: f"maps.ome.zarr/{k}" for k in maps}
    if args.cells_csv:
        _write_cells(out / "cells.csv", result, region)
        summary["cells_csv"] = "cells.csv"
    if args.cells_geojson:
        summary["cells_geojson"] = write_geojson(result_cell_features(result), out / "cells.geojson").name
    if args.save_calibration:
        name = Path(args.save_calibration).stem
        save_calibration(
            args.save_calibration, name, result.calibration, settings.bins, str(Path(args.image).name)
        )
        summary["saved_calibration"] = str(Path(args.save_calibration).resolve())
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    est = summary.get(result.marker, {})
    line = f"{result.n_nuclei} nuclei ({result.nuclei_method}), "
    if est:
        line += f"{result.marker.upper()} estimate {est['label']} [{est['scope']}]"
        line += f", H-score {est['h_score']:.0f}; " if "h_score" in est else "; "
        if result.marker_reason != "chosen":
            line += f"{result.marker_reason}; "
    print(line + f"wrote {out}")
    if est and est.get("note") and not est.get("assessable", True):
        print(f"virtual-ihc analyze: {est['note']}", file=sys.stderr)
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


def _write_cells(path: Path, result: Any, region: TumourRegion | None) -> None:
    from ..stain.her2 import CELL_CLASSES
    from ..stain.markers import COMPARTMENT, marker_calls

    c = result.cells
    inside = region.contains(c.y, c.x) if region is not None else np.ones(len(c), bool)
    nuclear = COMPARTMENT.get(result.marker) == "nuclear"
    calls = marker_calls(result.marker, c, result.bins) if result.marker in COMPARTMENT else [""] * len(c)
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
                "nuclear_dab_od",
                "compartment",
                "compartment_dab_od",
                "marker",
                "marker_call",
                "in_tumour_region",
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
                    f"{c.nuclear_dab_od[i]:.4f}",
                    "nuclear" if nuclear else "membrane",
                    f"{(c.nuclear_dab_od[i] if nuclear else c.ring_dab_od[i]):.4f}",
                    result.marker,
                    calls[i],
                    int(inside[i]),
                ]
            )
