"""``virtual-ihc cohort status OUT``: what became of each slide of a cohort stained into ``OUT``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cohort import COHORT_DIR, STATES, Cohort


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cohort",
        help="the state of a cohort stained by several workers",
        description="Show which slides of OUT are done, failed, being stained (and by which worker) or "
        "still waiting; the same table as OUT/cohort.csv.",
    )
    csub = p.add_subparsers(dest="cohort_command", required=True, metavar="ACTION")
    status = csub.add_parser("status", help="one line per slide, then the counts")
    status.add_argument("out", metavar="OUT", help="the --out folder of virtual-ihc stain")
    status.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not (out / COHORT_DIR).is_dir():
        print(f"virtual-ihc cohort: {out} holds no cohort (no {COHORT_DIR} folder)", file=sys.stderr)
        return 2
    rows = Cohort(out, worker="status").records()
    width = max([len(Path(r.slide).name) for r in rows] + [5])
    print(
        f"{'slide':<{width}}  {'state':<7}  {'worker':<28}  {'tiles':>6}  {'seconds':>8}  {'MP/s':>7}  error"
    )
    for r in rows:
        print(
            f"{Path(r.slide).name:<{width}}  {r.state:<7}  {r.worker:<28}  {r.tiles:>6}  {r.seconds:>8.1f}  "
            f"{r.mp_per_s:>7.3f}  {r.error}"
        )
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    print(", ".join(f"{counts[s]} {s}" for s in STATES) + f" of {len(rows)} slides")
    return 0
