"""`virtual-ihc register FIXED MOVING --out DIR [--points MOVING.csv]`: align real IHC to its H&E."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .argtypes import int_in

#: Shortest side (px) of an image that can be registered: the multi-resolution pyramid and the
#: smoothing of SimpleITK fail below about 16 px; 32 px leaves the coarsest level a few pixels.
MIN_SIDE = 32


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "register",
        help="register a moving slide (real IHC) to a fixed slide (H&E) of consecutive sections",
        description="Coarse rotation/flip search, rigid, affine and optical-flow registration. Writes "
        "DIR/transform.json (with both files' fingerprints) and, with --points, DIR/points_in_fixed.csv.",
    )
    p.add_argument("fixed", help="the reference slide (H&E)")
    p.add_argument("moving", help="the slide to align (real IHC)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--points", help="ANHIR-style CSV (X, Y columns) in the moving slide's level-0 pixels")
    p.add_argument(
        "--nonrigid",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="optical-flow refinement after the affine, kept only when it holds (default: on; "
        "--no-nonrigid for the affine alone)",
    )
    p.add_argument("--no-flip", action="store_true", help="do not try the mirror image of the moving slide")
    p.add_argument(
        "--working-side", type=int_in(64, 16384), default=1024, help="px of the affine stage's views"
    )
    p.add_argument(
        "--allow-swapped", action="store_true", help="accept an IHC-looking FIXED and H&E-looking MOVING"
    )
    p.add_argument(
        "--accept-poor",
        action="store_true",
        help="write the points even when the alignment fails the quality gate (not a peak of agreement)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..ihc_store.errors import OutputNotWritableError
    from ..ihc_store.writer import check_writable_folder
    from ..registration import RegistrationError, RegistrationSettings, read_points, register, write_points
    from ..registration.quality import describe as describe_quality
    from ..registration.register import STAGES
    from ..slides import open_slide
    from ..slides.errors import SlideError

    try:
        settings = RegistrationSettings(
            nonrigid=args.nonrigid,
            allow_flip=not args.no_flip,
            working_side=args.working_side,
            allow_swapped=args.allow_swapped,
        )
        points = read_points(args.points) if args.points else None
        fixed, moving = open_slide(args.fixed), open_slide(args.moving)
        for path, slide in ((args.fixed, fixed), (args.moving, moving)):
            if min(slide.dimensions) < MIN_SIDE:
                raise RegistrationError(
                    f"{path} is {slide.dimensions[0]} x {slide.dimensions[1]} px: too small to register "
                    f"(each side needs at least {MIN_SIDE} px)"
                )
        check_writable_folder(Path(args.out))  # before the registration's seconds of work
    except (ValueError, SlideError, OSError, OutputNotWritableError) as e:
        print(f"virtual-ihc register: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        with tqdm(total=len(STAGES) - (0 if args.nonrigid else 1), desc="register", unit="stage") as bar:

            def progress(done: int, total: int, stage: str) -> None:
                bar.total = total
                bar.n = done
                bar.set_postfix_str(stage)
                bar.refresh()

            transform = register(fixed, moving, settings, progress=progress)
    except RegistrationError as e:
        print(f"virtual-ihc register: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # SimpleITK's errors on images it cannot work with
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        print(
            f"virtual-ihc register: the registration failed on these images ({first[:300]})", file=sys.stderr
        )
        return 1
    finally:
        fixed.close()
        moving.close()
    q = transform.quality
    report = {
        "transform": "transform.json",
        "converged": transform.converged,
        "quality": q,
        "notes": transform.notes,
    }
    for note in transform.notes:
        print(f"note: {note}", file=sys.stderr)
    try:
        out.mkdir(parents=True, exist_ok=True)
        transform.save(out / "transform.json")
        if points is not None:
            xy, labels = points
            if transform.converged or args.accept_poor:
                write_points(out / "points_in_fixed.csv", transform.moving_to_fixed(xy), labels)
                report["points_in_fixed"] = "points_in_fixed.csv"
        (out / "registration.json").write_text(json.dumps(report, indent=2))
    except OSError as e:  # e.g. the disk filled up during the registration
        print(f"virtual-ihc register: cannot write to {out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(
        f"{'converged' if transform.converged else 'NOT CONVERGED'} ({' + '.join(transform.stages)}): "
        f"{describe_quality(q)}; wrote {out}"
    )
    if not transform.converged:
        print(
            "virtual-ihc register: the alignment is poor (see the figures above); the transform is saved "
            "marked converged=false"
            + (
                ""
                if args.accept_poor or points is None
                else " and the points were NOT written (--accept-poor)"
            ),
            file=sys.stderr,
        )
        return 3
    return 0
