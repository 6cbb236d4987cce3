"""The paper's table beside ours: Markdown, CSV (one line per row, group and source) and a bar chart.

Each row states its protocol: how the generator ran (batch norm / dropout, from the evaluation's record), the
PSNR/SSIM convention, the crop, and every feature extractor's weights file with its SHA-256. A file whose
checksum does not start with the hash in its published name (torchvision's and pytorch-fid's files carry one)
is marked as not the published weights, so such a figure is not a comparison with the paper.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

from .preflight import WeightsFile
from .tables import TABLES, PaperTable

# sha256 of the small published head files (the files in tests/data/metric-heads are copied unchanged from the
# lpips 0.1.4 and DISTS-pytorch 0.1 wheels)
KNOWN_SHA256 = {
    "alex.pth": "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    "vgg.pth": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    "weights.pt": "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218",
}
NAME_HASH = re.compile(r"-([0-9a-f]{8})\.pth$")


def published_weights(w: WeightsFile) -> bool | None:
    """True/False when the file's checksum can be checked against its published one, None when it cannot."""
    m = NAME_HASH.search(w.path.name)
    if m:
        return w.sha256.startswith(m.group(1))
    if w.path.name in KNOWN_SHA256:
        return w.sha256 == KNOWN_SHA256[w.path.name]
    return None


def weights_line(weights: dict[str, WeightsFile]) -> tuple[str, bool]:
    """One line naming each weights file and its checksum; False when any is not the published file."""
    parts, all_published = [], True
    for w in weights.values():
        ok = published_weights(w)
        tag = {True: "published file", False: "NOT the published weights", None: "checksum not known"}[ok]
        all_published &= ok is not False
        parts.append(f"{w.path.name} sha256 {w.sha256[:12]} ({tag})")
    return ("; ".join(parts) if parts else "no weights files"), all_published


def _fmt(fmt: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return fmt.format(v)


def row_protocol(table: PaperTable, result: dict[str, Any], wline: str, short: bool = False) -> str:
    """How our figure was made: the generator's mode, the metric convention, the crops, the weights."""
    proto = result.get("protocol", {})
    if short and "bn_stats" in proto:
        ran = f"bn_stats {proto['bn_stats']}, dropout {proto['dropout']} (seed {proto['dropout_seed']})"
    else:
        ran = proto.get("description", "")
    counter = result.get("nuclei_counter")
    extra = f"; nuclei: {counter}" if counter else ""
    convention = table.short_convention if short else table.psnr_convention
    crop = f"train: {result.get('train_crop', '?')}, evaluation: whole images"
    return f"G: {ran}; {convention}; {crop}; weights: {wline}{extra}"


def write_report(
    table: PaperTable,
    plans: list[Any],
    results: dict[str, dict[str, Any]],
    weights: dict[str, WeightsFile],
    run_dir: Path,
) -> dict[str, Path]:
    wline, all_published = weights_line(weights)
    cols = table.columns
    md = [f"# {table.key}: {table.title}", "", f"Paper: {table.citation}.", ""]
    if not all_published:
        md += [
            "**Not a comparison with the paper: at least one metric's weights file is not the published one "
            f"({wline}).**",
            "",
        ]
    md += [
        f"Checkpoint selection: {table.selection_text}. Evaluated on the {table.eval_split} split.",
        f"Metric conventions: {table.psnr_convention}. Crop: {table.crop}. Feature extractors: {table.features}.",
        "",
    ]
    left_out = [m for m in TABLES[table.key].metrics if m not in table.metrics]
    if left_out:
        md += [f"Left out with --metrics (their columns are empty for our rows): {', '.join(left_out)}.", ""]
    csv_rows: list[dict[str, Any]] = []
    for group in table.groups:
        if len(table.groups) > 1:
            md += [f"## HER2 class {group}" if group != "overall" else "## overall", ""]
        md.append("| row | source | " + " | ".join(c.header for c in cols) + " | protocol |")
        md.append("|---" * (len(cols) + 3) + "|")
        for p in plans:
            row, result = p.row, results.get(p.row.key)
            paper = row.published.get(group, {})
            cells = [_fmt(c.fmt, paper.get(c.key)) or "-" for c in cols]
            md.append(f"| {row.label} | paper | " + " | ".join(cells) + " | as published |")
            ours = (result or {}).get("summary", {}).get(group, {})
            empty = " | ".join("" for _ in cols)
            if result is None:
                md.append(f"| {row.label} | ours | {empty} | not run: {p.skip_reason or 'not run'} |")
            elif not ours:
                md.append(f"| {row.label} | ours | {empty} | no {table.eval_split} images in this group |")
            else:
                cells = [_fmt(c.fmt, ours.get(c.key)) for c in cols]
                where = f"{result.get('checkpoint')} (step {result.get('step')}, epoch {result.get('epoch')})"
                proto = row_protocol(table, result, wline, short=True)
                md.append(f"| {row.label} | ours | " + " | ".join(cells) + f" | {where}; {proto} |")
            for source, values in (("paper", paper), ("ours", ours)):
                csv_rows.append(
                    {
                        "table": table.key,
                        "row": row.key,
                        "label": row.label,
                        "group": group,
                        "source": source,
                        **{c.key: values.get(c.key, "") for c in cols},
                        "n_images": ours.get("n", "") if source == "ours" else "",
                        "preset": row.preset or "",
                        "checkpoint": (result or {}).get("checkpoint", "") if source == "ours" else "",
                        "protocol": (
                            row_protocol(table, result, wline)
                            if source == "ours" and result
                            else ("as published" if source == "paper" else "")
                        ),
                        "differs_from_paper": row.note,
                        "status": "" if source == "paper" or result else (p.skip_reason or "not run"),
                        "citation": table.citation,
                    }
                )
        md.append("")
    md.append("Rows and how they differ from the paper:")
    for p in plans:
        if p.row.note:
            md.append(f"- {p.row.label}: {p.row.note}.")
    for note in table.notes:
        md.append(f"- {note}")
    paths = {
        "md": run_dir / f"{table.key}.md",
        "csv": run_dir / f"{table.key}.csv",
        "png": run_dir / f"{table.key}.png",
    }
    paths["md"].write_text("\n".join(md) + "\n")
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(csv_rows[0]))
        writer.writeheader()
        writer.writerows(csv_rows)
    bar_chart(table, plans, results, paths["png"], all_published)
    return paths


def bar_chart(
    table: PaperTable, plans: list[Any], results: dict[str, dict[str, Any]], out: Path, all_published: bool
) -> None:
    """One panel per (group, metric): the paper's value and ours for every row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups, cols = table.groups, table.columns
    fig, axes = plt.subplots(
        len(groups), len(cols), figsize=(3.2 * len(cols), 2.8 * len(groups) + 0.6), squeeze=False
    )
    labels = [p.row.key for p in plans]
    x = np.arange(len(labels))
    for gi, group in enumerate(groups):
        for ci, col in enumerate(cols):
            ax = axes[gi][ci]
            paper = [p.row.published.get(group, {}).get(col.key, np.nan) for p in plans]
            ours = [
                (results.get(p.row.key) or {}).get("summary", {}).get(group, {}).get(col.key, np.nan)
                for p in plans
            ]
            ours = [np.nan if v is None else v for v in ours]
            ax.bar(x - 0.2, paper, 0.4, label="paper", color="#888888")
            ax.bar(x + 0.2, ours, 0.4, label="ours", color="#b5651d")
            arrow = "higher is better" if col.higher_is_better else "lower is better"
            ax.set_title(f"{group}: {col.header}\n({arrow})", fontsize=8)
            ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=6)
            ax.tick_params(axis="y", labelsize=7)
    axes[0][0].legend(fontsize=7)
    title = f"{table.key}: paper (grey) and this run (brown)"
    if not all_published:
        title += " - NOT the published metric weights: not a comparison"
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(
        left=0.06, right=0.98, top=0.92, bottom=0.12, hspace=1.1, wspace=0.35
    )  # no tight_layout:
    # it measures every label and costs seconds
    fig.savefig(out, dpi=90)
    plt.close(fig)
