"""What a study coordinator runs from the reader widget: answers -> analysis -> report, in stages.

A generator, so a GUI shows each stage and can stop between them (the bootstrap is the long one); the
report folder is checked first, so a read-only or file ``out`` fails before any work.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import StudyError

if TYPE_CHECKING:
    import pandas as pd

    from .analysis import StudyResults
    from .reference import Reference

STAGES = ("report folder checked", "answers read", "analysed", "writing the report")


def iter_answers_report(
    key: str | Path | None,
    answers: str | Path,
    out: str | Path,
    n_boot: int = 2000,
    cancel: threading.Event | None = None,
) -> Generator[tuple[int, int, str], None, Path | None]:
    """Yields ``(done, total, stage)`` after each stage; returns report.html, or None once ``cancel`` is set
    (then no report is written)."""
    from .bundle import load_key
    from .ratings import collect_ratings
    from .reference import reference_from_key
    from .report import prepare_report_dir, write_report

    total = len(STAGES)
    prepare_report_dir(out)
    yield 1, total, STAGES[0]
    k = load_key(key) if key is not None and str(key) else None
    ratings = collect_ratings(k, [answers])
    if ratings.empty:
        raise StudyError("no answers to analyse")
    yield 2, total, STAGES[1]
    if cancel is not None and cancel.is_set():
        return None
    results = analyze_answers(ratings, k, reference=reference_from_key(k), n_boot=n_boot)
    yield 3, total, STAGES[2]
    if cancel is not None and cancel.is_set():
        return None
    # the last point a cancel stops at: once writing starts there is no yield, so a report is either written
    # whole and returned, or not written (a cancel that arrived during the write must not say "no report")
    yield 4, total, STAGES[3]
    if cancel is not None and cancel.is_set():
        return None
    return write_report(results, out)


def analyze_answers(
    ratings: pd.DataFrame,
    key: dict[str, Any] | None,
    *,
    reference: Reference | None,
    n_boot: int,
    ultralow: bool | None = None,
    seed: int = 0,
) -> StudyResults:
    """The study's statistics as the CLI and the reader widget both compute them: the key's modalities and
    its number of scored cases per reader (so a reader who skipped cases shows as incomplete)."""
    from .analysis import analyze
    from .ratings import key_modalities

    expected = sum(1 for v in (key or {}).get("images", {}).values() if v.get("role") == "score") or None
    return analyze(
        ratings,
        ultralow=ultralow,
        n_boot=n_boot,
        seed=seed,
        expected_per_reader=expected,
        modalities=key_modalities(key),
        reference=reference,
    )
