"""``virtual-ihc``: argument parsing only; every subcommand calls the core.

Each subcommand lives in its own module with ``add_parser(subparsers)`` that registers it and sets
``func`` (called with the parsed namespace, returning an exit code).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from . import analyze, cohort, compare, convert, demo, export, pairs, register, stain, study

SUBCOMMANDS = (demo, stain, cohort, convert, analyze, export, study, register, compare, pairs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="virtual-ihc",
        description="Virtual HER2 IHC from H&E slides: stain, analyse, run reader studies.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
