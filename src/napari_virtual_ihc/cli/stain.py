"""``virtual-ihc stain SLIDE... --model CKPT --out DIR``: batch whole-slide staining, one OME-Zarr per slide.

Every process started on the same slides and ``--out`` (``torchrun`` ranks, Slurm array tasks, processes
started by hand) shares the work: each claims the next slide nobody holds through a claim file in
``DIR/.cohort`` (``inference.cohort``), so a large slide does not hold up the others and a crashed worker's
slide is taken over after its lease. ``DIR/cohort.csv`` and ``virtual-ihc cohort status DIR`` say what
became of each slide. Each process uses its own GPU (``cuda:LOCAL_RANK``, ``inference.devices``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..cohort import SlideRecord
    from ..inference.api import TileProgress

from ..cohort import DEFAULT_LEASE_S, LEASE_ENV
from ..models.spec import MODEL_MPP_RANGE
from .argtypes import float_in, int_in

MAX_HALO_ARG = 1024  # px: far beyond any receptive field (a 9-block ResNet needs ~64)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stain",
        help="stain H&E slides into virtual IHC OME-Zarr stores",
        description="Stain whole slides with a generator checkpoint; writes DIR/<slide>.ome.zarr and "
        "DIR/<slide>.run.json. Re-running resumes unfinished stores. Several processes started on the same "
        "slides and DIR (torchrun, a Slurm array, by hand) share the slides as each finishes.",
    )
    p.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files (svs, tiff, ndpi, png, ...)")
    p.add_argument("--model", required=True, help="checkpoint (.safetensors, or a reference .pth)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--tile",
        type=int_in(32, 8192),
        default=None,
        help="written core of each tile, px at the model's resolution, 32..8192 (default: the largest of "
        "2048/1024/512 that fits the memory available: large tiles waste less on halos)",
    )
    p.add_argument(
        "--halo",
        type=int_in(0, MAX_HALO_ARG),
        default=None,
        help=f"context px around each tile, 0..{MAX_HALO_ARG} (default: half the receptive field)",
    )
    p.add_argument(
        "--batch",
        type=int_in(1, 256),
        default=None,
        help="tiles per forward pass, 1..256 (default: 1 on the CPU, 4 on a GPU)",
    )
    p.add_argument(
        "--no-winograd",
        dest="winograd",
        action="store_false",
        help="CPU: run 3x3 convolutions directly instead of as Winograd (fp32: F(4x4,3x3), same output to "
        "rounding; bf16: F(2x2,3x3) with compiled transforms)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument(
        "--workers",
        type=int_in(1, 64),
        default=None,
        help="decode threads reading tiles ahead of the model, 1..64 (default: 1 on the CPU, a quarter of "
        "the cores (2..8) with a GPU)",
    )
    p.add_argument(
        "--read-ahead",
        type=int_in(1, 256),
        default=None,
        help="batches decoded ahead of the model, 1..256 (default: twice the workers)",
    )
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--region", default=None, help="x,y,w,h in level-0 pixels (default: whole slide)")
    p.add_argument(
        "--model-mpp",
        type=float_in(*MODEL_MPP_RANGE, unit="µm/px"),
        default=None,
        help=f"µm/px the model was trained at, {MODEL_MPP_RANGE[0]:g}..{MODEL_MPP_RANGE[1]:g} (for imported .pth)",
    )
    p.add_argument("--no-skip-background", action="store_true", help="run the model on blank glass too")
    p.add_argument(
        "--bn-stats",
        choices=["running", "slide"],
        default=None,
        help="BatchNorm layers (also those inside instance-norm models, AMMFI's attention): running statistics (eval mode) or the slide's own, frozen (what the papers' "
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
    p.add_argument(
        "--lease",
        type=float_in(0.5, 86400.0, unit="s"),
        default=None,
        help="seconds after which a slide claimed by a worker that stopped renewing its claim is taken over "
        f"(default ${LEASE_ENV} or {DEFAULT_LEASE_S:g})",
    )
    p.add_argument(
        "--retry-failed", action="store_true", help="claim again the slides this cohort recorded as failed"
    )
    p.add_argument(
        "--tumour-class",
        choices=["auto", "tumour", "non-tumour"],
        default="auto",
        help="models with a tumour-class channel: one class for every slide, or auto (the tumour classifier)",
    )
    p.add_argument("--classifier", help="tumour classifier (.safetensors) for --tumour-class auto")
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


def run(args: argparse.Namespace) -> int:
    from ..cohort import Cohort, CohortMismatchError, largest_first, wait_interval, worker_name
    from ..ihc_store import StoreError, check_output_outside, check_writable_folder, store_paths_for
    from ..inference import EngineSettings
    from ..inference.devices import DeviceError, resolve_device
    from ..inference.dropout import DropoutMode
    from ..inference.errors import EngineError
    from ..models import CheckpointError, load_generator, supply_class_channel

    rank, world = rank_and_world()
    out = Path(args.out)
    try:
        region = parse_region(args.region)
        DropoutMode.parse(args.dropout)
        check_output_outside(out, [Path(s) for s in args.slides])
    except (ValueError, StoreError) as e:
        print(f"virtual-ihc stain: {e}", file=sys.stderr)
        return 2
    tag = f"[rank {rank}/{world}] " if world > 1 else ""
    try:
        check_writable_folder(out)
        model = supply_class_channel(load_generator(args.model), args.tumour_class, args.classifier)
    except (EngineError, StoreError, CheckpointError) as e:
        print(f"virtual-ihc stain: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the checkpoint is not readable
        print(f"virtual-ihc stain: cannot read {args.model}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:  # this process's device (cuda:LOCAL_RANK under a launcher), refused before any slide is claimed
        resolve_device(args.device)
    except DeviceError as e:
        print(f"virtual-ihc stain: {tag}{e}", file=sys.stderr)
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
        workers=args.workers,
        read_ahead=args.read_ahead,
        model_mpp=args.model_mpp,
        skip_background=not args.no_skip_background,
        bn_stats=args.bn_stats,
        dropout=args.dropout,
        dropout_seed=args.dropout_seed,
    )
    failures = 0
    cohort = Cohort(out, worker_name(rank if world > 1 else None), args.lease)
    absolute = [os.path.abspath(a) for a in args.slides]
    stores = dict(zip(absolute, store_paths_for(out, list(args.slides)), strict=True))
    slides = largest_first([(stores[a].name, a) for a in absolute])
    keys = [k for k, _ in slides]
    by_key = dict(slides)
    identity = {
        "model_sha256": model.sha256,
        **{k: getattr(args, k) for k in ("tile", "halo", "model_mpp", "bn_stats", "dropout", "dropout_seed")},
        **{k: getattr(args, k) for k in ("region", "no_skip_background", "tumour_class")},
    }
    try:
        cohort.join(identity)
        cohort.register(slides)
        if args.retry_failed:
            cohort.retry_failed(keys)
    except CohortMismatchError as e:
        print(f"virtual-ihc stain: {tag}{e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(
            f"virtual-ihc stain: cannot write the cohort's claims in {cohort.dir}: {e.strerror or e}",
            file=sys.stderr,
        )
        return 2
    settled = len(keys) - len(cohort.unsettled(keys))
    if settled:
        print(
            f"{tag}{settled} of {len(keys)} slides already settled in {out} (virtual-ihc cohort status {out}; "
            "--retry-failed claims failed ones again, deleting a store stains it again)",
            flush=True,
        )
    while True:
        key = cohort.claim_next(keys)
        if key is None:
            if not cohort.unsettled(keys):
                break
            time.sleep(wait_interval(cohort.lease_s))  # others hold the rest: wait for them or their lease
            continue
        path = Path(by_key[key])
        store = stores[by_key[key]]
        print(f"{tag}stain {path} -> {store}", flush=True)
        with cohort.hold(key) as lost:
            record = _stain_one(path, store, model, settings, region, args.quiet, rank, world, tag, lost)
        record.worker = cohort.worker
        if lost.is_set():
            print(
                f"{tag}warning: {path.name}: this worker's claim was taken over; left to the other worker",
                file=sys.stderr,
                flush=True,
            )
            continue
        cohort.finish(key, record)
        with contextlib.suppress(OSError):
            cohort.write_csv()
        failures += record.state == "failed"
    _barrier()
    return 1 if failures else 0


def _stain_one(
    path: Path,
    store: Path,
    model: Any,
    settings: Any,
    region: tuple[int, int, int, int] | None,
    quiet: bool,
    rank: int,
    world: int,
    tag: str,
    cancel: threading.Event,
) -> SlideRecord:
    """Stain one slide; any failure is reported and recorded, never raised: the cohort goes on."""
    from ..cohort import SlideRecord
    from ..inference import stain_slide
    from ..slides import open_slide

    try:
        slide = open_slide(path)
    except Exception as e:  # slides raise typed SlideError; any failure must not stop the cohort
        message = f"cannot open {path}: {_describe_error(e)}"
        _report_failure(store, rank, world, path, message, e, tag)
        return SlideRecord(str(path), "failed", error=message)
    bar = None
    try:
        if not quiet:
            from tqdm import tqdm

            bar = tqdm(total=0, unit="tile", desc=f"{tag}{path.name}", dynamic_ncols=True)

        def on_progress(p: TileProgress, bar: Any = bar) -> None:
            if bar is not None:
                bar.total = p.total
                bar.n = p.done
                bar.set_postfix(skipped=p.skipped, mp_s=f"{p.mp_per_s:.3f}", device=p.device, refresh=False)
                bar.refresh()

        rep = stain_slide(slide, model, store, settings, region=region, progress=on_progress, cancel=cancel)
    except Exception as e:  # one slide's failure, whatever it is, must not stop the cohort
        if bar is not None:  # end the bar's line first: the error gets a line of its own
            bar.close()
            bar = None
        message = f"{path}: {_describe_error(e)}"
        _report_failure(store, rank, world, path, message, e, tag)
        return SlideRecord(str(path), "failed", error=message)
    finally:
        if bar is not None:
            bar.close()
        slide.close()
    if rep.cancelled:  # this worker's claim was taken over: the new holder finishes the slide
        return SlideRecord(str(path), "pending", tiles=rep.tiles_done + rep.tiles_skipped)
    _annotate_run_json(store, rank, world, str(path))
    print(
        f"{tag}done {path.name}: {rep.tiles_done} tiles stained, {rep.tiles_skipped} background, "
        f"{rep.tiles_resumed} resumed, {rep.seconds:.1f} s, {rep.mp_per_s:.3f} MP/s on {rep.device}, "
        f"{rep.settings['compute']['described']}",
        flush=True,
    )
    for warning in rep.warnings:
        print(f"{tag}warning: {path.name}: {warning}", file=sys.stderr, flush=True)
    return SlideRecord(
        str(path),
        "done",
        tiles=rep.tiles_done + rep.tiles_skipped,
        seconds=round(rep.seconds, 3),
        mp_per_s=round(rep.mp_per_s, 4),
    )


def _annotate_run_json(store: Path, rank: int, world: int, slide: str) -> None:
    from ..ihc_store import replace_text, run_json_path

    p = run_json_path(store)
    try:
        data = json.loads(p.read_text())
        data.update(rank=rank, world_size=world, slide=slide, status="done", error=None)
        replace_text(p, json.dumps(data, indent=2, default=str))
    except (OSError, ValueError):
        pass


def _describe_error(e: BaseException) -> str:
    """One line: the typed errors' own message; anything else prefixed by its type (MemoryError has none)."""
    from ..ihc_store import StoreError
    from ..inference.errors import EngineError
    from ..models import CheckpointError
    from ..slides.errors import SlideError

    text = " ".join(str(e).split())
    if isinstance(e, EngineError | StoreError | CheckpointError | SlideError) and text:
        return text
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _report_failure(
    store: Path, rank: int, world: int, path: Path, message: str, e: BaseException, tag: str
) -> None:
    """The slide's one-line error on stderr and in its ``run.json`` (with the traceback, for a bug report).

    A refused run (another slide's store, a store of other settings, one another run holds, an output
    that cannot be written) writes nothing: the record there is the other run's. Nor is a record that
    names another slide overwritten (issue 29)."""
    from ..ihc_store import (
        OutputNotWritableError,
        StoreLockedError,
        StoreMismatchError,
        replace_text,
        run_json_path,
    )

    print(f"{tag}error: {message}", file=sys.stderr, flush=True)
    if isinstance(e, StoreMismatchError | StoreLockedError | OutputNotWritableError):
        return
    p = run_json_path(store)
    try:
        data = json.loads(p.read_text()) if p.exists() or p.is_symlink() else {}
    except (OSError, ValueError):
        return  # not a record this run can read: not one it may replace
    if not isinstance(data, dict) or (data and not _same_file(data.get("slide"), path)):
        return
    data.update(
        slide=str(path),
        rank=rank,
        world_size=world,
        status="failed",
        error=message,
        error_type=type(e).__name__,
        traceback="".join(traceback.format_exception(e))[-4000:],
    )
    try:
        replace_text(p, json.dumps(data, indent=2, default=str))
    except OSError as write_error:
        print(f"{tag}error: cannot record the failure in {p}: {write_error.strerror}", file=sys.stderr)


def _same_file(recorded: object, path: Path) -> bool:
    """True when a record's ``slide`` is ``path`` (the same file, by any name)."""
    if not isinstance(recorded, str):
        return False
    try:
        return Path(recorded).resolve() == path.resolve() or os.path.samefile(recorded, path)
    except OSError:
        return False


def _barrier() -> None:
    """Wait for the other ranks only if the launcher already made a process group."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
    except Exception:  # pragma: no cover - a barrier failure must not hide the per-slide results
        pass
