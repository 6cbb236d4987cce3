"""`virtual-ihc pairs HE IHC --transform T.json --out DIR`: registered tile pairs for training.

Writes DIR/HE/*.png and DIR/IHC/*.png (same names and sizes: `virtual-ihc-train fit --paired DIR/HE DIR/IHC`),
DIR/tiles.csv (every tile's tissue, local correlation, local rTRE with --landmarks, kept or why not) and
DIR/pairs.json (the summary).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..slides.tiff_backend import PLAUSIBLE_MPP
from .argtypes import float_in, int_in

#: Peak memory per output px of one tile pair (both tiles, the resampling grids, the hematoxylin and
#: tissue maps): measured 100-110 B/px at 2048-3072 px tiles (AMD EPYC, NumPy 2.0), rounded up.
PAIR_BYTES_PER_PX = 128
#: Share of the memory available now that one tile pair may take.
PAIR_MEMORY_SHARE = 0.5


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pairs",
        help="cut registered H&E/IHC tile pairs (paired folder layout for virtual-ihc-train fit --paired)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("he", help="H&E slide (the registration's fixed slide)")
    p.add_argument("ihc", help="real IHC slide (the registration's moving slide)")
    p.add_argument("--transform", required=True, help="transform.json from `virtual-ihc register HE IHC`")
    p.add_argument("--out", required=True, help="output folder (HE/, IHC/, tiles.csv, pairs.json)")
    p.add_argument("--size", type=int_in(16, 10**6), default=1024, help="tile side in px (BCI: 1024)")
    p.add_argument(
        "--mpp",
        type=float_in(*PLAUSIBLE_MPP, unit="µm/px"),
        help="µm/px of the tiles (needs the H&E's pixel size)",
    )
    p.add_argument(
        "--downsample", type=float_in(1e-3, 1e4), help="H&E level-0 px per tile px (instead of --mpp)"
    )
    p.add_argument("--min-tissue", type=float_in(0, 1), default=0.5, help="tissue share needed in both tiles")
    p.add_argument(
        "--min-correlation", type=float_in(-1, 1), default=0.3, help="local hematoxylin correlation needed"
    )
    p.add_argument("--stride", type=int_in(1, 10**6), help="px between tile origins (default: --size)")
    p.add_argument(
        "--landmarks", nargs=2, metavar=("HE_CSV", "IHC_CSV"), help="report each tile's local rTRE"
    )
    p.add_argument("--accept-poor", action="store_true", help="use a transform marked converged=false")
    p.set_defaults(func=run)


def check_tile_memory(size: int) -> None:
    """Refuse a tile side whose pair would not fit in memory, before anything is allocated."""
    import torch

    from ..inference.tiling import available_memory
    from ..registration import RegistrationError

    need = size * size * PAIR_BYTES_PER_PX
    available = available_memory(torch.device("cpu"))
    if need > available * PAIR_MEMORY_SHARE:
        raise RegistrationError(
            f"--size {size} needs about {need / 2**30:.1f} GiB of memory per tile pair ({PAIR_BYTES_PER_PX} B "
            f"per px), more than {PAIR_MEMORY_SHARE:.0%} of the {available / 2**30:.1f} GiB available now: "
            "use a smaller --size (BCI tiles are 1024)"
        )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..ihc_store.errors import OutputNotWritableError
    from ..ihc_store.writer import check_writable_folder
    from ..registration import RegistrationError, load_transform, read_points
    from ..registration.pairs import PairSettings, downsample_for, iter_pairs, summarize
    from ..slides import open_slide
    from ..slides.errors import SlideError

    try:
        check_tile_memory(args.size)
        transform = load_transform(args.transform, args.he, args.ihc)
        if not transform.converged and not args.accept_poor:
            raise RegistrationError(
                f"{args.transform} did not converge (quality {transform.quality}); refusing to cut pairs from it "
                "(--accept-poor to do so anyway)"
            )
        he, ihc = open_slide(args.he), open_slide(args.ihc)
        settings = PairSettings(
            size=args.size,
            downsample=downsample_for(he, args.mpp, args.downsample),
            min_tissue=args.min_tissue,
            min_correlation=args.min_correlation,
            stride=args.stride,
        )
        marks = None
        if args.landmarks:
            marks = (read_points(args.landmarks[0])[0], read_points(args.landmarks[1])[0])
        check_writable_folder(Path(args.out))  # the inputs are good: before any work
    except (ValueError, SlideError, OSError, OutputNotWritableError) as e:
        print(f"virtual-ihc pairs: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    steps = iter_pairs(he, ihc, transform, out, settings, marks)
    try:
        with tqdm(total=1, desc="pairs", unit="tile") as bar:
            while True:
                try:
                    done, total = next(steps)
                except StopIteration as stop:
                    rows = stop.value
                    break
                bar.total = total
                bar.n = done
                bar.refresh()
        summary = summarize(rows, settings)
        (out / "pairs.json").write_text(json.dumps(summary, indent=2))
    except OSError as e:  # e.g. the disk filled up: the pairs written so far stay
        print(f"virtual-ihc pairs: cannot write to {out}: {e.strerror or e}", file=sys.stderr)
        return 1
    loc = summary["kept_local_rtre_median"]
    print(
        f"kept {summary['kept']} of {summary['tiles']} tile pair(s)"
        + (f", local rTRE median {loc:.4f}" if loc is not None else "")
        + f"; wrote {out} (train: virtual-ihc-train fit --paired {out / 'HE'} {out / 'IHC'})"
    )
    if summary["kept"] == 0:
        print(
            "virtual-ihc pairs: no tile passed the tissue and quality thresholds (see tiles.csv)",
            file=sys.stderr,
        )
        return 3
    return 0
