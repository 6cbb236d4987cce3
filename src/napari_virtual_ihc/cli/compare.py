"""`virtual-ihc compare VIRTUAL REAL --out DIR [--transform T.json]`: virtual vs real IHC, measured.

Writes DIR/compare.json (summary), DIR/tiles.csv (one row per tile) and DIR/report.png (images, maps and
scatter plots) plus DIR/report.md. With --transform the real IHC is read through the registration (its
moving fingerprint must match REAL); without it the two images must already be aligned pixel for pixel.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..slides.tiff_backend import PLAUSIBLE_MPP
from .argtypes import float_in, int_in


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="virtual vs real IHC: DAB Dice/IoU, DAB fractions, nuclei density, HER2 per tile; report + plots",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("virtual", help="virtual IHC (in the H&E frame, e.g. the output of `virtual-ihc stain`)")
    p.add_argument("real", help="real IHC slide")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--transform", help="transform.json from `virtual-ihc register H&E REAL`")
    p.add_argument("--tile", type=int_in(16, 8192), default=512, help="tile side in output px")
    p.add_argument(
        "--max-side",
        type=int_in(64, 65536),
        default=4096,
        help="compare at a resolution with <= this many px per side",
    )
    p.add_argument(
        "--mpp",
        type=float_in(*PLAUSIBLE_MPP, unit="µm/px"),
        default=None,
        help="µm/px of VIRTUAL's level 0 when it records none",
    )
    p.add_argument(
        "--cutoffs", type=float_in(0, 10), nargs=3, default=(0.2, 0.4, 0.6), metavar=("WEAK", "MOD", "STRONG")
    )
    p.add_argument("--accept-poor", action="store_true", help="use a transform marked converged=false")
    p.add_argument(
        "--marker",
        choices=("her2", "ki67", "er", "pr"),
        default="her2",
        help="her2: membrane (HER2 category per tile); ki67/er/pr: nuclear (positive-cell ratio per tile)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..ihc_store.errors import OutputNotWritableError
    from ..ihc_store.writer import check_writable_folder
    from ..registration import RegistrationError, SlideTransform
    from ..registration.compare import ComparisonSettings, compare
    from ..slides import open_slide
    from ..slides.errors import SlideError
    from ..stain.membrane import DabBins

    try:
        virtual, real = open_slide(args.virtual), open_slide(args.real)
        transform = None
        if args.transform:
            transform = SlideTransform.load(args.transform)
            transform.verify(None, args.real)
            if tuple(transform.fixed.dimensions) != tuple(virtual.dimensions):
                raise RegistrationError(
                    f"{args.virtual} is {virtual.dimensions[0]} x {virtual.dimensions[1]} px but the transform's "
                    f"fixed slide ({transform.fixed.name}) is {transform.fixed.dimensions[0]} x "
                    f"{transform.fixed.dimensions[1]}: the virtual IHC must be in the H&E's pixel frame"
                )
            if not transform.converged and not args.accept_poor:
                raise RegistrationError(
                    f"{args.transform} did not converge (quality {transform.quality}); refusing it "
                    "(--accept-poor to use it anyway)"
                )
        elif tuple(virtual.dimensions) != tuple(real.dimensions):
            raise RegistrationError(
                f"{args.virtual} and {args.real} differ in size and no --transform was given: register them "
                "first (`virtual-ihc register H&E REAL --out DIR`)"
            )
        W, H = virtual.dimensions
        ds = float(max(1, math.ceil(max(W, H) / args.max_side)))
        settings = ComparisonSettings(
            tile_px=args.tile, downsample=ds, mpp=args.mpp, bins=DabBins(*args.cutoffs), marker=args.marker
        )
        check_writable_folder(Path(args.out))  # the inputs are good: before any work
    except (ValueError, SlideError, OSError, OutputNotWritableError) as e:
        print(f"virtual-ihc compare: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=1, desc="compare", unit="tile") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        result = compare(virtual, real, transform, settings, progress=progress)
    summary = result.summary()
    summary["virtual"] = str(Path(args.virtual).resolve())
    summary["real"] = str(Path(args.real).resolve())
    summary["transform"] = str(Path(args.transform).resolve()) if args.transform else None
    write_tiles_csv(out / "tiles.csv", result.rows)
    (out / "compare.json").write_text(json.dumps(summary, indent=2))
    write_report(out, virtual, real, transform, result, summary)
    virtual.close()
    real.close()
    print(
        f"DAB Dice {summary['dab_dice']:.3f}, IoU {summary['dab_iou']:.3f} over {summary['tiles_compared']} "
        f"tile(s); {marker_line(summary)}; wrote {out}"
    )
    return 0


def marker_line(summary: dict[str, Any]) -> str:
    """The marker's agreement: HER2 tile agreement, or the positive-cell ratios of a nuclear marker."""
    if summary["marker"] == "her2":
        agree = summary["her2_tile_agreement"]
        return "HER2 tile agreement " + ("n/a (no tile with cells)" if agree is None else f"{agree:.0%}")
    if summary["positive_ratio_tiles"] == 0:
        return f"{summary['marker']} positive-cell ratio: no tile with cells"
    return (
        f"{summary['marker']} positive-cell ratio virtual {summary['positive_ratio_virtual_mean']:.1%}, real "
        f"{summary['positive_ratio_real_mean']:.1%}, mean |difference| per tile "
        f"{summary['positive_ratio_abs_diff_mean']:.1%} ({summary['positive_ratio_tiles']} tiles)"
    )


def write_tiles_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    from ..registration.compare import COLUMNS

    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    k: ("" if r[k] is None else (f"{r[k]:.5g}" if isinstance(r[k], float) else r[k]))
                    for k in COLUMNS
                }
            )


def write_report(out: Path, virtual, real, transform, result, summary: dict[str, Any]) -> None:
    """report.png: virtual | real (registered) | DAB agreement map; per-tile maps; scatter plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..inference.resample import low_resolution_view
    from ..registration.compare import dab_positive

    v, ds = low_resolution_view(virtual, 768)
    if transform is None:
        r, _ = low_resolution_view(real, 768)
        r = r[: v.shape[0], : v.shape[1]]
    else:
        W, H = virtual.dimensions
        r = transform.resample(real, (0, 0, W, H), ds)[: v.shape[0], : v.shape[1]]
    bins = result.settings.bins
    a, b = dab_positive(v, bins), dab_positive(r[: v.shape[0], : v.shape[1]], bins)
    agree = np.zeros((*a.shape, 3), np.uint8) + 255
    agree[a & b] = (60, 160, 60)
    agree[a & ~b] = (220, 120, 30)
    agree[~a & b] = (60, 90, 220)
    fig, ax = plt.subplots(2, 3, figsize=(15, 9))
    ax[0, 0].imshow(v)
    ax[0, 0].set_title("virtual IHC")
    ax[0, 1].imshow(r)
    ax[0, 1].set_title("real IHC (registered)" if transform is not None else "real IHC")
    ax[0, 2].imshow(agree)
    ax[0, 2].set_title("DAB+: both (green), virtual only (orange), real only (blue)")
    im = ax[1, 0].imshow(result.tile_map("dab_fraction_diff"), cmap="coolwarm", vmin=-0.5, vmax=0.5)
    ax[1, 0].set_title("DAB fraction, virtual - real, per tile")
    fig.colorbar(im, ax=ax[1, 0])
    used = [row for row in result.rows if row["dab_dice"] is not None]
    fv = [row["dab_fraction_virtual"] for row in used]
    fr = [row["dab_fraction_real"] for row in used]
    ax[1, 1].scatter(fr, fv, s=12)
    ax[1, 1].plot([0, 1], [0, 1], "k--", lw=0.8)
    ax[1, 1].set_xlabel("real DAB fraction")
    ax[1, 1].set_ylabel("virtual DAB fraction")
    ax[1, 1].set_title(f"per tile (Dice {summary['dab_dice']:.3f})")
    if summary["marker"] == "her2":
        dv = [row["nuclei_per_mm2_virtual"] for row in used]
        dr = [row["nuclei_per_mm2_real"] for row in used]
        ax[1, 2].scatter(dr, dv, s=12, c="tab:purple")
        top = max([*dv, *dr, 1.0])
        ax[1, 2].plot([0, top], [0, top], "k--", lw=0.8)
        ax[1, 2].set_xlabel("real nuclei / mm²")
        ax[1, 2].set_ylabel("virtual nuclei / mm²")
        ax[1, 2].set_title("nuclei density per tile")
    else:  # the seed paper's metric for a nuclear marker
        pairs = [r for r in used if r["positive_ratio_diff"] is not None]
        ax[1, 2].scatter(
            [r["positive_ratio_real"] for r in pairs], [r["positive_ratio_virtual"] for r in pairs], s=12
        )
        ax[1, 2].plot([0, 1], [0, 1], "k--", lw=0.8)
        ax[1, 2].set_xlabel("real positive-cell ratio")
        ax[1, 2].set_ylabel("virtual positive-cell ratio")
        ax[1, 2].set_title(f"{summary['marker']} positive-cell ratio per tile")
    for axis in ax[0]:
        axis.axis("off")
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=80)
    plt.close(fig)
    lines = [
        "# Virtual vs real IHC",
        "",
        f"**{marker_line(summary)}**",
        "",
        "| measure | value |",
        "| --- | --- |",
    ]
    for k, val in summary.items():
        lines.append(f"| {k} | {val if not isinstance(val, float) else f'{val:.4g}'} |")
    lines += ["", "![report](report.png)", "", "Per-tile figures: `tiles.csv`."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
