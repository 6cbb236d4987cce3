"""``virtual-ihc stain SLIDE... --model CKPT --out DIR``: batch whole-slide staining, one OME-Zarr per slide.

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` in the environment) the slides are split across ranks, slide
``i`` (in the order given) going to rank ``i % WORLD_SIZE``, so each slide is stained exactly once without a
scheduler. No process group is needed for that; if one is already initialised, ranks meet at a barrier at
the end so ``torchrun`` exits when every slide is done.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stain",
        help="stain H&E slides into virtual IHC OME-Zarr stores",
        description="Stain whole slides with a generator checkpoint; writes DIR/<slide>.ome.zarr and "
        "DIR/<slide>.run.json. Re-running resumes unfinished stores. Under torchrun the slides are split "
        "across ranks.",
    )
    p.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files (svs, tiff, ndpi, png, ...)")
    p.add_argument("--model", required=True, help="checkpoint (.safetensors, or a reference .pth)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        help="written core of each tile, px at the model's resolution (default: the largest of 2048/1024/512 "
        "that fits the memory available: large tiles waste less on halos)",
    )
    p.add_argument(
        "--halo",
        type=int,
        default=None,
        help="context px around each tile (default: half the receptive field)",
    )
    p.add_argument(
        "--batch", type=int, default=None, help="tiles per forward pass (default: 1 on the CPU, 4 on a GPU)"
    )
    p.add_argument(
        "--no-winograd",
        dest="winograd",
        action="store_false",
        help="CPU fp32: run 3x3 convolutions directly instead of as Winograd F(4x4,3x3) (same output to rounding)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--region", default=None, help="x,y,w,h in level-0 pixels (default: whole slide)")
    p.add_argument(
        "--model-mpp", type=float, default=None, help="µm/px the model was trained at (for imported .pth)"
    )
    p.add_argument("--no-skip-background", action="store_true", help="run the model on blank glass too")
    p.add_argument(
        "--bn-stats",
        choices=["running", "slide"],
        default=None,
        help="BatchNorm models: running statistics (eval mode) or the slide's own, frozen (what the papers' "
        "test.py does without --eval; default: what the checkpoint records, imported .pth: slide)",
    )
    p.add_argument(
        "--dropout",
        default=None,
        metavar="off|sample|mean:N",
        help="dropout at inference: off, one sample (test.py), or the mean of N samples plus a confidence "
        "map DIR/<slide>.confidence.ome.zarr (default: what the checkpoint records)",
    )
    p.add_argument("--dropout-seed", type=int, default=0, help="seed of the (position-based) dropout masks")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_region(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        raise ValueError(f"--region must be x,y,w,h (got {text!r})")
    try:
        x, y, w, h = (int(float(p)) for p in parts)
    except ValueError as e:
        raise ValueError(f"--region must be four numbers x,y,w,h (got {text!r})") from e
    return (x, y, w, h)


def rank_and_world() -> tuple[int, int]:
    """This process's share under torchrun (``RANK``, ``WORLD_SIZE``), (0, 1) otherwise."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1
    world = max(1, world)
    return min(max(rank, 0), world - 1), world


def slides_for_rank(slides: list[str], rank: int, world: int) -> list[str]:
    """Slide ``i`` goes to rank ``i % world``: every slide exactly once across ranks."""
    return [s for i, s in enumerate(slides) if i % world == rank]


def slide_stem(path: Path) -> str:
    name = path.name
    for ext in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _open_slide(path: Path):  # type: ignore[no-untyped-def]
    """The slides package's reader; plain images still open if it is not installed in this build."""
    try:
        from ..slides import open_slide  # type: ignore[attr-defined]
    except ImportError:
        open_slide = None
    if open_slide is not None:
        return open_slide(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    from skimage.io import imread

    from ..slides.base import ArraySlide

    img = imread(str(path))
    if img.ndim == 2:
        img = __import__("numpy").stack([img] * 3, axis=-1)
    return ArraySlide(img[..., :3].astype("uint8"), None, path=path)


def run(args: argparse.Namespace) -> int:
    from ..inference import EngineSettings, stain_slide
    from ..inference.dropout import DropoutMode
    from ..inference.errors import EngineError
    from ..models import CheckpointError, load_generator

    rank, world = rank_and_world()
    out = Path(args.out)
    try:
        region = parse_region(args.region)
        DropoutMode.parse(args.dropout)
    except ValueError as e:
        print(f"virtual-ihc stain: {e}", file=sys.stderr)
        return 2
    mine = slides_for_rank(list(args.slides), rank, world)
    tag = f"[rank {rank}/{world}] " if world > 1 else ""
    try:
        from ..inference.store import check_writable_folder

        check_writable_folder(out)
        model = load_generator(args.model)
    except (EngineError, CheckpointError) as e:
        print(f"virtual-ihc stain: {e}", file=sys.stderr)
        return 2
    for note in model.notes:  # what loading assumed: say it before any work
        print(f"{tag}note: {note}", file=sys.stderr, flush=True)
    settings = EngineSettings(
        tile=args.tile,
        halo=args.halo,
        batch=args.batch,
        winograd=args.winograd,
        device=args.device,
        precision=args.precision,
        model_mpp=args.model_mpp,
        skip_background=not args.no_skip_background,
        bn_stats=args.bn_stats,
        dropout=args.dropout,
        dropout_seed=args.dropout_seed,
    )
    failures = 0
    for slide_arg in mine:
        path = Path(slide_arg)
        store = out / f"{slide_stem(path)}.ome.zarr"
        print(f"{tag}stain {path} -> {store}", flush=True)
        try:
            slide = _open_slide(path)
        except Exception as e:  # slides raise typed SlideError; any failure must not stop the cohort
            print(f"{tag}error: cannot open {path}: {e}", file=sys.stderr)
            failures += 1
            continue
        bar = None
        try:
            if not args.quiet:
                from tqdm import tqdm

                bar = tqdm(total=0, unit="tile", desc=f"{tag}{path.name}", dynamic_ncols=True)

            def on_progress(p, bar=bar):  # type: ignore[no-untyped-def]
                if bar is not None:
                    bar.total = p.total
                    bar.n = p.done
                    bar.set_postfix(
                        skipped=p.skipped, mp_s=f"{p.mp_per_s:.3f}", device=p.device, refresh=False
                    )
                    bar.refresh()

            rep = stain_slide(
                slide, model, store, settings, region=region, progress=on_progress, cancel=threading.Event()
            )
        except (EngineError, ValueError, OSError) as e:
            print(f"{tag}error: {path}: {e}", file=sys.stderr)
            failures += 1
            continue
        finally:
            if bar is not None:
                bar.close()
            slide.close()
        _annotate_run_json(store, rank, world, str(path))
        print(
            f"{tag}done {path.name}: {rep.tiles_done} tiles stained, {rep.tiles_skipped} background, "
            f"{rep.tiles_resumed} resumed, {rep.seconds:.1f} s, {rep.mp_per_s:.3f} MP/s on {rep.device}, "
            f"{rep.settings['compute']['described']}",
            flush=True,
        )
        for warning in rep.warnings:
            print(f"{tag}warning: {path.name}: {warning}", file=sys.stderr, flush=True)
    _barrier()
    return 1 if failures else 0


def _annotate_run_json(store: Path, rank: int, world: int, slide: str) -> None:
    from ..inference.engine import run_json_path

    p = run_json_path(store)
    try:
        data = json.loads(p.read_text())
        data.update(rank=rank, world_size=world, slide=slide)
        p.write_text(json.dumps(data, indent=2, default=str))
    except (OSError, ValueError):
        pass


def _barrier() -> None:
    """Wait for the other ranks only if the launcher already made a process group."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
    except Exception:  # pragma: no cover - a barrier failure must not hide the per-slide results
        pass
