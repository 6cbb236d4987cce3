"""``virtual-ihc-train`` (stub until the trainer issue)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="virtual-ihc-train")
    parser.parse_args(argv)
    return 0
