"""The reference standard of a study: a HER2 score per case (clinical score) or a binary class (FISH).

Given as a ``reference`` column of the case table (kept in the unblinding key, never in the bundle) or as
a CSV ``case_id, reference`` at analysis time. A score reference is compared category by category with
each reader's scores; a binary one with the reader's scores dichotomised at ``threshold`` (positive from
that category up). iMRMC's truth rows are binary: a score reference counts as positive from ``threshold``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import StudyError
from .scores import NOT_ASSESSABLE, THREE, ordinal_categories, parse_score

SCORE_REFERENCE = "score"
BINARY_REFERENCE = "binary"

_BINARY = {
    "positive": 1,
    "pos": 1,
    "amplified": 1,
    "her2-positive": 1,
    "negative": 0,
    "neg": 0,
    "not amplified": 0,
    "not-amplified": 0,
    "non-amplified": 0,
    "nonamplified": 0,
    "her2-negative": 0,
}


@dataclass(frozen=True)
class Reference:
    kind: str  # SCORE_REFERENCE or BINARY_REFERENCE
    values: pd.Series  # indexed by case_id: score categories, or 0/1
    threshold: str = THREE  # positive from this score up (truth rows; dichotomising readers)

    def truth(self) -> pd.Series:
        """0 (signal-absent) / 1 (signal-present) per case, as iMRMC's truth rows want."""
        if self.kind == BINARY_REFERENCE:
            return self.values.astype(int)
        cats = ordinal_categories(True)
        cut = cats.index(self.threshold)
        return self.values.map(lambda s: int(cats.index(s) >= cut))


def parse_reference(values: dict[str, str], threshold: str = THREE) -> Reference | None:
    """A Reference from per-case texts (empty texts: no reference for that case); None when all empty."""
    given = {c: str(v).strip() for c, v in values.items() if str(v or "").strip()}
    if not given:
        return None
    threshold = parse_score(threshold)
    if threshold == NOT_ASSESSABLE:
        raise StudyError("the positive threshold must be a HER2 score")
    binary = {c: _BINARY.get(v.lower()) for c, v in given.items()}
    if all(b is not None for b in binary.values()):
        return Reference(BINARY_REFERENCE, pd.Series(binary, dtype=int).sort_index(), threshold)
    scores: dict[str, str] = {}
    for case, text in given.items():
        try:
            score = parse_score(text)
        except StudyError as exc:
            raise StudyError(
                f"reference of case {case!r}: {text!r} is neither a HER2 score nor positive/negative "
                "(amplified/not amplified); one kind per study"
            ) from exc
        if score == NOT_ASSESSABLE:
            continue  # no reference for this case
        scores[case] = score
    if not scores:
        return None
    return Reference(SCORE_REFERENCE, pd.Series(scores, dtype=object).sort_index(), threshold)


def reference_from_key(key: dict[str, Any] | None, threshold: str = THREE) -> Reference | None:
    cases = (key or {}).get("cases") or {}
    return parse_reference({c: (v or {}).get("reference", "") for c, v in cases.items()}, threshold)


def read_reference_csv(path: str | Path, threshold: str = THREE) -> Reference | None:
    """``case_id, reference`` (CSV or TSV) for studies without a key (glass) or a later reference."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise StudyError(f"cannot read the reference table {path}: {exc}") from exc
    delimiter = "\t" if "\t" in (text.splitlines() or [""])[0] else ","
    rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    if not rows or not {"case_id", "reference"} <= set(rows[0]):
        raise StudyError(f"{path.name}: needs case_id and reference columns")
    return parse_reference({r["case_id"].strip(): r["reference"] or "" for r in rows}, threshold)
