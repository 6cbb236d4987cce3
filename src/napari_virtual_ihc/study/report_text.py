"""How the report writes a figure as text (shared by the summary figure and the HTML): n/a for undefined
values, percentages with their CI, kappas with their bootstrap CI or the reason they are undefined."""

from __future__ import annotations

import math
from typing import Any

from .analysis import Estimate, Proportion


def number(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def percent(p: Any) -> str:
    if p.n == 0:
        return "n/a (no case)"
    return f"{p.k}/{p.n} = {100 * p.estimate:.1f} % ({100 * p.low:.1f}–{100 * p.high:.1f})"


def percent_short(p: Proportion) -> str:
    if p.n == 0:
        return "n/a"
    return f"{100 * p.estimate:.1f} ({100 * p.low:.1f}–{100 * p.high:.1f})"


def estimate_text(e: Estimate, digits: int = 3) -> str:
    """A kappa with its CI; an undefined one says why instead of 'nan'."""
    if not math.isfinite(e.value):
        return e.note or "undefined"
    if not (math.isfinite(e.low) and math.isfinite(e.high)):
        return f"{number(e.value, digits)}" + (f" ({e.note})" if e.note else "")
    return f"{number(e.value, digits)} ({number(e.low, digits)}–{number(e.high, digits)})"


def kappa_text(value: float, note: str = "") -> str:
    return number(value) if math.isfinite(value) else (note or "undefined")
