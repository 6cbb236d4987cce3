"""The study report as one self-contained HTML page (figures embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
from typing import Any

from .analysis import BinaryAccuracy, Comparison, StudyResults
from .report_text import estimate_text, kappa_text, number, percent
from .scores import DISPLAY


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _test(t: Any) -> str:
    if t is None:
        return "n/a (no disagreement or no case)"
    df = f", df {t.df:g}" if t.df is not None else ""
    return f"{number(t.statistic, 2)} (p = {number(t.pvalue, 4)}{df})"


def comparison_rows(comps: list[Comparison]) -> list[list[str]]:
    return [
        [
            c.reader_id,
            c.modality,
            str(c.n_pairs),
            str(c.n_not_assessable),
            percent(c.accuracy),
            percent(c.within_one),
            estimate_text(c.kappa_linear),
            estimate_text(c.kappa_quadratic),
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
                        kappa_text(ir.fleiss, ir.note),
                        f"{p['reader_a']} – {p['reader_b']}",
                        str(p["n"]),
                        kappa_text(p["kappa_unweighted"], p.get("note", "")),
                        kappa_text(p["kappa_linear"], p.get("note", "")),
                        kappa_text(p["kappa_quadratic"], p.get("note", "")),
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
                    number(r.median_s, 1),
                    number(r.mean_s, 1),
                    number(r.total_s, 0),
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
        # the comparison table's columns without its paired tests (no second reading against a reference)
        rows = [row[: len(headers)] for row in comparison_rows(results.vs_reference)]
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
            percent(b.accuracy),
            percent(b.sensitivity),
            percent(b.specificity),
            estimate_text(b.kappa),
        ]
        for b in items
    ]


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
