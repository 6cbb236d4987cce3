"""fp16 that never stops a run: an overflowing batch is re-run wider, counted, and fp16 dropped when frequent."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from engine_helpers import small_generator
from torch import nn

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.devices import calibration as cal
from napari_virtual_ihc.inference.errors import NonFiniteOutputError
from napari_virtual_ihc.inference.runner import BatchRunner
from napari_virtual_ihc.slides.base import ArraySlide

CPU = torch.device("cpu")


class Overflowing(nn.Module):
    """The identity, through two 1x1 convolutions of gain 300 (weights fp16 holds) scaled back: in fp16 (max
    65504) the second overflows on inputs above ~0.73 (pixels brighter than ~220), in fp32 nothing does."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(3, 3, 1, bias=False), nn.Conv2d(3, 3, 1, bias=False))
        with torch.no_grad():
            for conv in self.convs:
                conv.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1) * 300)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x) / 9e4


def _windows() -> np.ndarray:
    dark = np.full((16, 16, 3), 100, np.uint8)
    bright = np.full((16, 16, 3), 250, np.uint8)
    return np.stack([dark, bright, dark])


def test_an_overflowing_fp16_batch_is_rerun_wider_and_the_run_goes_on():
    runner = BatchRunner(Overflowing(), CPU, "fp16", batch=1)  # CPU autocast fp16 overflows like a GPU's
    out = runner(_windows())
    assert runner.batches == 3 and runner.fallbacks == 1  # only the bright window's batch
    assert runner.fallback_precision == ("bf16" if cal.cpu_has_bf16() else "fp32")
    assert np.abs(out.astype(int) - _windows().astype(int)).max() <= 1  # the identity, every window
    strict = BatchRunner(Overflowing(), CPU, "fp16", batch=1, fallback=False)
    with pytest.raises(NonFiniteOutputError, match="NaN or infinity"):
        strict(_windows())
    assert BatchRunner(Overflowing(), CPU, "fp32", batch=1).fallback_precision is None


def test_calibration_fails_an_overflowing_fp16_and_drops_it_after_frequent_overflows(tmp_path, monkeypatch):
    monkeypatch.setenv(cal.CACHE_ENV, str(tmp_path))
    window = _windows()[1:2]
    fp16 = cal.Candidate("fp16")

    def prepare(c: cal.Candidate) -> BatchRunner:  # the calibration's runners have no fallback
        return BatchRunner(Overflowing(), CPU, c.precision, 1, fallback=False)

    choice = cal.calibrate(window, [cal.REFERENCE, fp16], prepare, CPU)
    assert choice.precision == "fp32"
    failed = next(m for m in choice.measurements if m["candidate"] == "fp16")
    assert not failed["passed"] and "NaN or infinity" in failed["error"]
    # A run whose fp16 batches overflowed often: fp16 dropped for this model on this device, the cached
    # choice forgotten; rare overflows (below FP16_DROP_SHARE) keep it.
    key = cal.cache_key(CPU, "sha-x", "auto", None)
    cal.store_cached(key, cal.ComputeChoice("fp16", False, "measured"))
    assert not cal.record_fp16_overflow(CPU, "sha-x", batches=100, fallbacks=2)
    assert cal.fp16_dropped(CPU, "sha-x") is None and cal.load_cached(key) is not None
    assert cal.record_fp16_overflow(CPU, "sha-x", batches=100, fallbacks=9)
    assert "9 of 100 batches" in (cal.fp16_dropped(CPU, "sha-x") or "")
    assert cal.load_cached(key) is None and cal.fp16_dropped(CPU, "sha-other") is None
    assert not cal.record_fp16_overflow(CPU, "sha-x", batches=100, fallbacks=9)  # recorded once


def test_run_json_counts_batches_and_fallbacks(tmp_path):
    rgb = np.full((96, 96, 3), 180, np.uint8)
    model = small_generator("batch", ngf=4, n_blocks=1)
    rep = stain_slide(ArraySlide(rgb, mpp=0.5), model, tmp_path / "s.ome.zarr", EngineSettings(tile=64))
    data = json.loads((tmp_path / "s.run.json").read_text())
    assert (
        data["settings"]["fp16_fallbacks"] == 0
        and data["settings"]["batches"] == rep.settings["batches"] >= 1
    )
    assert data["settings"]["fp16_dropped"] is False and data["settings"]["device_described"].startswith(
        "cpu"
    )
