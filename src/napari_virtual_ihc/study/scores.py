"""HER2 score categories: their order, display labels and the numeric value used in exports."""

from __future__ import annotations

from .errors import StudyError

ZERO, ULTRALOW, ONE, TWO, THREE, NOT_ASSESSABLE = "0", "ultralow", "1+", "2+", "3+", "not_assessable"

#: Ordinal categories from lowest to highest expression (ultralow is a subset of IHC 0, below 1+).
ORDINAL_ALL = (ZERO, ULTRALOW, ONE, TWO, THREE)

#: What iMRMC and other numeric tools receive.
NUMERIC = {ZERO: 0.0, ULTRALOW: 0.5, ONE: 1.0, TWO: 2.0, THREE: 3.0}

DISPLAY = {
    ZERO: "0",
    ULTRALOW: "Ultralow",
    ONE: "1+",
    TWO: "2+",
    THREE: "3+",
    NOT_ASSESSABLE: "Not assessable",
}

_ALIASES = {
    "0": ZERO,
    "0+": ZERO,
    "null": ZERO,
    "ultralow": ULTRALOW,
    "ultra-low": ULTRALOW,
    "ultra low": ULTRALOW,
    "0-ultralow": ULTRALOW,
    "1": ONE,
    "1+": ONE,
    "2": TWO,
    "2+": TWO,
    "3": THREE,
    "3+": THREE,
    "na": NOT_ASSESSABLE,
    "n/a": NOT_ASSESSABLE,
    "not assessable": NOT_ASSESSABLE,
    "not_assessable": NOT_ASSESSABLE,
    "not-assessable": NOT_ASSESSABLE,
}


def ordinal_categories(ultralow: bool) -> list[str]:
    """The ordered categories a study scores with (4 without ultralow, 5 with it)."""
    return [c for c in ORDINAL_ALL if ultralow or c != ULTRALOW]


def parse_score(text: str) -> str:
    """Normalise a score written by a reader or another tool ("2", "2+", "NA"...)."""
    key = str(text).strip().lower()
    if key not in _ALIASES:
        raise StudyError(f"{text!r} is not a HER2 score (expected 0, ultralow, 1+, 2+, 3+ or not assessable)")
    return _ALIASES[key]


def ordinal_index(score: str, categories: list[str]) -> int:
    return categories.index(score)
