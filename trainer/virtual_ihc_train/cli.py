"""``virtual-ihc-train fit|resume|evaluate|export|reproduce|mil|mist-resplit``: argument parsing only; the work is
in the modules."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from napari_virtual_ihc.cli.argtypes import float_in
from napari_virtual_ihc.models.spec import MODEL_MPP_RANGE

from . import __version__
from .config import Config, ConfigError, merge, parse_set, read_config_file, set_value
from .data import DatasetError
from .presets import PRESET_NOTES, PRESETS, preset_config


def build_config(args: argparse.Namespace) -> Config:
    """Preset, then the config file, then dataset shortcuts, then ``--set`` (last wins)."""
    cfg = preset_config(args.preset, args.multiscale_discriminator)
    if args.config:
        merge(cfg, read_config_file(Path(args.config)))
    if args.bci:
        set_value(cfg, "data.kind", "bci")
        set_value(cfg, "data.root", str(args.bci))
    if args.mist:
        set_value(cfg, "data.kind", "mist")
        set_value(cfg, "data.root", str(args.mist))
    for kind in ("paired", "unpaired"):
        folders = getattr(args, kind)
        if folders:
            set_value(cfg, "data.kind", kind)
            set_value(cfg, "data.source", str(folders[0]))
            set_value(cfg, "data.target", str(folders[1]))
    for key, value in parse_set(args.set or []).items():
        set_value(cfg, key, value)
    return cfg


def cmd_fit(args: argparse.Namespace) -> int:
    from .loop import fit

    cfg = build_config(args)
    run_dir = Path(args.run_dir)
    if (run_dir / "checkpoints" / "latest.txt").exists():
        raise ConfigError(
            f"{run_dir} already holds a run; use `virtual-ihc-train resume {run_dir}` or another --run-dir"
        )
    summary = fit(cfg, run_dir)
    print(f"trained to step {summary['step']} (epoch {summary['epoch']}); run in {run_dir}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from .loop import fit

    run_dir = Path(args.run_dir)
    cfg_file = run_dir / "config.yaml"
    if not cfg_file.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = Config.from_dict(read_config_file(cfg_file))
    for key, value in parse_set(args.set or []).items():
        set_value(cfg, key, value)
    summary = fit(cfg, run_dir, resume=True)
    print(f"trained to step {summary['step']} (epoch {summary['epoch']}); run in {run_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.evaluate import evaluate_cli

    return evaluate_cli(args)


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run

    out = export_run(
        Path(args.run_dir),
        Path(args.out),
        checkpoint=args.checkpoint,
        metrics_json=args.metrics,
        mpp=args.mpp,
        name=args.name,
        net=args.net,
    )
    print(f"wrote {out}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import Options, reproduce
    from .reproduce.preflight import WEIGHTS_FLAGS

    opts = Options(
        target=args.target,
        data=Path(args.data) if args.data else None,
        run_dir=Path(args.run_dir),
        dry_run=args.dry_run,
        iterations=args.iterations,
        epochs=args.epochs,
        sets=args.set or [],
        rows=[r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None,
        metrics=[m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None,
        weights={k: getattr(args, k) for k in WEIGHTS_FLAGS},
        device=args.device,
        nuclei_method=args.nuclei_method,
        dropout_seed=args.dropout_seed,
        mpp=args.mpp,
    )
    return reproduce(opts)


def cmd_mil(args: argparse.Namespace) -> int:
    from .mil import train_mil

    out = train_mil(
        Path(args.images),
        Path(args.labels),
        Path(args.out),
        tile=args.tile,
        epochs=args.epochs,
        lr=args.lr,
        width=args.width,
        imagenet=Path(args.imagenet) if args.imagenet else None,
        k=args.k,
        batch_size=args.batch_size,
        min_tissue=args.min_tissue,
        seed=args.seed,
        resume=args.resume,
        overwrite=args.overwrite,
        mpp=args.mpp,
    )
    print(f"wrote {out}")
    return 0


def cmd_mist_resplit(args: argparse.Namespace) -> int:
    from .mist_split import resplit_mist

    r = resplit_mist(
        Path(args.root), Path(args.out), args.val_fraction, args.seed, args.slide_pattern, args.copy
    )
    print(
        f"{r['slides']} slides: train {len(r['train']['slides'])} slides / {r['train']['tiles']} tiles, "
        f"val {len(r['val']['slides'])} slides / {r['val']['tiles']} tiles; the shipped split shared "
        f"{len(r['shipped_split_slides_in_both'])} slides. Wrote {Path(args.out) / 'split.json'}"
    )
    return 0


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="pyramid-pix2pix",
        help="; ".join(f"{k}: {v}" for k, v in PRESET_NOTES.items()),
    )
    p.add_argument(
        "--multiscale-discriminator",
        action="store_true",
        help="pix2pixHD's discriminator: 3 scales, LSGAN, feature matching (x10)",
    )
    p.add_argument("--config", help="YAML or TOML file of overrides (nested sections or dotted keys)")
    p.add_argument("--bci", metavar="ROOT", help="BCI folder (HE/{train,test}, IHC/{train,test})")
    p.add_argument("--mist", metavar="ROOT", help="MIST folder (trainA, trainB, valA, valB)")
    p.add_argument(
        "--paired", nargs=2, metavar=("HE_DIR", "IHC_DIR"), help="two folders with the same file names"
    )
    p.add_argument("--unpaired", nargs=2, metavar=("HE_DIR", "IHC_DIR"), help="two folders, no pairing")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one key, e.g. optim.lr=1e-4")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virtual-ihc-train", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="train a generator from a preset")
    add_config_args(p)
    p.add_argument("--run-dir", required=True, help="where config, checkpoints, logs and grids go")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("resume", help="continue a run from its latest checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. train.max_steps=20000")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser(
        "evaluate", help="PSNR/SSIM (overall, per HER2 class), FID/KID, LPIPS/DISTS, TDKstain errors"
    )
    from .evaluation.evaluate import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="write the plugin's checkpoint (.safetensors with header) from a run")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--checkpoint", help="checkpoint folder name (default: latest)")
    p.add_argument("--metrics", help="evaluation JSON to record in the header (metrics.json from evaluate)")
    p.add_argument(
        "--mpp",
        type=float_in(*MODEL_MPP_RANGE, unit="µm/px"),
        help="µm/px of the training data (overrides data.mpp)",
    )
    p.add_argument("--name", help="model name shown in the plugin")
    p.add_argument(
        "--net", default="G", help="which generator: G (H&E -> IHC, default) or G_B (CycleGAN's IHC -> H&E)"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "reproduce",
        help="one paper table: fit each row's preset, select, export, evaluate as the paper, table beside ours",
    )
    from .reproduce.cli import add_arguments as add_reproduce_arguments

    add_reproduce_arguments(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser(
        "mil", help="train the tumour classifier of the class channel (MIL, ResNet-34) from weak labels"
    )
    from .mil import add_arguments as add_mil_arguments

    add_mil_arguments(p)
    p.set_defaults(func=cmd_mil)
    p = sub.add_parser("mist-resplit", help="re-split MIST by slide id (no slide in both train and val)")
    p.add_argument("root", help="MIST folder with trainA, trainB, valA, valB")
    p.add_argument("--out", required=True, help="new, empty folder for the grouped split")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--slide-pattern",
        default=r"^([^_]+)_",
        help="regex on the file stem; its first group is the slide id",
    )
    p.add_argument("--copy", action="store_true", help="copy the images (default: symbolic links)")
    p.set_defaults(func=cmd_mist_resplit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .loop import TrainingDivergedError

    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except TrainingDivergedError as exc:  # the run failed, the data and config were fine: exit 1
        print(f"virtual-ihc-train: error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, DatasetError, ValueError, FileNotFoundError) as exc:  # bad input: say what, exit 2
        print(f"virtual-ihc-train: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from napari_virtual_ihc.models import CheckpointError

        from .evaluation.evaluate import MissingWeightsError
        from .methods.tdkstain.knowledge_maps import KnowledgeCacheError
        from .run_state import ResumeError

        if isinstance(exc, (CheckpointError, MissingWeightsError, ResumeError, KnowledgeCacheError)):
            print(f"virtual-ihc-train: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError):  # a file that cannot be read or written: name it, no traceback
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"virtual-ihc-train: error: {where}{exc.strerror or exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
