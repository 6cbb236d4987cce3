"""The study report's folder: figures as PNG, ratings/iMRMC CSVs, results.json and report.html."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import Comparison, StudyResults, imrmc_table
from .errors import StudyError
from .report_figures import (
    accuracy_figure,
    confusion_figure,
    png_bytes,
    reference_figure,
    summary_figure,
    timing_figure,
)
from .report_html import render_html


def results_json(results: StudyResults) -> dict[str, Any]:
    def comp(c: Comparison) -> dict[str, Any]:
        d = asdict(c)
        d["confusion"] = c.confusion.tolist()
        return d

    doc = {
        "categories": results.categories,
        "seed": results.seed,
        "n_boot": results.n_boot,
        "comparisons": [comp(c) for c in results.comparisons],
        "inter_reader": [asdict(x) for x in results.inter_reader],
        "timing": results.timing.to_dict(orient="records"),
        "reference": None
        if results.reference is None
        else {
            "kind": results.reference.kind,
            "threshold": results.reference.threshold,
            "n_cases": len(results.reference.values),
        },
        "vs_reference": [comp(c) for c in results.vs_reference],
        "vs_truth": [asdict(b) for b in results.vs_truth],
    }
    return _finite(doc)


def _finite(obj: Any) -> Any:
    """NaN and inf become null: strict JSON readers reject NaN, and an undefined value is not a number."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def prepare_report_dir(out_dir: str | Path) -> Path:
    """Create the report folder and prove it is writable, before any work is done for it."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise StudyError(f"--out {out} is a file; give a folder for the report")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StudyError(f"cannot write the report into {out}: {exc.strerror or exc}") from exc
    return out


def write_report(results: StudyResults, out_dir: str | Path, title: str = "Reader study report") -> Path:
    """Write report.html, summary/confusion/accuracy/timing PNGs, ratings.csv, imrmc.csv, results.json."""
    out = prepare_report_dir(out_dir)
    try:
        return _write_into(results, out, title)
    except OSError as exc:
        raise StudyError(f"writing the report into {out} failed: {exc.strerror or exc}") from exc


def _write_into(results: StudyResults, out: Path, title: str) -> Path:
    figures: dict[str, bytes] = {}
    for name, fig in (
        ("summary", summary_figure(results)),
        ("confusion", confusion_figure(results)),
        ("accuracy", accuracy_figure(results)),
        ("timing", timing_figure(results)),
        ("reference", reference_figure(results)),
    ):
        if fig is not None:
            figures[name] = png_bytes(fig)
            (out / f"{name}.png").write_bytes(figures[name])
    results.ratings.to_csv(out / "ratings.csv", index=False)
    imrmc_table(results.ratings, results.reference).to_csv(out / "imrmc.csv", index=False)
    (out / "results.json").write_text(
        json.dumps(results_json(results), indent=1, default=_json_default, allow_nan=False)
    )
    report = out / "report.html"
    report.write_text(render_html(results, figures, title), encoding="utf-8")
    return report


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
