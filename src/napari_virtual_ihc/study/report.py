"""Write a study's results: a self-contained HTML report (plots embedded as PNG), CSVs and JSON."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from .analysis import BinaryAccuracy, Comparison, Estimate, Proportion, StudyResults, imrmc_table
from .errors import StudyError
from .scores import DISPLAY


def confusion_figure(results: StudyResults) -> Figure:
    """One confusion matrix per reader x virtual modality (rows: real IHC score, columns: virtual)."""
    comps = results.comparisons
    n = max(1, len(comps))
    fig = Figure(figsize=(3.6 * n, 3.6), layout="constrained")
    labels = [DISPLAY[c] for c in results.categories]
    for i, c in enumerate(comps):
        ax = fig.add_subplot(1, n, i + 1)
        ConfusionMatrixDisplay(c.confusion, display_labels=labels).plot(ax=ax, colorbar=False, cmap="Blues")
        ax.set_title(f"{c.reader_id}: {c.modality}\naccuracy {c.accuracy.k}/{c.accuracy.n}", fontsize=10)
        ax.set_xlabel(f"{c.modality} score")
        ax.set_ylabel("real IHC score")
    return fig


def bar_heights(props: list[Proportion]) -> tuple[np.ndarray, np.ndarray]:
    """Bar heights (%) and asymmetric error bars for proportions; an empty proportion (n = 0) is a bar of
    height 0 without error bar (its label says n/a), and no error bar is ever negative."""
    est = np.array([0.0 if p.n == 0 else p.estimate for p in props]) * 100
    err = np.array(
        [
            [0.0 if p.n == 0 else p.estimate - p.low for p in props],
            [0.0 if p.n == 0 else p.high - p.estimate for p in props],
        ]
    ).reshape(2, len(props))
    return est, np.clip(np.nan_to_num(err * 100), 0.0, None)


def _bar_labels(props: list[Proportion]) -> list[str]:
    return [f"{p.k}/{p.n}" if p.n else "n/a" for p in props]


def accuracy_figure(results: StudyResults) -> Figure:
    """BCI accuracy and within-one agreement per reader, with Wilson 95 % CIs."""
    comps = results.comparisons
    fig = Figure(figsize=(max(4.0, 1.6 * len(comps) + 2), 3.4), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(comps))
    for off, attr, name in ((-0.18, "accuracy", "same score"), (0.18, "within_one", "within one category")):
        p = [getattr(c, attr) for c in comps]
        est, err = bar_heights(p)
        bars = ax.bar(x + off, est, width=0.34, yerr=err, capsize=4, label=name)
        ax.bar_label(bars, labels=_bar_labels(p), fontsize=7)
    ax.set_xticks(x, [f"{c.reader_id}\n{c.modality}" for c in comps])
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of cases (Wilson 95 % CI)")
    ax.legend(loc="upper right", fontsize=8)
    if not comps:
        ax.text(0.5, 0.5, "no virtual image scored", ha="center", va="center", transform=ax.transAxes)
    return fig


def reference_figure(results: StudyResults) -> Figure | None:
    """Accuracy of every reader x modality (real included) against the reference standard."""
    if results.vs_reference:
        items = [(f"{c.reader_id}\n{c.modality}", c.accuracy) for c in results.vs_reference]
        what = "same score as the reference"
    elif results.vs_truth:
        items = [(f"{c.reader_id}\n{c.modality}", c.accuracy) for c in results.vs_truth]
        what = f"agrees with the reference (positive from {DISPLAY[results.vs_truth[0].threshold]})"
    else:
        return None
    fig = Figure(figsize=(max(4.0, 1.1 * len(items) + 2), 3.4), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    props = [p for _, p in items]
    est, err = bar_heights(props)
    x = np.arange(len(items))
    bars = ax.bar(x, est, width=0.6, yerr=err, capsize=4, color="tab:green")
    ax.bar_label(bars, labels=_bar_labels(props), fontsize=7, label_type="center")
    ax.set_xticks(x, [name for name, _ in items])
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of cases (Wilson 95 % CI)")
    ax.set_title(f"Accuracy against the reference standard: {what}", fontsize=10)
    return fig


def timing_figure(results: StudyResults) -> Figure | None:
    t = results.ratings.dropna(subset=["seconds"])
    if t.empty:
        return None
    groups = list(t.groupby(["reader_id", "modality"]).seconds)
    fig = Figure(figsize=(max(4.0, 1.3 * len(groups) + 2), 3.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.boxplot([g.to_numpy() for _, g in groups], tick_labels=[f"{r}\n{m}" for (r, m), _ in groups])
    ax.set_ylabel("active seconds per case")
    return fig


def summary_figure(results: StudyResults) -> Figure:
    """The report's main panel in one image: accuracy with CIs, kappas and tests, confusion matrices."""
    comps = results.comparisons
    n = max(1, len(comps))
    fig = Figure(figsize=(max(10.5, 3.6 * n + 1), 7.6), layout="constrained")
    subfigs = fig.subfigures(2, 1)
    top, bottom = subfigs[0], subfigs[1]  # type: ignore[index]
    fig.suptitle(
        f"Reader study: {results.ratings.reader_id.nunique()} readers x "
        f"{results.ratings.groupby('reader_id').size().max() if len(results.ratings) else 0} images "
        f"({results.ratings.case_id.nunique()} cases)",
        fontsize=13,
    )
    ax, tab = top.subplots(1, 2, width_ratios=[1, 1.15])
    x = np.arange(len(comps))
    for off, attr, name in ((-0.18, "accuracy", "same score"), (0.18, "within_one", "within one")):
        p = [getattr(c, attr) for c in comps]
        est, err = bar_heights(p)
        bars = ax.bar(x + off, est, width=0.34, yerr=err, capsize=4, label=name)
        ax.bar_label(bars, labels=_bar_labels(p), fontsize=8, label_type="center")
    ax.set_xticks(x, [f"{c.reader_id}\n{c.modality}" for c in comps])
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of cases, Wilson 95 % CI")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Virtual scored like its real IHC", fontsize=10)
    tab.axis("off")
    cells = [
        [
            c.reader_id,
            _pct_short(c.accuracy),
            _estimate(c.kappa_quadratic, 2),
            _fmt(c.mcnemar_3plus.pvalue if c.mcnemar_3plus else None, 3),
            _fmt(c.stuart_maxwell.pvalue if c.stuart_maxwell else None, 3),
        ]
        for c in comps
    ]
    for ir in results.inter_reader:
        cells.append([f"Fleiss κ {ir.modality}", _kappa(ir.fleiss, ir.note), "", "", ""])
    t = tab.table(
        cellText=cells,
        colLabels=[
            "reader",
            "accuracy %\n(95 % CI)",
            "κ quadratic\n(95 % CI)",
            "McNemar\n3+ p",
            "Stuart-\nMaxwell p",
        ],
        colWidths=[0.22, 0.27, 0.27, 0.14, 0.14],
        loc="center",
        cellLoc="center",
    )
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.scale(1.0, 2.2)
    labels = [DISPLAY[c] for c in results.categories]
    for i, c in enumerate(comps):
        cax = bottom.add_subplot(1, n, i + 1)
        ConfusionMatrixDisplay(c.confusion, display_labels=labels).plot(ax=cax, colorbar=False, cmap="Blues")
        cax.set_title(f"{c.reader_id}", fontsize=10)
        cax.set_xlabel(f"{c.modality} score")
        cax.set_ylabel("real IHC score")
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _pct(p: Any) -> str:
    if p.n == 0:
        return "n/a (no case)"
    return f"{p.k}/{p.n} = {100 * p.estimate:.1f} % ({100 * p.low:.1f}–{100 * p.high:.1f})"


def _pct_short(p: Proportion) -> str:
    if p.n == 0:
        return "n/a"
    return f"{100 * p.estimate:.1f} ({100 * p.low:.1f}–{100 * p.high:.1f})"


def _estimate(e: Estimate, digits: int = 3) -> str:
    """A kappa with its CI; an undefined one says why instead of 'nan'."""
    if not math.isfinite(e.value):
        return e.note or "undefined"
    if not (math.isfinite(e.low) and math.isfinite(e.high)):
        return f"{_fmt(e.value, digits)}" + (f" ({e.note})" if e.note else "")
    return f"{_fmt(e.value, digits)} ({_fmt(e.low, digits)}–{_fmt(e.high, digits)})"


def _kappa(value: float, note: str = "") -> str:
    return _fmt(value) if math.isfinite(value) else (note or "undefined")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _test(t: Any) -> str:
    if t is None:
        return "n/a (no disagreement or no case)"
    df = f", df {t.df:g}" if t.df is not None else ""
    return f"{_fmt(t.statistic, 2)} (p = {_fmt(t.pvalue, 4)}{df})"


def comparison_rows(comps: list[Comparison]) -> list[list[str]]:
    return [
        [
            c.reader_id,
            c.modality,
            str(c.n_pairs),
            str(c.n_not_assessable),
            _pct(c.accuracy),
            _pct(c.within_one),
            _estimate(c.kappa_linear),
            _estimate(c.kappa_quadratic),
            _test(c.mcnemar_3plus),
            _test(c.mcnemar_0),
            _test(c.stuart_maxwell),
        ]
        for c in comps
    ]


COMPARISON_HEADERS = [
    "reader",
    "virtual modality",
    "pairs",
    "not assessable",
    "accuracy, same score (Wilson 95 % CI)",
    "within one category",
    "Cohen κ linear (bootstrap 95 % CI)",
    "Cohen κ quadratic (bootstrap 95 % CI)",
    "McNemar 3+ vs rest",
    "McNemar 0 vs ≥1+",
    "Stuart-Maxwell",
]


def render_html(results: StudyResults, figures: dict[str, bytes], title: str = "Reader study report") -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}",
        "td,th{border:1px solid #bbb;padding:4px 8px;font-size:13px}th{background:#eef}",
        "img{max-width:100%}.note{color:#555;font-size:12px}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{results.ratings.reader_id.nunique()} readers, {results.ratings.case_id.nunique()} cases, "
        f"{len(results.ratings)} ratings; categories {', '.join(DISPLAY[c] for c in results.categories)}. "
        f"Bootstrap: {results.n_boot} case resamples, seed {results.seed}.</p>",
        "<h2>Virtual vs real, per reader</h2>",
        "<p class='note'>A virtual image is accurate when its reader gives it the same HER2 score as the "
        "real IHC of the same case (the BCI paper's criterion). Wilson CIs from statsmodels "
        "proportion_confint; κ from scikit-learn cohen_kappa_score with a scipy bootstrap over cases; "
        "McNemar exact (statsmodels); Stuart-Maxwell from statsmodels SquareTable.homogeneity.</p>",
        _table(COMPARISON_HEADERS, comparison_rows(results.comparisons))
        if results.comparisons
        else "<p>No virtual image was scored.</p>",
    ]
    parts += reference_section(results, figures)
    if "summary" in figures:
        parts.append(_img(figures["summary"], "summary"))
    if "accuracy" in figures:
        parts.append(_img(figures["accuracy"], "accuracy"))
    if "confusion" in figures:
        parts += ["<h2>Confusion matrices</h2>", _img(figures["confusion"], "confusion matrices")]
    parts.append("<h2>Agreement between readers</h2>")
    if results.inter_reader:
        rows = []
        for ir in results.inter_reader:
            for p in ir.pairwise:
                rows.append(
                    [
                        ir.modality,
                        str(ir.n_cases),
                        _kappa(ir.fleiss, ir.note),
                        f"{p['reader_a']} – {p['reader_b']}",
                        str(p["n"]),
                        _kappa(p["kappa_unweighted"], p.get("note", "")),
                        _kappa(p["kappa_linear"], p.get("note", "")),
                        _kappa(p["kappa_quadratic"], p.get("note", "")),
                    ]
                )
        parts.append(
            _table(
                [
                    "images",
                    "cases all read",
                    "Fleiss κ",
                    "pair",
                    "cases",
                    "Cohen κ",
                    "κ linear",
                    "κ quadratic",
                ],
                rows,
            )
        )
    else:
        parts.append("<p>Needs at least two readers scoring the same cases.</p>")
    parts.append("<h2>Time per case (active seconds, idle excluded)</h2>")
    t = results.timing
    parts.append(
        _table(
            ["reader", "modality", "n", "median s", "mean s", "total s"],
            [
                [
                    r.reader_id,
                    r.modality,
                    str(r.n),
                    _fmt(r.median_s, 1),
                    _fmt(r.mean_s, 1),
                    _fmt(r.total_s, 0),
                ]
                for r in t.itertuples()
            ],
        )
    )
    if "timing" in figures:
        parts.append(_img(figures["timing"], "time per case"))
    parts.append("<h2>Progress</h2>")
    parts.append(
        _table(list(results.progress.columns), [[str(v) for v in r] for r in results.progress.to_numpy()])
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def reference_section(results: StudyResults, figures: dict[str, bytes]) -> list[str]:
    """HTML of the accuracy against the reference standard (nothing without a reference)."""
    ref = results.reference
    if ref is None:
        return []
    parts = [
        "<h2>Against the reference standard</h2>",
        f"<p class='note'>{len(ref.values)} cases have a reference ({ref.kind}). Each reader's score of every "
        "image (real and virtual) is compared with the case's reference; not-assessable reads are left out "
        "and counted. iMRMC truth rows: positive from "
        f"{DISPLAY[ref.threshold]}.</p>",
    ]
    if results.vs_reference:
        headers = [
            "reader",
            "modality",
            "cases",
            "not assessable",
            "same score (Wilson 95 % CI)",
            "within one category",
            "Cohen κ linear",
            "Cohen κ quadratic",
        ]
        rows = [
            [
                c.reader_id,
                c.modality,
                str(c.n_pairs),
                str(c.n_not_assessable),
                _pct(c.accuracy),
                _pct(c.within_one),
                _estimate(c.kappa_linear),
                _estimate(c.kappa_quadratic),
            ]
            for c in results.vs_reference
        ]
        parts.append(_table(headers, rows))
    if results.vs_truth:
        parts.append(_table(BINARY_HEADERS, binary_rows(results.vs_truth)))
    if "reference" in figures:
        parts.append(_img(figures["reference"], "accuracy against the reference"))
    return parts


BINARY_HEADERS = [
    "reader",
    "modality",
    "cases",
    "not assessable",
    "accuracy (Wilson 95 % CI)",
    "sensitivity",
    "specificity",
    "Cohen κ",
]


def binary_rows(items: list[BinaryAccuracy]) -> list[list[str]]:
    return [
        [
            b.reader_id,
            b.modality,
            str(b.n),
            str(b.n_not_assessable),
            _pct(b.accuracy),
            _pct(b.sensitivity),
            _pct(b.specificity),
            _estimate(b.kappa),
        ]
        for b in items
    ]


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


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
            figures[name] = _png(fig)
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
