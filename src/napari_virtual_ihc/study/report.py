"""Write a study's results: a self-contained HTML report (plots embedded as PNG), CSVs and JSON.

The public entry points; the work is split by job: ``report_figures`` (matplotlib figures),
``report_html`` (the page) and ``report_files`` (the report folder and what goes in it).
"""

from __future__ import annotations

from .report_figures import (
    accuracy_figure,
    bar_heights,
    confusion_figure,
    reference_figure,
    summary_figure,
    timing_figure,
)
from .report_files import prepare_report_dir, results_json, write_report
from .report_html import render_html

__all__ = [
    "accuracy_figure",
    "bar_heights",
    "confusion_figure",
    "prepare_report_dir",
    "reference_figure",
    "render_html",
    "results_json",
    "summary_figure",
    "timing_figure",
    "write_report",
]
