"""Tile engine vs the papers' naive test loop, in one run, on the same weights and the same real H&E region.

Naive reference (as pix2pix/CycleGAN ``test.py`` run on pre-cut tiles): non-overlapping 1024 px tiles,
batch 1, fp32, eager, every tile normalised by its own InstanceNorm statistics.
Engine: ``stain_slide`` with its defaults (halo >= half the receptive field, clamped border windows, slide-level
frozen statistics folded into the convolutions, batching, prefetch, channels-last).
Both are compared with one fp32 whole-image forward pass (PSNR) and scored for seams (mean absolute
gradient across tile borders / elsewhere).

    python benchmarks/bench_engine.py                      # ResNet-9, ngf 64, 2048 x 2048 from the TCGA slide
    python benchmarks/bench_engine.py --size 1024 --ngf 16 # quick look
    python benchmarks/bench_engine.py --whole-slide        # 4096 x 4096 all-tissue job, BN and IN ResNet-9,
                                                           # engine vs MONAI's sliding window (fp32, bf16), the
                                                           # no-halo limit (fp32, bf16), whole pass, ABBA
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

# isort: off
import napari_virtual_ihc  # noqa: F401  (before torch: it sets up torch's CPU allocator)

# isort: on
import numpy as np
import openslide
import torch
import zarr

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.quality import psnr, seam_score
from napari_virtual_ihc.inference.runner import to_input, to_uint8
from napari_virtual_ihc.inference.winograd import use_winograd
from napari_virtual_ihc.models import ModelSpec, build_generator
from napari_virtual_ihc.models.spec import LoadedGenerator
from napari_virtual_ihc.slides.base import ArraySlide

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def read_region(path: Path, size: int) -> np.ndarray:
    s = openslide.OpenSlide(str(path))
    w, h = s.dimensions
    x, y = max(0, w // 2 - size // 2), max(0, h // 2 - size // 2)
    rgba = np.asarray(s.read_region((x, y), 0, (size, size)))
    s.close()
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return rgb


def forward(module: torch.nn.Module, img: np.ndarray, bf16: bool = False) -> np.ndarray:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return to_uint8(module(to_input(img[None], "minus_one_one")), "minus_one_one")[0]


def naive_loop(module: torch.nn.Module, img: np.ndarray, tile: int = 1024, bf16: bool = False) -> np.ndarray:
    """Non-overlapping tiles, no halo (the papers' loop; with 512 px tiles and bf16 the CPU's compute limit:
    every pixel computed once, in the fastest kernel, no statistics or halo)."""
    out = np.zeros_like(img)
    for y in range(0, img.shape[0], tile):
        for x in range(0, img.shape[1], tile):
            out[y : y + tile, x : x + tile] = forward(module, img[y : y + tile, x : x + tile], bf16)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slide", type=Path, default=DATA / "tcga-cr-7395-01a-01-ts1.svs")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument(
        "--tile", type=int, default=512, help="engine tile core (default: EngineSettings' default)"
    )
    ap.add_argument("--batch", type=int, default=None, help="default: EngineSettings (1 on the CPU)")
    ap.add_argument(
        "--tile-ws",
        type=int,
        default=None,
        help="whole-slide mode: engine tile (default: by memory, as the CLI)",
    )
    ap.add_argument("--precision", default="auto")
    ap.add_argument(
        "--pooled-mp",
        type=float,
        default=EngineSettings.pooled_pass_mp,
        help="EngineSettings.pooled_pass_mp; 0 forces the whole-slide path (sampled statistics, then folded tiles)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--whole-slide",
        action="store_true",
        help="whole-slide mode: a --size (default 4096) all-tissue job on BatchNorm and InstanceNorm ResNet-9, "
        "engine vs (a) naive 1024 tiles, (b) Gaussian-blended sliding window 25%% overlap, (c) one whole pass",
    )
    ap.add_argument("--ws-size", type=int, default=4096, help="whole-slide mode: the job's side (px)")
    ap.add_argument("--norms", default="batch,instance", help="whole-slide mode: which ResNet-9 norms")
    ap.add_argument(
        "--methods",
        default="engine,sliding,sliding_bf16,nohalo,nohalo_bf16,whole",
        help="whole-slide mode: which runs (engine, naive, sliding[_bf16] = MONAI's sliding window re-implemented, "
        "monai<roi>[_bf16] = MONAI's own sliding_window_inference with <roi> px windows (pip install monai), "
        "nohalo[_bf16] = 512 px tiles without halo: the compute limit, nohalo_bf16_winograd = the same with the "
        "wide 3x3 convolutions as bf16 Winograd F(2x2, 3x3), whole = the fp32 reference)",
    )
    ap.add_argument("--no-whole", action="store_true", help="skip the whole-image reference pass")
    ap.add_argument(
        "--one-half",
        action="store_true",
        help="whole-slide mode: one run of each method per norm (engine, a, b, c), not ABBA (half the time)",
    )
    ap.add_argument(
        "--abba",
        action="store_true",
        help="time naive, engine, engine, naive (cancels drifting load on a shared CPU)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.whole_slide:
        whole_slide_benchmark(args)
        return

    img = read_region(args.slide, args.size)
    mp = img.shape[0] * img.shape[1] / 1e6
    torch.manual_seed(0)
    module = build_generator("resnet", n_blocks=9, ngf=args.ngf, norm="instance").eval()
    model = LoadedGenerator(
        module, ModelSpec("resnet", {"n_blocks": 9, "ngf": args.ngf, "norm": "instance"}), "bench", "seed0"
    )
    print(
        f"{args.slide.name}: {args.size} x {args.size} px region, ResNet-9 ngf {args.ngf} InstanceNorm (seeded random)"
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    forward(module, img[:256, :256])  # warm-up (allocator, oneDNN primitives)

    def run_naive() -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        out = naive_loop(module, img)
        dt = time.perf_counter() - t
        print(f"naive  : {dt:7.1f} s  {mp / dt:.4f} MP/s", flush=True)
        return out, dt

    def run_engine() -> tuple[np.ndarray, float, Any]:
        with tempfile.TemporaryDirectory() as d:
            settings = EngineSettings(
                tile=args.tile,
                batch=args.batch,
                precision=args.precision,
                skip_background=False,
                pooled_pass_mp=args.pooled_mp,
            )
            t = time.perf_counter()
            rep = stain_slide(ArraySlide(img, 0.5), model, Path(d) / "bench.ome.zarr", settings)
            dt = time.perf_counter() - t
            out = np.asarray(zarr.open_group(str(Path(d) / "bench.ome.zarr"), mode="r")["0"][:]).transpose(
                1, 2, 0
            )
        print(
            f"engine : {dt:7.1f} s  {mp / dt:.4f} MP/s  (tile {rep.settings['tile']}, halo {rep.settings['halo']}, "
            f"batch {rep.settings['batch_final']}, {rep.precision}, {rep.device}, {rep.settings['norms_folded']} norms "
            f"folded, {rep.settings['winograd_convs']} Winograd convs, {rep.settings['stats_seconds']:.1f} s of it "
            "in the statistics/pooled pass)",
            flush=True,
        )
        tile_pass = dt - rep.settings["stats_seconds"]
        if rep.tiles_done and tile_pass > 0.05 * dt:  # the whole-slide path: sampled statistics, then tiles
            print(
                f"         tile pass alone (frozen, folded norms): {tile_pass:7.1f} s  {mp / tile_pass:.4f} MP/s"
            )
        return out, dt, rep

    naive, t_naive = run_naive()
    engine, t_engine, rep = run_engine()
    if args.abba:
        _, t2, _ = run_engine()
        _, n2 = run_naive()
        t_engine, t_naive = t_engine + t2, t_naive + n2
    print(f"MP/s ratio engine / naive: {t_naive / t_engine:.2f}x")
    print(
        f"seam score (border / interior gradient): naive {seam_score(naive, 1024):.3f}, engine {seam_score(engine, rep.settings['tile']):.3f}"
    )
    if not args.no_whole:
        t = time.perf_counter()
        whole = forward(module, img)
        t_whole = time.perf_counter() - t
        print(f"whole  : {t_whole:7.1f} s  {mp / t_whole:.4f} MP/s (fp32 reference pass)")
        print(
            f"PSNR vs whole-image fp32 pass: naive {psnr(naive, whole):.1f} dB, engine {psnr(engine, whole):.1f} dB"
        )


def all_tissue_image(path: Path, size: int) -> np.ndarray:
    """A size x size all-tissue H&E image: the slide's central tissue region, mirrored 2 x 2 if the slide is
    smaller than the job (real H&E texture everywhere, no glass)."""
    half = read_region(path, size // 2)
    top = np.concatenate([half, half[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


def gaussian_importance(roi: int, sigma_scale: float = 0.125) -> np.ndarray:
    """MONAI's sliding_window_inference(mode="gaussian") weight map: a separable Gaussian, sigma = roi / 8."""
    c = np.arange(roi) - (roi - 1) / 2
    g = np.exp(-(c**2) / (2 * (sigma_scale * roi) ** 2))
    w = np.outer(g, g)
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)  # MONAI clamps the smallest weights


def sliding_window(
    module: torch.nn.Module, img: np.ndarray, roi: int = 1024, overlap: float = 0.25, bf16: bool = False
) -> np.ndarray:
    """What a MONAI user runs (MONAI itself is not installed here): ``sliding_window_inference`` with windows of
    ``roi`` at stride roi * (1 - overlap), batch 1, fp32 (or bf16 autocast), per-window statistics, outputs
    blended with Gaussian weights."""
    h, w = img.shape[:2]
    stride = int(roi * (1 - overlap))
    ys = sorted({min(y, h - roi) for y in range(0, max(1, h - roi + stride), stride)})
    xs = sorted({min(x, w - roi) for x in range(0, max(1, w - roi + stride), stride)})
    acc = np.zeros((h, w, 3), np.float32)
    wsum = np.zeros((h, w, 1), np.float32)
    g = gaussian_importance(roi)[..., None]
    for y in ys:
        for x in xs:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = module(to_input(img[None, y : y + roi, x : x + roi], "minus_one_one"))[0].float()
            acc[y : y + roi, x : x + roi] += (out.permute(1, 2, 0).numpy() + 1.0) * 127.5 * g
            wsum[y : y + roi, x : x + roi] += g
    return np.clip(np.rint(acc / wsum), 0, 255).astype(np.uint8)


def monai_sliding_window(module: torch.nn.Module, img: np.ndarray, roi: int, bf16: bool) -> np.ndarray:
    """MONAI's own ``sliding_window_inference`` (``pip install monai``): windows of ``roi``, 25 % overlap,
    Gaussian blending, batch 1, fp32 or bf16 autocast, as a MONAI user runs a 2-D generator."""
    from monai.inferers import sliding_window_inference  # optional: only this baseline needs MONAI

    x = to_input(img[None], "minus_one_one")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = sliding_window_inference(
            x, roi_size=(roi, roi), sw_batch_size=1, predictor=module, overlap=0.25, mode="gaussian"
        )
    assert isinstance(out, torch.Tensor)
    return to_uint8(out, "minus_one_one")[0]


def seeded_resnet9(norm: str, ngf: int) -> LoadedGenerator:
    torch.manual_seed(0)
    module = build_generator("resnet", n_blocks=9, ngf=ngf, norm=norm).eval()
    if norm == "batch":  # running statistics as a trained BCI model has them
        g = torch.Generator().manual_seed(1)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    spec = ModelSpec("resnet", {"n_blocks": 9, "ngf": ngf, "norm": norm}, mpp=0.5, name=f"resnet9-{norm}")
    return LoadedGenerator(module, spec, "bench", f"bench-resnet9-{norm}-{ngf}")


def whole_slide_benchmark(args: argparse.Namespace) -> None:
    """Engine vs (a) naive, (b) sliding window, (c) whole pass, interleaved E a b c c b a E per norm."""
    import os
    import platform

    size = args.ws_size
    img = all_tissue_image(args.slide, size)
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"whole-slide mode: {size} x {size} px all-tissue job (centre of {args.slide.name}, mirrored 2 x 2), "
        f"ResNet-9 ngf {args.ngf}; CPU {cpu}, torch {torch.__version__} "
        f"({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f} at start (other agents share this machine)"
    )
    cache = tempfile.mkdtemp(prefix="vihc-bench-cache-")
    os.environ["VIRTUAL_IHC_CACHE_DIR"] = (
        cache  # the first engine run measures precision, the second reuses it
    )
    benches = [_NormBench(n.strip(), args, img) for n in args.norms.split(",") if n.strip()]
    # ABBA across methods, both norms in each half: a first figure for every norm comes early.
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    halves = (methods, methods[::-1])
    for half in halves[:1] if args.one_half else halves:
        for b in benches:
            for name in half:
                b.run(name)
            b.summary()
    for b in benches:
        b.summary()


class _NormBench:
    """One norm's model, its runs and their timings (the runs of both norms are interleaved by the caller)."""

    def __init__(self, norm: str, args: argparse.Namespace, img: np.ndarray) -> None:
        self.norm, self.args, self.img = norm, args, img
        self.mp = img.shape[0] * img.shape[1] / 1e6
        self.model = seeded_resnet9(norm, args.ngf)
        forward(self.model.module, img[:256, :256])
        if (
            args.precision == "auto"
        ):  # the calibration once per machine and model, as a user's first run (cached)
            with tempfile.TemporaryDirectory() as d:
                cal = EngineSettings(  # one sampled tile, so three are left for the calibration to run on
                    tile=512,
                    skip_background=False,
                    calibration_min_mp=0.0,
                    pooled_pass_mp=0.0,
                    stats_windows=1,
                )
                rep = stain_slide(ArraySlide(img[:688, :688], 0.5), self.model, Path(d) / "c.ome.zarr", cal)
            c = rep.settings["compute"]
            print(
                f"  {norm}: calibration chose {c['described']}: "
                + "; ".join(
                    f"{m['candidate']} {m['seconds'] or 0:.2f} s {m['psnr_db']} dB p99.9 {m['p999_error']} max "
                    f"{m['max_error']}{'' if m['passed'] else ' (failed: ' + str(m.get('error') or 'the quality gate') + ')'}"
                    for m in c["measurements"]
                ),
                flush=True,
            )
        self.roi = min(1024, img.shape[0])
        self.times: dict[str, list[float]] = {}
        self.outs: dict[str, np.ndarray] = {}
        self.reps: list[Any] = []
        self._winograd: torch.nn.Module | None = None

    def _engine(self) -> np.ndarray:
        with tempfile.TemporaryDirectory() as d:
            settings = EngineSettings(
                tile=self.args.tile_ws, skip_background=False, precision=self.args.precision
            )
            rep = stain_slide(ArraySlide(self.img, 0.5), self.model, Path(d) / "ws.ome.zarr", settings)
            self.reps.append(rep)
            return np.asarray(zarr.open_group(str(Path(d) / "ws.ome.zarr"), mode="r")["0"][:]).transpose(
                1, 2, 0
            )

    def _monai(self, name: str) -> Any:
        """``monai<roi>`` or ``monai<roi>_bf16``: MONAI's own sliding window with windows of ``roi`` px."""
        roi, bf16 = int(name.removeprefix("monai").removesuffix("_bf16")), name.endswith("_bf16")
        return lambda: monai_sliding_window(self.model.module, self.img, min(roi, self.img.shape[0]), bf16)

    def _winograd_module(self) -> torch.nn.Module:
        """The model with its wide 3x3 convolutions as ``WinogradConv2d`` (under bf16: F(2x2, 3x3) in bf16)."""
        if self._winograd is None:
            self._winograd = copy.deepcopy(self.model.module).eval()
            use_winograd(self._winograd)
        return self._winograd

    def run(self, name: str) -> None:
        module, img = self.model.module, self.img
        fn = {
            "engine": self._engine,
            "naive": lambda: naive_loop(module, img, self.roi),
            "sliding": lambda: sliding_window(module, img, self.roi),
            "sliding_bf16": lambda: sliding_window(module, img, self.roi, bf16=True),
            "nohalo": lambda: naive_loop(module, img, 512),
            "nohalo_bf16": lambda: naive_loop(module, img, 512, bf16=True),
            "nohalo_bf16_winograd": lambda: naive_loop(self._winograd_module(), img, 512, bf16=True),
            "whole": lambda: forward(module, img),
        }.get(name) or self._monai(name)
        t = time.perf_counter()
        out = fn()
        self.times.setdefault(name, []).append(time.perf_counter() - t)
        self.outs.setdefault(name, out)
        extra = ""
        if name == "engine":
            r = self.reps[-1].settings
            st = r["stats"]
            extra = (
                f"  (tile {r['tile']}, halo {r['halo']}, {r['compute']['described']}, {r['winograd_convs']} "
                f"Winograd convs, {r['cropped_blocks']} blocks cropped, {r['norms_folded']} norms folded; "
                f"statistics {st['seconds']:.1f} s = {100 * st['seconds'] / self.times['engine'][-1]:.1f} % of the "
                f"job: {st['source']}, {st['windows']} windows in {st['forwards']} forward(s), "
                f"{st['window_mp']:.2f} of {st['job_mp']:.1f} window MP, {st['reused_tiles']} tiles reused)"
            )
        dt = self.times[name][-1]
        print(f"  {self.norm:8s} {name:8s} {dt:7.1f} s  {self.mp / dt:.4f} MP/s{extra}", flush=True)

    def summary(self) -> None:
        n = min(len(v) for v in self.times.values())
        total = {k: sum(v[:n]) for k, v in self.times.items()}
        mps = {k: self.mp * n / t for k, t in total.items()}
        print(f"  {self.norm} ({n} run(s) each): " + ", ".join(f"{k} {v:.4f} MP/s" for k, v in mps.items()))
        if "engine" in mps:
            monai = [v for k, v in mps.items() if k.startswith(("sliding", "monai"))]
            limit = [mps[k] for k in ("nohalo_bf16", "nohalo_bf16_winograd", "nohalo") if k in mps]
            if monai:
                print(
                    f"    engine / MONAI's best (sliding windows run, fp32 or bf16): {mps['engine'] / max(monai):.2f}x"
                )
            if limit:
                print(
                    f"    engine / the no-halo limit (512 px, no halo, fastest kernel): {mps['engine'] / max(limit):.2f}x"
                )
        whole = self.outs.get("whole")
        if whole is None:
            return
        for name, out in self.outs.items():
            if name == "whole":
                continue
            diff = np.abs(out.astype(np.int16) - whole.astype(np.int16))
            print(
                f"    {name} vs the fp32 whole pass: {psnr(out, whole):.1f} dB, p99.9 {np.percentile(diff, 99.9):.0f}, "
                f"max {int(diff.max())}",
                flush=True,
            )


if __name__ == "__main__":
    main()
