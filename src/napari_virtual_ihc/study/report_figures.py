"""The study report's figures (matplotlib, no pyplot state): summary, confusion, accuracy, timing, reference."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from .analysis import Proportion, StudyResults
from .report_text import estimate_text, kappa_text, number, percent_short
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
            percent_short(c.accuracy),
            estimate_text(c.kappa_quadratic, 2),
            number(c.mcnemar_3plus.pvalue if c.mcnemar_3plus else None, 3),
            number(c.stuart_maxwell.pvalue if c.stuart_maxwell else None, 3),
        ]
        for c in comps
    ]
    for ir in results.inter_reader:
        cells.append([f"Fleiss κ {ir.modality}", kappa_text(ir.fleiss, ir.note), "", "", ""])
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


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()
