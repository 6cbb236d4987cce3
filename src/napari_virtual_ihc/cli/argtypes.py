"""argparse ``type=`` factories that refuse out-of-range values with a message naming the limits.

A bad number should stop the command before any work, in argparse's own one-line ``error:`` format
(exit code 2), not become a 4 px tile or a 700 MB region later.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An integer in ``lo..hi``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(lo: float, hi: float, unit: str = "") -> Callable[[str], float]:
    """A finite number in ``lo..hi`` (NaN and infinity refused)."""
    suffix = f" {unit}" if unit else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(
                f"must be a number between {lo:g} and {hi:g}{suffix}, got {text}"
            )
        return value

    parse.__name__ = "number"
    return parse


# ``nuclei.NUCLEI_METHODS``, spelled out so parsing a command line does not import the nuclei package
# (tests/stain/test_cli_analyze.py checks that the two agree)
NUCLEI_CHOICES = ("auto", "cellpose", "offline", "blobs", "classical")
