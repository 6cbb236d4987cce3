"""Measured precision and kernels: the fastest candidate within the quality gate, cached per machine and model."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from engine_helpers import small_generator

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.devices import calibration as cal
from napari_virtual_ihc.inference.devices import resolve_precision
from napari_virtual_ihc.inference.devices.calibration import Candidate, Measurement
from napari_virtual_ihc.inference.engine import run_json_path
from napari_virtual_ihc.inference.errors import DeviceError
from napari_virtual_ihc.inference.normalization import fold_frozen_norms, freeze_normalization
from napari_virtual_ihc.inference.variants import ModelVariants
from napari_virtual_ihc.slides.base import ArraySlide

CPU = torch.device("cpu")
ALL = [Candidate("fp32"), Candidate("fp32", True), Candidate("bf16")]


def _variants(ngf: int = 32) -> ModelVariants:
    model = small_generator("batch", ngf=ngf, n_blocks=2)  # trunk 128 channels: Winograd applies
    frozen = freeze_normalization(model.module)
    fold_frozen_norms(frozen)
    return ModelVariants(frozen, CPU, "minus_one_one", "minus_one_one")


@pytest.fixture(scope="module")
def window(he_1024) -> np.ndarray:
    return np.ascontiguousarray(he_1024[200:232, 300:332])[None]


@pytest.mark.parametrize("fastest", range(len(ALL)))
def test_rule_keeps_the_fastest_candidate_that_passes(fastest):
    ms = [
        Measurement(c, seconds=1.0 + k, psnr_db=50.0, max_error=2, p999_error=1.0) for k, c in enumerate(ALL)
    ]
    ms[fastest].seconds = 0.1
    assert cal.choose(ms).candidate == ALL[fastest]
    ms[fastest].psnr_db = 39.9  # below the gate: the next fastest that passes is kept
    assert cal.choose(ms).candidate == min((m for m in ms if m.passed), key=lambda m: m.seconds).candidate
    ms[fastest].psnr_db, ms[fastest].max_error = 60.0, 10  # one pixel 10 grey levels off: still kept
    assert cal.choose(ms).candidate == ALL[fastest]
    ms[fastest].p999_error = 5.0  # one pixel in a thousand 5+ grey levels off: dropped
    assert cal.choose(ms).candidate != ALL[fastest]


def test_gate_is_robust_to_single_pixel_outliers_but_not_to_broad_error(he_1024):
    ref = np.ascontiguousarray(he_1024[:512, :512])
    outliers = ref.copy()
    outliers[7, 11] = np.clip(outliers[7, 11].astype(int) + 60, 0, 255)  # a few pixels far off
    outliers[300, 200:203] = 255 - outliers[300, 200:203]
    p, p999, worst = cal.agreement(outliers, ref)
    assert worst >= 60 and p999 <= cal.MAX_PERCENTILE_ERROR and p >= cal.MIN_PSNR
    assert Measurement(ALL[2], seconds=1.0, psnr_db=p, max_error=worst, p999_error=p999).passed
    rng = np.random.default_rng(0)
    noisy = np.clip(ref.astype(int) + rng.integers(-6, 7, ref.shape), 0, 255).astype(np.uint8)
    p, p999, worst = cal.agreement(noisy, ref)  # every pixel up to 6 off: PSNR ~37 dB, p99.9 6
    assert not Measurement(ALL[2], seconds=1.0, psnr_db=p, max_error=worst, p999_error=p999).passed


@pytest.mark.parametrize("fastest", range(len(ALL)))
def test_real_calibration_picks_each_candidate_when_it_is_fastest(fastest, window):
    """Every other candidate is slowed by a sleep; the measured choice must follow (if it passes the gate)."""
    variants = _variants()
    forced = variants.prepare(ALL[fastest])
    forced(window)  # warm-up, then time it: the others are slowed well beyond it (the CPU is shared: margin)
    spent = []
    for _ in range(2):
        t = time.perf_counter()
        forced(window)
        spent.append(time.perf_counter() - t)
    delay = 0.6 + 8 * max(spent)  # bf16 passes the gate now and is close: a loaded CPU needs the margin

    def prepare(c: Candidate):
        run = variants.prepare(c)
        if c == ALL[fastest]:
            return run

        def slowed(w):
            time.sleep(delay)
            return run(w)

        return slowed

    choice = cal.calibrate(window, ALL, prepare, CPU)
    by_label = {m["candidate"]: m for m in choice.measurements}
    assert set(by_label) == {c.label for c in ALL}
    passed = [m for m in choice.measurements if m["passed"]]
    best = min(passed, key=lambda m: m["seconds"])
    assert choice.label == best["candidate"]
    if by_label[ALL[fastest].label]["passed"]:
        assert choice.label == ALL[fastest].label
    assert by_label["fp32"]["psnr_db"] == "inf" and by_label["fp32"]["max_error"] == 0
    assert by_label["fp32 Winograd"]["passed"]  # fp32 rounding only


def test_failing_candidates_are_dropped_and_the_run_goes_on(window):
    variants = _variants()

    def prepare(c: Candidate):
        if c.winograd:
            raise RuntimeError("CPU out of memory (simulated allocation failure)")
        run = variants.prepare(c)
        if c.precision == "bf16":  # fastest of all, but wrong: must not be kept
            return lambda w: np.clip(run(w).astype(int) + 20, 0, 255).astype(np.uint8)
        return run

    choice = cal.calibrate(window, ALL, prepare, CPU)
    assert choice.label == "fp32"
    by_label = {m["candidate"]: m for m in choice.measurements}
    assert "out of memory" in by_label["fp32 Winograd"]["error"] and not by_label["fp32 Winograd"]["passed"]
    assert by_label["bf16"]["max_error"] >= 20 and not by_label["bf16"]["passed"]


def test_decision_is_cached_per_device_torch_and_model_and_others_are_ignored(window, tmp_path, monkeypatch):
    monkeypatch.setenv(cal.CACHE_ENV, str(tmp_path))
    variants = _variants()
    key = cal.cache_key(CPU, "sha-a", "auto", None)
    stale = dict(key, torch="1.0.0")  # another torch version: must be ignored, not reused
    old_gate = {
        k: v for k, v in key.items() if k != "gate"
    }  # decided under the max-error gate: measured again
    (tmp_path / cal.CACHE_FILE).write_text(
        json.dumps(
            [
                {"key": stale, "choice": {"precision": "bf16", "winograd": False, "speedup": 9.0}},
                {"key": old_gate, "choice": {"precision": "fp32", "winograd": False, "speedup": 1.0}},
            ]
        )
    )
    calls = []

    def prepare(c):
        calls.append(c)
        return variants.prepare(c)

    def decide(sha: str):
        return cal.decide_compute(CPU, "auto", None, variants.winograd_convs, sha, prepare, lambda: window)

    first = decide("sha-a")
    # fp32, or bf16 where the CPU has it and it measured fastest within the quality gate (AMD Zen 4 does)
    assert first.how == "measured" and first.precision in ("fp32", "bf16" if cal.cpu_has_bf16() else "fp32")
    assert calls
    calls.clear()
    again = decide("sha-a")
    assert again.how == "cached" and (again.precision, again.winograd) == (first.precision, first.winograd)
    assert not calls  # skipped the measurement
    assert decide("sha-b").how == "measured"  # another model is measured again
    entries = json.loads((tmp_path / cal.CACHE_FILE).read_text())
    assert any(e["key"] == stale for e in entries) and len(entries) == 4


def test_bf16_on_a_cpu_without_bf16_is_refused_with_the_reason():
    if cal.cpu_has_bf16():
        assert resolve_precision("bf16", CPU) == "bf16"
        assert Candidate("bf16") in cal.candidates(CPU, "auto", None, 4)
    else:
        with pytest.raises(DeviceError, match="no bf16 instructions"):
            resolve_precision("bf16", CPU)
        assert all(c.precision == "fp32" for c in cal.candidates(CPU, "auto", None, 4))
    assert cal.candidates(CPU, "fp32", False, 4) == [Candidate("fp32")]
    assert cal.candidates(CPU, "fp32", True, 4) == [Candidate("fp32", True)]
    assert cal.candidates(CPU, "auto", None, 0) == [Candidate("fp32")] + (
        [Candidate("bf16")] if cal.cpu_has_bf16() else []
    )


def test_engine_measures_reports_caches_and_resumes_with_the_choice(he_1024, tmp_path):
    model = small_generator("batch", ngf=32, n_blocks=2)
    img = he_1024[:192, :192]
    settings = EngineSettings(tile=64, halo=8, skip_background=False, calibration_min_mp=0.0)
    seen = []
    rep = stain_slide(ArraySlide(img, 0.5), model, tmp_path / "a.ome.zarr", settings, progress=seen.append)
    compute = rep.settings["compute"]
    assert compute["how"] == "measured" and len(compute["measurements"]) >= 2
    assert rep.precision == compute["precision"]
    assert rep.settings["winograd_convs"] == (4 if compute["winograd"] else 0)
    assert seen[-1].compute == compute["described"] and "measured" in seen[-1].compute
    on_disk = json.loads(run_json_path(tmp_path / "a.ome.zarr").read_text())
    assert on_disk["settings"]["compute"]["label"] == compute["label"]
    rep2 = stain_slide(ArraySlide(img, 0.5), model, tmp_path / "b.ome.zarr", settings)
    assert rep2.settings["compute"]["how"] == "cached"
    # A resumed store keeps the choice it was started with (its tiles must match).
    rep3 = stain_slide(ArraySlide(img, 0.5), model, tmp_path / "a.ome.zarr", settings)
    assert rep3.settings["compute"]["how"] == "resumed" and rep3.tiles_resumed == rep.tiles_total


def test_bf16_winograd_is_a_candidate_where_bf16_is():
    auto = cal.candidates(CPU, "auto", None, 18)
    assert (Candidate("bf16", True) in auto) == cal.cpu_has_bf16()
    assert Candidate("bf16", True) not in cal.candidates(CPU, "auto", None, 0)  # no wide 3x3 convolutions
    assert Candidate("bf16", True) not in cal.candidates(CPU, "auto", False, 18)  # Winograd refused
    assert cal.candidates(CPU, "bf16", True, 18) == [Candidate("bf16", True)]
    assert cal.candidates(CPU, "bf16", None, 18) == [Candidate("bf16"), Candidate("bf16", True)]
    assert cal.candidates(CPU, "fp32", None, 18) == [Candidate("fp32"), Candidate("fp32", True)]


def test_a_compile_failure_drops_bf16_winograd_with_its_reason(window, monkeypatch):
    """Forced: torch.compile failing (no C++ compiler, an inductor error) drops the candidate; the run goes on."""
    from napari_virtual_ihc.inference import winograd_f2

    def broken_compile(fn, **kw):
        def run(*a):
            raise RuntimeError("InductorError: no working C++ compiler found")

        return run

    monkeypatch.setattr(winograd_f2, "_compiled", {})
    monkeypatch.setattr(winograd_f2.torch, "compile", broken_compile)
    variants = _variants()
    cands = [Candidate("fp32"), Candidate("bf16"), Candidate("bf16", True)]
    results = cal.measure(window, cands, variants.prepare, rounds=1)
    dropped = results[2]
    assert not dropped.passed and "no working C++ compiler" in (dropped.error or "")
    assert "no working C++ compiler" in str(dropped.to_dict()["error"])  # in the calibration record
    assert cal.choose(results).candidate in cands[:2]


@pytest.mark.parametrize("compiled", [False, True])
def test_a_small_job_runs_a_cached_bf16_winograd_choice_direct_until_compiled(
    he_1024, tmp_path, monkeypatch, compiled
):
    """The transforms' first compile (~5-19 s) would cost a job too small to calibrate more than it saves."""
    from napari_virtual_ihc.inference import winograd_f2

    model = small_generator("batch", ngf=32, n_blocks=2)
    monkeypatch.setattr(winograd_f2, "_ran", [True] if compiled else [])
    monkeypatch.setenv(cal.CACHE_ENV, str(tmp_path / "cache"))  # this test's decision only
    cal.store_cached(
        cal.cache_key(CPU, model.sha256, "auto", None), cal.ComputeChoice("bf16", True, "measured", 2.8)
    )
    settings = EngineSettings(tile=64, halo=8, skip_background=False)  # 0.04 MP: below calibration_min_mp
    rep = stain_slide(ArraySlide(he_1024[:128, :128], 0.5), model, tmp_path / "s.ome.zarr", settings)
    compute = rep.settings["compute"]
    assert compute["how"] == "cached" and compute["precision"] == "bf16"
    assert compute["winograd"] == compiled
    assert ("first compile" in compute["note"]) != compiled
    assert rep.settings["winograd_convs"] == (4 if compiled else 0)


def test_a_compile_failure_asked_for_directly_is_a_clear_device_error(monkeypatch):
    """With bf16 Winograd asked for (no calibration to drop it), the first call names the way out."""
    from napari_virtual_ihc.inference import winograd_f2

    def broken_compile(fn, **kw):
        def run(*a):
            raise RuntimeError("InductorError: no working C++ compiler found")

        return run

    monkeypatch.setattr(winograd_f2, "_compiled", {})
    monkeypatch.setattr(winograd_f2, "_ran", [])
    monkeypatch.setattr(winograd_f2.torch, "compile", broken_compile)
    w = torch.randn(8, 8, 3, 3)
    with pytest.raises(DeviceError, match=r"no working C\+\+ compiler.*--no-winograd"):
        winograd_f2.winograd_f2_conv3x3(
            torch.randn(1, 8, 12, 12), winograd_f2.filter_transform_f2(w), torch.zeros(8), 1
        )
