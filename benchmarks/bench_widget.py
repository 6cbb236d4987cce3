"""Benchmark the Virtual IHC widget: time from Run to the first visible tile, and Qt event-loop stalls.

Baseline measured in the same run: the compute time of ONE batch through the engine's own BatchRunner
(same model, device, tile, halo and batch as the widget's run). Targets (issue 4):

* Run -> first visible tile <= 2x one batch's compute time;
* the Qt event loop never stalls more than 100 ms while staining (QTimer probe every 5 ms).

Second baseline, same run (after it: removed layers slowed the next add when measured before): the stall
napari itself causes when the same blank layer is added with no run (``viewer.add_image`` of the widget's
placeholder, three times): the repaint that lays out and paints a new
layer's controls and list row. On software OpenGL (llvmpipe under Xvfb) every repaint of the main window is
composited by the rasteriser, and building and painting it can pass 100 ms; the run's gaps while napari
builds and first paints its layer are compared with it, the rest of the run with 100 ms. The probe starts
at the click, so the Run handler's own time counts as a stall (it did not before session 17).

Run:  python benchmarks/bench_widget.py [--size 1000] [--tile 256] [--batch 4] [--ngf 16] [--norm batch]
(starts a virtual X server when there is no DISPLAY).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def _ensure_display() -> object | None:
    if os.environ.get("DISPLAY"):
        return None
    from pyvirtualdisplay import Display

    display = Display(visible=False, size=(1600, 1000))
    display.start()
    return display


def _he_image(size: int) -> np.ndarray:
    """A real H&E field (TIAToolbox target image, 1000x1000) tiled up to ``size`` if asked bigger."""
    from skimage.io import imread

    rgb = imread(DATA / "tiatoolbox-target-image.png")[..., :3]
    reps = -(-size // rgb.shape[0])
    return np.ascontiguousarray(np.tile(rgb, (reps, reps, 1))[:size, :size]).astype(np.uint8)


def _model(path: Path, ngf: int, n_blocks: int, norm: str) -> Path:
    from napari_virtual_ihc.models import ModelSpec, build_generator, save_generator

    kwargs = {"ngf": ngf, "n_blocks": n_blocks, "norm": norm}
    module = build_generator("resnet", **kwargs)
    return save_generator(path, module, ModelSpec(arch="resnet", arch_kwargs=kwargs, name=f"bench-{norm}"))


def _one_batch_seconds(model_path: Path, tile: int, batch: int, repeats: int = 3) -> tuple[float, int]:
    """Median compute time of one batch of engine windows (the baseline), and the window size."""
    import torch

    from napari_virtual_ihc.inference.allocator import keep_freed_memory
    from napari_virtual_ihc.inference.api import EngineSettings
    from napari_virtual_ihc.inference.devices import resolve_device, resolve_precision
    from napari_virtual_ihc.inference.grid import round_up
    from napari_virtual_ihc.inference.normalization import fold_frozen_norms, freeze_normalization
    from napari_virtual_ihc.inference.plan import plan_halo
    from napari_virtual_ihc.inference.runner import BatchRunner
    from napari_virtual_ihc.models import load_generator
    from napari_virtual_ihc.models.describe import size_multiple

    threads_before = torch.get_num_threads()
    # The widget leaves one core to the GUI thread; measure the baseline with the same thread count.
    torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1)))
    model = load_generator(model_path)
    settings = EngineSettings(tile=tile, batch=batch, device="cpu")
    align = size_multiple(model.module)
    halo, _ = plan_halo(model.module, settings, align)
    t = round_up(max(tile, align), align)
    window = t + 2 * halo
    device = resolve_device("cpu")
    try:
        frozen = freeze_normalization(model.module, None)
        fold_frozen_norms(frozen)
    except ValueError:  # InstanceNorm needs slide statistics: per-window norms cost the same to run
        frozen = model.module
    runner = BatchRunner(
        frozen,
        device,
        resolve_precision("auto", device),
        batch,
        model.spec.input_norm,
        model.spec.output_norm,
    )
    windows = np.random.default_rng(0).integers(0, 255, (batch, window, window, 3), dtype=np.uint8)
    times = []
    with keep_freed_memory():  # as the engine runs its batches
        runner(windows)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            runner(windows)
            times.append(time.perf_counter() - t0)
    torch.set_num_threads(threads_before)
    return statistics.median(times), window


def _engine_first_tile_seconds(
    model_path: Path, rgb: np.ndarray, tile: int, batch: int, store: Path
) -> float:
    """Second baseline: the bare engine (no GUI), load -> first reported tile, same settings and threads."""
    import torch

    from napari_virtual_ihc.inference import EngineSettings, stain_slide
    from napari_virtual_ihc.models import load_generator
    from napari_virtual_ihc.slides import ArraySlide

    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads_before, (os.cpu_count() or 2) - 1)))
    first: list[float] = []
    t0 = time.perf_counter()

    def progress(tp: object) -> None:
        if getattr(tp, "new_boxes", None) and not first:
            first.append(time.perf_counter())

    try:
        model = load_generator(model_path)
        stain_slide(
            ArraySlide(rgb, mpp=0.5),
            model,
            store,
            EngineSettings(tile=tile, batch=batch, device="cpu"),
            progress=progress,
        )
    finally:
        torch.set_num_threads(threads_before)
    return first[0] - t0


def _worst_gap_after(app: object, action: Callable[[], object], watch_s: float = 0.4) -> tuple[float, object]:
    """Worst event-loop gap (s) in the ``watch_s`` after ``action`` (5 ms QTimer probe), and its result."""
    from qtpy.QtCore import QTimer

    ticks: list[float] = []
    probe = QTimer()
    probe.setInterval(5)
    probe.timeout.connect(lambda: ticks.append(time.perf_counter()))
    ticks.append(time.perf_counter())  # the action runs in the event loop: its own time is a stall too
    result = action()
    probe.start()
    end = time.perf_counter() + watch_s
    while time.perf_counter() < end:
        app.processEvents()  # type: ignore[attr-defined]
        time.sleep(0.001)
    probe.stop()
    return max(b - a for a, b in itertools.pairwise(ticks)), result


def _settle(app: object, seconds: float = 0.3) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()  # type: ignore[attr-defined]
        time.sleep(0.01)


def _napari_alone_stalls(viewer: Any, app: object, source: Any, repeats: int = 3) -> dict[str, list[float]]:
    """The stalls napari itself causes, no run: adding the widget's blank placeholder layer, showing a
    cancellable progress bar as a run does, and a notification toast (as at a run's end)."""
    from napari.utils.notifications import show_info

    from napari_virtual_ihc._widgets._tasks import TaskProgress
    from napari_virtual_ihc._widgets.stain.layer import ihc_layer_kwargs
    from napari_virtual_ihc._widgets.stain.run import progress_text
    from napari_virtual_ihc.ihc_store import blank_levels
    from napari_virtual_ihc.inference.api import TileProgress

    out: dict[str, list[float]] = {"add layer": [], "progress bar": [], "notification": []}
    for i in range(repeats):
        kwargs = ihc_layer_kwargs(1.0, source, f"napari baseline {i}", {}, 0.6)
        gap, layer = _worst_gap_after(
            app, lambda kw=kwargs: viewer.add_image(blank_levels([source.data.shape[1::-1]]), **kw)
        )
        out["add layer"].append(gap)
        viewer.layers.remove(layer)
        viewer.layers.selection.active = source
        _settle(app)
        bar = TaskProgress(viewer, f"Virtual IHC: {source.name} with baseline")
        last = TileProgress(
            done=4, total=16, skipped=0, mp_per_s=0.21, device="cpu"
        )  # as after a first batch
        bar.update(last.done, last.total, progress_text(source.name, last, cancelling=False))
        gap, _ = _worst_gap_after(app, bar.show)
        out["progress bar"].append(gap)
        bar.close()
        _settle(app)
        gap, _ = _worst_gap_after(app, lambda i=i: show_info(f"napari baseline {i}: a notification"))
        out["notification"].append(gap)
        _settle(app, 1.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000, help="H&E image side (px)")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--norm", default="batch", choices=["batch", "instance", "none"])
    parser.add_argument("--zoom", type=float, default=4.0, help="camera zoom relative to fit (FOV = 1/zoom)")
    parser.add_argument(
        "--keep-spinner",
        action="store_true",
        help="leave napari's activity spinner running (to measure what pausing it saves on software OpenGL)",
    )
    args = parser.parse_args()

    display = _ensure_display()
    os.environ.setdefault("NAPARI_ASYNC", "0")
    import napari
    from qtpy.QtCore import QTimer

    if args.keep_spinner:
        import napari_virtual_ihc._widgets._activity as activity

        activity.software_opengl = lambda viewer: False  # type: ignore[assignment]

    tmp = Path(tempfile.mkdtemp(prefix="bench-widget-"))
    os.environ["NAPARI_VIRTUAL_IHC_CONFIG_DIR"] = str(tmp / "config")
    model_path = _model(tmp / "model.safetensors", args.ngf, args.blocks, args.norm)
    batch_s, window = _one_batch_seconds(model_path, args.tile, args.batch)

    engine_first_s = _engine_first_tile_seconds(
        model_path, _he_image(args.size), args.tile, args.batch, tmp / "engine-only.ome.zarr"
    )

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    app = napari.qt.get_qapp()
    rgb = _he_image(args.size)
    source = viewer.add_image(rgb, name="H&E", rgb=True, scale=(0.5, 0.5), units=("um", "um"))
    _, widget = viewer.window.add_plugin_dock_widget("napari-virtual-ihc", "Virtual IHC")
    widget.set_model_path(model_path)
    widget.output_edit.setText(str(tmp / "out"))
    widget.tile_spin.setValue(args.tile)
    widget.batch_spin.setValue(args.batch)
    widget.set_device("cpu")
    viewer.reset_view()
    viewer.scene.camera.zoom *= args.zoom  # look at the centre: the engine should start there
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)

    ticks: list[tuple[float, float]] = []  # (wall, GUI-thread CPU) when the probe starts and at every tick

    def tick() -> None:
        ticks.append((time.perf_counter(), time.thread_time()))

    probe = QTimer()
    probe.setInterval(5)
    probe.timeout.connect(tick)

    draws: list[float] = []
    scene_canvas = viewer.window._qt_viewer.canvas._scene_canvas
    scene_canvas.events.draw.connect(lambda _event: draws.append(time.perf_counter()))
    tick()  # the probe starts at the click: the handler blocks the event loop like any other event
    clicked = ticks[0][0]
    probe.start()
    run = widget.start_run()
    click_s = time.perf_counter() - clicked
    assert run is not None, "the run did not start"
    while run.running:
        app.processEvents()
        time.sleep(0.001)
    probe.stop()
    if run.state != "done":
        sys.exit(f"run ended {run.state}: {run.error}")
    for _ in range(100):  # let the run's end settle (notification, layer list) before the napari baseline
        app.processEvents()
        time.sleep(0.01)
    napari_stalls = _napari_alone_stalls(viewer, app, source)  # after the run: before it, it slowed Run

    first_s = run.timeline["first_tile_shown"] - clicked
    tp = run.last_progress
    print(
        f"image {args.size}x{args.size} px, model resnet ngf={args.ngf} blocks={args.blocks} norm={args.norm}"
    )
    device = run.report.device if run.report else "?"
    print(f"tile {args.tile} (+halo -> window {window}), batch {args.batch}, device {device}")
    print(
        f"tiles {tp.total if tp else '?'}, run {run.timeline['ended'] - clicked:.2f} s, {tp.mp_per_s if tp else 0:.2f} MP/s"
    )
    print(f"baseline: one batch compute            {batch_s * 1000:8.0f} ms")
    print(
        f"Run -> first visible tile              {first_s * 1000:8.0f} ms  ratio {first_s / batch_s:.2f} (target <= 2)"
    )
    print(
        f"bare engine (no GUI): load -> first tile {engine_first_s * 1000:8.0f} ms  ratio "
        f"{engine_first_s / batch_s:.2f}; the widget adds {(first_s - engine_first_s) * 1000:.0f} ms"
    )
    stamps = {k: round((v - clicked) * 1000) for k, v in run.timeline.items()}
    print(f"timeline (ms after the click): {stamps}")
    print("canvas repaints (ms after the click):", [round((t - clicked) * 1000) for t in draws][:12])
    print(f"Run click handler (starts the worker)  {click_s * 1000:8.0f} ms (counted in the stalls below)")
    ready, first = run.timeline.get("engine_ready"), run.timeline.get("first_tile_reported")
    if ready is not None and first is not None:
        inside = [c for w, c in ticks if ready <= w <= first]
        gui_cpu = (inside[-1] - inside[0]) if len(inside) > 1 else 0.0
        print(
            f"first batch in the widget {(first - ready) * 1000:.0f} ms (baseline {batch_s * 1000:.0f}); "
            f"GUI-thread CPU meanwhile {gui_cpu * 1000:.0f} ms"
        )
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(ticks)]
    cpu = [b[1] - a[1] for a, b in itertools.pairwise(ticks)]  # GUI CPU in each gap: low = starved
    worst = max(gaps) if gaps else float("nan")
    over = sum(1 for g in gaps if g > 0.1)
    worst_cpu = cpu[gaps.index(worst)] if gaps else float("nan")
    worst_at = ticks[gaps.index(worst) + 1][0] - clicked if gaps else float("nan")
    print(
        f"worst Qt event-loop stall while staining {worst * 1000:6.0f} ms  ({over} of {len(gaps)} ticks > 100 ms; "
        f"target < 100); GUI-thread CPU in that gap {worst_cpu * 1000:.0f} ms, ending {worst_at * 1000:.0f} ms "
        "after the click"
    )
    # the gap napari builds the run's layer in (``layer_shown`` is stamped as add_image returns), the one
    # it is first painted in, and the worst of all the others
    shown = run.timeline.get("layer_shown", clicked)
    at = next((i for i, (a, b) in enumerate(itertools.pairwise(ticks)) if a[0] <= shown <= b[0]), 0)
    build = gaps[at : at + 2]
    others = gaps[:at] + gaps[at + 2 :]
    print(
        f"  napari building and first painting the run's layer {', '.join(f'{g * 1000:.0f}' for g in build)} ms;"
        f" worst other stall {max(others, default=0.0) * 1000:.0f} ms"
    )
    print(
        "  napari alone, no run (ms, 3 times each): "
        + "; ".join(f"{k} {', '.join(f'{g * 1000:.0f}' for g in v)}" for k, v in napari_stalls.items())
    )
    long_gaps = sorted(range(len(gaps)), key=gaps.__getitem__, reverse=True)[:5]
    print(
        "longest gaps (ms, ending ms after the click, GUI CPU ms):",
        [
            (round(gaps[i] * 1000), round((ticks[i + 1][0] - clicked) * 1000), round(cpu[i] * 1000))
            for i in sorted(long_gaps)
            if gaps[i] > 0.05
        ],
    )
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"layer refreshes {run.refresh_count}, chunks read from disk {run.view.chunk_reads if run.view else 0}"
    )
    viewer.close()
    if display is not None:
        display.stop()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
