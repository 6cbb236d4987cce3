"""Measured precision and kernels: which of this device's ways to run a model is fastest *and* correct here.

Why measure: the same ResNet-9 runs 2.2-2.5x faster in bf16 than fp32 on an Intel Xeon with AVX512-BF16/AMX
and 20x slower on an AVX2 AMD EPYC; Winograd pays on wide fp32 convolutions on some CPUs and not on others. No
table of CPUs can know that, so the engine times the candidates this device supports on the first real window
of the job, checks each against a direct fp32 pass of the same window (kept only at >= ``MIN_PSNR`` dB and a
``GATE_PERCENTILE``-th percentile error <= ``MAX_PERCENTILE_ERROR`` grey levels; the maximum is reported, not
decisive: one outlier pixel of 10 grey levels in a bf16 window used to keep a 1.1x faster bf16 out) and keeps
the fastest. The decision is cached per (device name, torch
version, model sha256, what was asked), so later runs of that model on that machine skip it.

Candidates: CPU fp32 direct, fp32 Winograd F(4x4, 3x3) (when the model has wide 3x3 convolutions), bf16 autocast
and bf16 Winograd F(2x2, 3x3) with compiled transforms (only when the CPU has bf16 instructions; a
``torch.compile`` failure drops the latter with its reason); CUDA fp32, fp16, bf16 (when supported); MPS fp32,
fp16.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DeviceError, NonFiniteOutputError
from ..quality import psnr
from ..winograd_f2 import COMPILE_SECONDS, transforms_compiled
from .probes import cpu_has_bf16, device_has_bf16, device_name
from .rules import check_precision_supported

MIN_PSNR = 40.0  # dB against fp32 direct on the same window
GATE_PERCENTILE = 99.9  # the error percentile that decides (robust to single-pixel outliers)
MAX_PERCENTILE_ERROR = 4  # grey levels at that percentile
GATE_VERSION = 2  # in the cache key: decisions made under another gate (v1: max error <= 8) are not reused
CALIBRATION_SIDE = 512  # px: the calibration window is the first tissue window cut to at most this side
TIMED_ROUNDS = 2  # timed runs per candidate after a warm-up, interleaved A B .. B A; the minimum is kept
CACHE_ENV = "VIRTUAL_IHC_CACHE_DIR"
CACHE_FILE = "calibration.json"
FP16_DROP_SHARE = (
    0.05  # fp16 is dropped for a model whose batches overflowed this often in a run (>= 1 batch)
)


@dataclass(frozen=True)
class Candidate:
    """One way to run the model: a precision and, on the CPU, direct or Winograd 3x3 convolutions."""

    precision: str  # fp32 | fp16 | bf16
    winograd: bool = False

    @property
    def label(self) -> str:
        return f"{self.precision} Winograd" if self.winograd else self.precision


REFERENCE = Candidate("fp32", False)


@dataclass
class Measurement:
    """A candidate's timing and agreement with the fp32 direct pass (``error`` if it could not run)."""

    candidate: Candidate
    seconds: float | None = None
    psnr_db: float | None = None
    max_error: int | None = None  # reported only
    p999_error: float | None = None  # the GATE_PERCENTILE-th percentile of the absolute error, grey levels
    error: str | None = None

    @property
    def passed(self) -> bool:
        return (
            self.error is None
            and self.seconds is not None
            and self.psnr_db is not None
            and self.p999_error is not None
            and self.psnr_db >= MIN_PSNR
            and self.p999_error <= MAX_PERCENTILE_ERROR
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidate"] = self.candidate.label
        d["passed"] = self.passed
        if d["psnr_db"] is not None and not np.isfinite(d["psnr_db"]):
            d["psnr_db"] = "inf"
        return d


@dataclass
class ComputeChoice:
    """What the run uses, and why: ``how`` is ``measured``, ``cached``, ``resumed``, ``requested`` or
    ``default`` (a job too small for the calibration to pay)."""

    precision: str
    winograd: bool
    how: str
    speedup: float | None = None  # vs fp32 direct, measured on the calibration window
    measurements: list[dict[str, Any]] = field(default_factory=list)
    device_name: str = ""
    note: str = ""

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.precision, self.winograd)

    @property
    def label(self) -> str:
        return self.candidate.label

    def describe(self) -> str:
        """For the CLI and the widget, e.g. ``bf16 (measured 2.3x fp32)``."""
        if self.speedup is not None and self.how in ("measured", "cached", "resumed"):
            return f"{self.label} ({self.how} {self.speedup:.1f}x fp32)"
        return f"{self.label} ({self.how})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label, "described": self.describe()}


def candidates(
    device: torch.device, precision: str = "auto", winograd: bool | None = None, winograd_convs: int = 0
) -> list[Candidate]:
    """The candidates to measure, fp32 direct (the reference) first.

    ``precision`` other than ``auto`` and ``winograd`` other than None restrict the set to what was asked;
    ``winograd_convs`` is how many convolutions Winograd would take over (0: no Winograd candidate).
    """
    if device.type == "cpu":
        wanted = ["fp32"] + (["bf16"] if cpu_has_bf16() else [])
    elif device.type == "cuda":
        wanted = ["fp32", "fp16"] + (["bf16"] if device_has_bf16(device) else [])
    else:
        wanted = ["fp32", "fp16"]
    if precision != "auto":
        wanted = [precision]
    out: list[Candidate] = []
    for p in wanted:
        # bf16 Winograd is F(2x2, 3x3) in bf16 with compiled transforms (winograd_f2); where torch.compile
        # fails here the candidate's warm-up raises and the calibration drops it with the reason.
        can_winograd = device.type == "cpu" and winograd_convs > 0 and p in ("fp32", "bf16")
        if not (can_winograd and winograd is True):  # direct, unless Winograd was asked for and applies
            out.append(Candidate(p, False))
        if can_winograd and winograd is not False:
            out.append(Candidate(p, True))
    return out


def default_choice(
    device: torch.device, precision: str, winograd: bool | None, winograd_convs: int
) -> ComputeChoice:
    """Without a measurement: fp16 on GPUs, fp32 on the CPU, Winograd on for wide CPU fp32 convolutions."""
    p = precision if precision != "auto" else ("fp16" if device.type in ("cuda", "mps") else "fp32")
    w = device.type == "cpu" and p == "fp32" and winograd_convs > 0 and winograd is not False
    return ComputeChoice(
        p, w, "requested" if precision != "auto" else "default", device_name=device_name(device)
    )


# --- the rule ------------------------------------------------------------------------------------------
def choose(measurements: Sequence[Measurement]) -> Measurement:
    """The fastest candidate within the quality gate (the fp32 direct reference always qualifies)."""
    passed = [m for m in measurements if m.passed]
    if not passed:
        raise RuntimeError(
            "no calibration candidate ran: "
            + "; ".join(f"{m.candidate.label}: {m.error}" for m in measurements)
        )
    return min(passed, key=lambda m: m.seconds if m.seconds is not None else float("inf"))


Runner = Callable[[np.ndarray], np.ndarray]  # (1, h, w, 3) uint8 -> (1, h, w, 3) uint8


def measure(
    window: np.ndarray,
    cands: Sequence[Candidate],
    prepare: Callable[[Candidate], Runner],
    rounds: int = TIMED_ROUNDS,
) -> list[Measurement]:
    """Time every candidate on ``window`` and compare it with the fp32 direct output.

    ``prepare`` builds a candidate's runner; a candidate whose preparation or run raises (out of memory, a
    kernel missing on this device) is recorded with its error and dropped, the others go on.
    """
    if REFERENCE not in cands:
        cands = [REFERENCE, *cands]
    runners: dict[Candidate, Runner] = {}
    results = {c: Measurement(c) for c in cands}
    outputs: dict[Candidate, np.ndarray] = {}
    for c in cands:  # warm-up: builds kernels/primitives, gives the output to check
        try:
            runners[c] = prepare(c)
            outputs[c] = runners[c](window)
        except (
            RuntimeError,
            MemoryError,
            NotImplementedError,
            ValueError,
            NonFiniteOutputError,
            DeviceError,
        ) as e:
            results[c].error = f"{type(e).__name__}: {e}"[:300]
            runners.pop(c, None)
    if REFERENCE not in outputs:
        raise RuntimeError(f"the fp32 reference pass failed during calibration: {results[REFERENCE].error}")
    for c, out in outputs.items():
        results[c].psnr_db, results[c].p999_error, results[c].max_error = agreement(out, outputs[REFERENCE])
    order = list(runners)
    for r in range(rounds):
        for c in order if r % 2 == 0 else reversed(order):
            if c not in runners:
                continue
            try:
                t = time.perf_counter()
                runners[c](window)
                dt = time.perf_counter() - t
            except (RuntimeError, MemoryError, NotImplementedError, ValueError) as e:
                results[c].error = f"{type(e).__name__}: {e}"[:300]
                runners.pop(c)
                continue
            prev = results[c].seconds
            results[c].seconds = dt if prev is None else min(prev, dt)
    return [results[c] for c in cands]


def agreement(out: np.ndarray, ref: np.ndarray) -> tuple[float, float, int]:
    """(PSNR dB, ``GATE_PERCENTILE``-th percentile and maximum of the absolute error) of two uint8 images."""
    diff = np.abs(out.astype(np.int16) - ref.astype(np.int16))
    return psnr(out, ref), round(float(np.percentile(diff, GATE_PERCENTILE)), 2), int(diff.max())


def calibration_window(window: np.ndarray, align: int, side: int = CALIBRATION_SIDE) -> np.ndarray:
    """The centre of a (h, w, 3) window, at most ``side`` px and a multiple of the network's stride."""
    h, w = window.shape[:2]
    ch = max(align, min(h, side) // align * align)
    cw = max(align, min(w, side) // align * align)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(window[y0 : y0 + ch, x0 : x0 + cw])[None]


# --- the cache -----------------------------------------------------------------------------------------
def cache_path() -> Path:
    """``$VIRTUAL_IHC_CACHE_DIR/calibration.json``, else the user's cache folder."""
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base) / CACHE_FILE
    if sys.platform == "darwin":
        root = Path.home() / "Library" / "Caches"
    elif sys.platform == "win32":
        root = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "napari-virtual-ihc" / CACHE_FILE


def cache_key(
    device: torch.device, model_sha256: str, precision: str, winograd: bool | None
) -> dict[str, Any]:
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "model_sha256": model_sha256,
        "asked": {"precision": precision, "winograd": winograd},
        "gate": GATE_VERSION,
    }


def _read_entries(path: Path) -> list[Any]:
    """The cache's entries; a missing, unreadable or malformed cache reads as empty."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return entries if isinstance(entries, list) else []


def _write_entries(path: Path, entries: list[Any]) -> None:
    """Replace the cache atomically (newest 200 entries); a cache that cannot be written only costs a
    recalibration later."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries[-200:], indent=1))
        os.replace(tmp, path)


def load_cached(key: dict[str, Any], path: Path | None = None) -> ComputeChoice | None:
    """The cached decision for exactly this key; entries from another device or torch version are ignored."""
    for entry in _read_entries(path or cache_path()):
        if isinstance(entry, dict) and entry.get("key") == key:
            with contextlib.suppress(KeyError, TypeError):
                c = entry["choice"]
                return ComputeChoice(
                    c["precision"],
                    bool(c["winograd"]),
                    "cached",
                    c.get("speedup"),
                    c.get("measurements", []),
                    c.get("device_name", key["device"]),
                )
    return None


def store_cached(key: dict[str, Any], choice: ComputeChoice, path: Path | None = None) -> None:
    """Add or replace this key's entry; a cache that cannot be written only costs a recalibration later."""
    path = path or cache_path()
    entries = [e for e in _read_entries(path) if not (isinstance(e, dict) and e.get("key") == key)]
    entries.append({"key": key, "choice": choice.to_dict(), "when": time.strftime("%Y-%m-%dT%H:%M:%S")})
    _write_entries(path, entries)


def _overflow_key(device: torch.device, model_sha256: str) -> dict[str, Any]:
    return {"device": device_name(device), "torch": torch.__version__, "model_sha256": model_sha256}


def fp16_dropped(device: torch.device, model_sha256: str, path: Path | None = None) -> str | None:
    """Why fp16 is no longer a candidate for this model here (its runs overflowed), None while it is."""
    key = _overflow_key(device, model_sha256)
    for entry in _read_entries(path or cache_path()):
        if isinstance(entry, dict) and entry.get("fp16_overflow") == key:
            return str(entry.get("why", "fp16 overflowed"))
    return None


def record_fp16_overflow(
    device: torch.device, model_sha256: str, batches: int, fallbacks: int, path: Path | None = None
) -> bool:
    """After a run: when fp16 overflowed in >= ``FP16_DROP_SHARE`` of its batches, drop fp16 for this model
    on this device (the cached choice is forgotten: the next run calibrates without fp16). True if dropped."""
    if fallbacks == 0 or fallbacks < FP16_DROP_SHARE * batches or fp16_dropped(device, model_sha256, path):
        return False
    path = path or cache_path()
    sha = model_sha256
    entries = [
        e
        for e in _read_entries(path)
        if not (
            isinstance(e, dict) and isinstance(e.get("key"), dict) and e["key"].get("model_sha256") == sha
        )
    ]
    why = f"fp16 overflowed in {fallbacks} of {batches} batches of a run (re-run in a wider precision)"
    entries.append({"fp16_overflow": _overflow_key(device, sha), "why": why})
    _write_entries(path, entries)
    return True


def calibrate(
    window: np.ndarray,
    cands: Sequence[Candidate],
    prepare: Callable[[Candidate], Runner],
    device: torch.device,
) -> ComputeChoice:
    """Measure ``cands`` on ``window`` (1, h, w, 3) and return the fastest that passes the quality gate.

    fp32 direct is always run as the reference; it is chosen only if it is one of ``cands``.
    """
    results = measure(window, cands, prepare)
    best = choose([m for m in results if m.candidate in cands])
    ref = next(m for m in results if m.candidate == REFERENCE)
    speedup = ref.seconds / best.seconds if ref.seconds and best.seconds else None
    return ComputeChoice(
        best.candidate.precision,
        best.candidate.winograd,
        "measured",
        round(speedup, 3) if speedup is not None else None,
        [m.to_dict() for m in results],
        device_name(device),
        note=f"calibrated on a {window.shape[2]} x {window.shape[1]} px window",
    )


def decide_compute(
    device: torch.device,
    precision: str,
    winograd: bool | None,
    winograd_convs: int,
    model_sha256: str,
    prepare: Callable[[Candidate], Runner],
    window: Callable[[], np.ndarray] | None,
    resumed: dict[str, Any] | None = None,
) -> ComputeChoice:
    """The engine's hook: how to run the tile pass.

    In order: the choice a resumed store was started with (its tiles must match); the one candidate left
    when the user fixed precision and kernels; the cached decision for this device, torch and model; a
    measurement on ``window()`` (None: the job is too small for it to pay, use the default; a cached bf16 Winograd
    decision then runs as bf16 direct until this process has compiled its transforms).
    """
    if resumed and "precision" in resumed and "winograd" in resumed:
        return ComputeChoice(
            str(resumed["precision"]),
            bool(resumed["winograd"]),
            "resumed",
            resumed.get("speedup"),
            list(resumed.get("measurements", [])),
            str(resumed.get("device_name", device_name(device))),
        )
    if precision != "auto":
        check_precision_supported(precision, device)
    cands = candidates(device, precision, winograd, winograd_convs)
    dropped = fp16_dropped(device, model_sha256) if precision == "auto" else None
    if dropped is not None:
        cands = [c for c in cands if c.precision != "fp16"]
    if len(cands) == 1:
        c = cands[0]
        how = "requested" if precision != "auto" or winograd is not None else "only candidate here"
        return ComputeChoice(c.precision, c.winograd, how, device_name=device_name(device))
    key = cache_key(device, model_sha256, precision, winograd)
    cached = load_cached(key)
    if cached is not None:
        if window is None and cached.precision == "bf16" and cached.winograd and not transforms_compiled():
            # A job too small to calibrate is too small to repay the transforms' first compile in this process:
            # the cached bf16 Winograd decision runs as bf16 direct (same gate, ~1.3x slower trunk).
            return replace(
                cached,
                winograd=False,
                speedup=None,
                note=f"bf16 Winograd's first compile (~{COMPILE_SECONDS:.0f} s) would cost more than it saves "
                "on a job this small",
            )
        return cached
    if window is None:
        choice = default_choice(device, precision, winograd, winograd_convs)
        if dropped is not None and choice.precision == "fp16":
            fallback = "bf16" if Candidate("bf16") in cands else "fp32"
            choice = ComputeChoice(fallback, False, "default", device_name=device_name(device), note=dropped)
        return choice
    choice = calibrate(window(), cands, prepare, device)
    store_cached(key, choice)
    return choice
