"""Arguments of ``virtual-ihc-train reproduce`` (the work is in :mod:`.runner`)."""

from __future__ import annotations

import argparse

from napari_virtual_ihc.cli.argtypes import float_in

from .tables import TABLES


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target", choices=sorted(TABLES), help="; ".join(f"{k}: {t.citation}" for k, t in TABLES.items())
    )
    p.add_argument("--data", help="the data set in the paper's layout (without it: a dry run, the plan only)")
    p.add_argument("--run-dir", required=True, help="one sub-folder per row, and TABLE.md/.csv/.png")
    p.add_argument("--dry-run", action="store_true", help="print every step and exit")
    p.add_argument("--iterations", type=_positive, help="stop each row after N iterations (train.max_steps)")
    p.add_argument(
        "--epochs", type=_positive, help="N epochs per row (constant and decay in the preset's ratio)"
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="[ROW:]KEY=VALUE",
        help="override a key for every row, or for ROW only; model.arch_kwargs.NAME=V sets one generator "
        "argument where the row's generator has it; mil.tile/width/epochs/lr/k/batch_size for the MIL step",
    )
    p.add_argument("--rows", help="comma list of the rows to run (the others show the paper's numbers only)")
    p.add_argument("--metrics", help="comma list: measure only these of the table's metrics")
    p.add_argument("--inception", help="pt_inception-2015-12-05-6726825d.pth (FID)")
    p.add_argument("--inception-torchvision", help="inception_v3_google-0cc3c7bd.pth (KID, ASP convention)")
    p.add_argument("--resnet50", help="resnet50-0676ba61.pth (PHV)")
    p.add_argument("--vgg16", help="vgg16-397923af.pth (DISTS)")
    p.add_argument("--alexnet", help="alexnet-owt-7be5be79.pth (LPIPS)")
    p.add_argument("--lpips-lin", help="lpips v0.1 alex.pth (LPIPS heads)")
    p.add_argument("--dists-weights", help="DISTS weights.pt")
    p.add_argument("--nuclei-method", choices=("auto", "cellpose", "classical"), default="auto")
    p.add_argument("--dropout-seed", type=int, default=0, help="seed of the dropout masks at evaluation")
    p.add_argument(
        "--mpp", type=float_in(0.05, 5.0, unit="µm/px"), default=0.5, help="µm/px of the Ki-67 images"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
