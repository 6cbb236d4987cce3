"""What pooling the statistics costs on top of the model: one whole-image forward with every norm's moments
and affine computed on the way (``estimate_instance_stats``, the exact pooled pass) against the frozen, folded
model on the same input (issue 34 item 5). Seeded ResNet-9 InstanceNorm, bf16 with F(2x2, 3x3) Winograd on a
CPU with bf16 instructions (``--precision fp32``: fp32 with F(4x4, 3x3)); each timed after a warm-up run.

    python benchmarks/bench_pooled_overhead.py --side 2048 --ngf 64
"""

from __future__ import annotations

import argparse
import time

import torch

from napari_virtual_ihc.inference.normalization import (
    estimate_instance_stats,
    fold_frozen_norms,
    freeze_normalization,
)
from napari_virtual_ihc.inference.pads import keep_pads_in_input_dtype
from napari_virtual_ihc.inference.winograd import use_winograd
from napari_virtual_ihc.models.registry import build_generator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=2048)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_generator("resnet", ngf=args.ngf, n_blocks=9, norm="instance").eval()
    x = torch.rand(1, 3, args.side, args.side) * 2 - 1
    bf16 = args.precision == "bf16"

    def pooled() -> None:
        estimate_instance_stats(
            model,
            [x],
            [[(0.0, 0.0, 1.0, 1.0)]],
            outputs=[],
            winograd=True,
            precision=args.precision,
            compiled=True,
        )

    stats = estimate_instance_stats(model, [x[..., :256, :256]], winograd=True, precision=args.precision)
    frozen = freeze_normalization(model, stats)
    fold_frozen_norms(frozen)
    keep_pads_in_input_dtype(frozen)
    use_winograd(frozen)
    frozen = frozen.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    @torch.inference_mode()
    def plain() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            frozen(x.contiguous(memory_format=torch.channels_last))

    seconds = {}
    for name, fn in (("pooled", pooled), ("frozen", plain)):
        fn()  # warm-up: compiles, first-touch pages
        t0 = time.perf_counter()
        fn()
        seconds[name] = time.perf_counter() - t0
    mp = args.side * args.side / 1e6
    print(
        f"{args.side} px ({mp:.1f} MP), ngf {args.ngf}, {args.precision}, {torch.get_num_threads()} thread(s): "
        f"pooled pass {seconds['pooled']:.1f} s, frozen model {seconds['frozen']:.1f} s: the statistics cost "
        f"{100 * (seconds['pooled'] / seconds['frozen'] - 1):.1f} %"
    )


if __name__ == "__main__":
    main()
