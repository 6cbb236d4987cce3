"""``virtual-ihc convert IN.pth OUT.safetensors``: import a paper's checkpoint into the project format.

Argument parsing only; detection, strict loading and the atomic write live in ``models``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from ..models import CheckpointError, load_generator, norm_kind, save_generator
from ..models.spec import MODEL_MPP_RANGE
from .argtypes import float_in, int_in


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="import a pix2pix/CycleGAN/PyramidPix2pix/TDKstain/ASP .pth into the project's .safetensors format",
        description=(
            "Read a generator checkpoint (.pth state dict, loaded with torch.load(weights_only=True), or a "
            ".safetensors), detect its architecture from the keys and shapes, and write a .safetensors "
            "with a JSON header. Options override what detection cannot know."
        ),
    )
    p.add_argument("src", metavar="IN", help="input checkpoint (.pth / .safetensors)")
    p.add_argument("dst", metavar="OUT", help="output .safetensors")
    p.add_argument(
        "--arch",
        help="architecture: resnet, unet_256, unet_128, asp_resnet or a registered one (default: detected)",
    )
    p.add_argument("--n-blocks", type=int_in(0, 64), help="residual blocks, 0..64 (default: detected)")
    p.add_argument("--ngf", type=int_in(1, 1024), help="width of the first layer (default: detected)")
    p.add_argument(
        "--n-downsampling", type=int_in(0, 6), help="ResNet downsamplings, 2 or 3 (default: detected)"
    )
    p.add_argument("--norm", choices=["instance", "batch", "none"], help="normalisation (default: detected)")
    p.add_argument("--dropout", type=_bool, metavar="BOOL", help="dropout layers (default: detected)")
    p.add_argument(
        "--model-mpp",
        type=float_in(*MODEL_MPP_RANGE, unit="µm/px"),
        help="µm/pixel the model was trained at (imported .pth: unknown)",
    )
    p.add_argument("--name", help="model name shown in the UI (default: the input's file name)")
    p.add_argument("--target-stain", help="stain the model produces (default: HER2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if _same_file(Path(args.src), Path(args.dst)):
        print(
            f"virtual-ihc convert: the output {args.dst} is the input {args.src} (or a link to it); "
            "choose another output file",
            file=sys.stderr,
        )
        return 1
    try:
        loaded = load_generator(
            args.src,
            arch=args.arch,
            n_blocks=args.n_blocks,
            ngf=args.ngf,
            n_downsampling=args.n_downsampling,
            norm=args.norm,
            use_dropout=args.dropout,
            mpp=args.model_mpp,
            name=args.name,
            target_stain=args.target_stain,
        )
        spec = dataclasses.replace(
            loaded.spec, provenance={**loaded.spec.provenance, "source_sha256": loaded.sha256}
        )
        out = save_generator(args.dst, loaded.module, spec)
    except CheckpointError as exc:
        print(f"virtual-ihc convert: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"virtual-ihc convert: cannot write {args.dst}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    n_params = sum(int(t.numel()) for t in loaded.module.parameters())
    print(f"wrote {out}")
    print(f"  arch {spec.arch} {json.dumps(spec.arch_kwargs, sort_keys=True)}")
    print(f"  norm {norm_kind(loaded.module)}, {n_params / 1e6:.2f} M parameters")
    print(f"  mpp {spec.mpp if spec.mpp is not None else 'unknown (runs at the slide native resolution)'}")
    print(f"  name {spec.name!r}, target stain {spec.target_stain}")
    return 0


def _same_file(src: Path, dst: Path) -> bool:
    """True when writing ``dst`` would replace ``src``: the same path, a symbolic or a hard link to it."""
    try:
        return src.resolve() == dst.resolve() or (dst.exists() and os.path.samefile(src, dst))
    except OSError:
        return False
