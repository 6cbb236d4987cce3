"""``virtual-ihc demo``: napari with the embedded H&E sample, the Virtual IHC widget docked and the embedded
demo model (H&E -> DAB-IHC appearance, not HER2) selected; ``--headless --out DIR`` stains the sample
without a display and writes the OME-Zarr result and a side-by-side PNG."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="open napari with the embedded H&E sample, the Virtual IHC widget and the demo model"
    )
    p.add_argument("--no-widget", action="store_true", help="only open the sample")
    p.add_argument("--headless", action="store_true", help="no window: stain the sample into --out")
    p.add_argument("--out", help="output folder for --headless (OME-Zarr + side-by-side PNG)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models import CheckpointError, demo_model_path

    try:
        model_path = demo_model_path()
    except CheckpointError as exc:
        print(f"virtual-ihc demo: {exc}", file=sys.stderr)
        return 2
    if args.headless:
        if not args.out:
            print("virtual-ihc demo: --headless needs --out DIR", file=sys.stderr)
            return 2
        return headless(model_path, Path(args.out))
    import napari

    viewer = napari.Viewer(title="napari-virtual-ihc demo")
    viewer.open_sample("napari-virtual-ihc", "cmu1_region")
    if not args.no_widget:
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-virtual-ihc", "Virtual IHC")
        widget.set_model_path(str(model_path))
    napari.run()
    return 0


def headless(model_path: Path, out: Path) -> int:
    """Stain the sample with the demo model; writes ``CMU-1-region.ome.zarr`` and ``...-side-by-side.png``."""
    import numpy as np
    from PIL import Image

    from .._sample_data import CMU1_REGION
    from ..ihc_store import StoreError
    from ..inference import EngineSettings, stain_slide
    from ..inference.errors import EngineError
    from ..models import CheckpointError, load_generator
    from ..slides import open_slide
    from ..slides.errors import SlideError

    t0 = time.perf_counter()
    store = out / f"{CMU1_REGION.stem}.ome.zarr"
    try:
        out.mkdir(parents=True, exist_ok=True)
        slide = open_slide(CMU1_REGION)
        try:
            rep = stain_slide(slide, load_generator(model_path), store, EngineSettings())
            he = slide.read_region((0, 0), 0, slide.dimensions)
        finally:
            slide.close()
        stained = open_slide(store)
        try:
            ihc = stained.read_region((0, 0), 0, stained.dimensions)
        finally:
            stained.close()
    except (EngineError, StoreError, CheckpointError, SlideError, OSError, ValueError) as exc:
        # e.g. a foreign folder at the store's path: kept, and said so (issue 29)
        print(f"virtual-ihc demo: {exc}", file=sys.stderr)
        return 1
    if ihc.shape != he.shape:  # the model ran at another µm/px: show both at the H&E's size
        ihc = np.asarray(Image.fromarray(ihc).resize((he.shape[1], he.shape[0]), Image.Resampling.BICUBIC))
    png = out / f"{CMU1_REGION.stem}-side-by-side.png"
    Image.fromarray(np.concatenate([he[..., :3], ihc[..., :3]], axis=1)).save(png)
    print(
        f"stained {CMU1_REGION.name} with the demo model (not HER2) in {time.perf_counter() - t0:.1f} s "
        f"({rep.tiles_done} tiles on {rep.device}): {store}, {png}"
    )
    return 0
