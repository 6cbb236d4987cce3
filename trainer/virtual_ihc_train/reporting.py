"""What a run leaves behind for people: metrics CSV (+ TensorBoard when installed), image grids, and a
learning-curve plot drawn from the CSV."""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


class MetricLog:
    """Append-only CSV keyed by step; on resume, rows past the resumed step are dropped first."""

    def __init__(
        self, path: Path, tensorboard_dir: Path | None = None, resume_step: int | None = None
    ) -> None:
        self.path = Path(path)
        self.fields: list[str] | None = None
        if self.path.exists():
            with self.path.open() as f:
                rows = list(csv.DictReader(f))
            if rows:
                self.fields = list(rows[0].keys())
            if resume_step is not None:
                rows = [r for r in rows if int(float(r["step"])) <= resume_step]
            self._rewrite(rows)
        self.tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(tensorboard_dir))
            except Exception:  # tensorboard is optional
                self.tb = None

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        if self.fields is None:
            return
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        if self.fields is None or any(k not in self.fields for k in row):
            old: list[dict[str, Any]] = []
            if self.path.exists() and self.fields is not None:
                with self.path.open() as f:
                    old = list(csv.DictReader(f))
            self.fields = list(dict.fromkeys([*(self.fields or []), *row]))
            self._rewrite(old)
            if not old:
                with self.path.open("w", newline="") as f:
                    csv.DictWriter(f, fieldnames=self.fields).writeheader()
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, int(row["step"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] CHW (or NCHW) float -> uint8 HWC (NHWC) exactly as junyanz ``tensor2im`` (truncation), so
    metrics on these arrays match the images the reference ``test.py`` writes."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2.0 * 255.0).to(torch.uint8)
    return x.permute(*range(x.ndim - 3), -2, -1, -3).numpy()


def save_grid(path: Path, sources: torch.Tensor, fakes: torch.Tensor, reals: torch.Tensor) -> None:
    """One row per sample: H&E | generated | real."""
    from PIL import Image

    rows = [
        np.concatenate([to_uint8(a), to_uint8(f), to_uint8(r)], axis=1)
        for a, f, r in zip(sources, fakes, reals, strict=True)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def plot_learning_curve(csv_path: Path, out: Path, val_csv: Path | None = None) -> None:
    """Generator/discriminator losses against steps (and validation PSNR when present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not Path(csv_path).exists():
        return
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    steps = [float(r["step"]) for r in rows]
    has_val = val_csv is not None and Path(val_csv).exists()
    fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(11 if has_val else 6, 4), squeeze=False)
    ax = axes[0][0]
    for key in rows[0]:
        if key.startswith("loss_"):
            ax.plot(steps, [float(r[key]) if r[key] not in ("", None) else np.nan for r in rows], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    if has_val:
        assert val_csv is not None
        with open(val_csv) as f:
            vrows = list(csv.DictReader(f))
        ax2 = axes[0][1]
        ax2.plot(
            [float(r["step"]) for r in vrows], [float(r["psnr"]) for r in vrows], "o-", label="generated"
        )
        if vrows and "psnr_identity" in vrows[0]:
            ax2.plot(
                [float(r["step"]) for r in vrows],
                [float(r["psnr_identity"]) for r in vrows],
                "--",
                label="identity (input as output)",
            )
        ax2.set_xlabel("step")
        ax2.set_ylabel("held-out PSNR (dB, uint8 RGB, data_range 255)")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


@dataclass
class LearningCurve:
    """``RUN_DIR/learning_curve.png`` from the run's CSVs, and when it was last drawn (drawing it costs more
    than a tiny epoch, so the loop redraws it at most once a minute and once at the end)."""

    run_dir: Path
    with_validation: bool
    last_drawn: float = 0.0

    def draw(self) -> None:
        self.last_drawn = time.perf_counter()
        val = self.run_dir / "val.csv" if self.with_validation else None
        plot_learning_curve(self.run_dir / "metrics.csv", self.run_dir / "learning_curve.png", val)
