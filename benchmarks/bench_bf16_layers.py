"""Two CPU inference changes against their baselines, in one run: pads kept in bf16 and the RGB layer as rows.

1. A ResNet-9 forward under bf16 autocast with plain ``nn.ReflectionPad2d`` (autocast runs each pad in fp32:
   two copies per pad) against the same model with ``inference.pads``' dtype-keeping pads (same output).
2. The 7x7 convolution from ``ngf`` channels to 3 direct against ``inference.row_conv.RowSplitConv2d``, bf16
   and fp32.
Prints seconds (best of ``--repeats``, the two variants interleaved) and the ratio baseline / new.

    python benchmarks/bench_bf16_layers.py                    # 1024 px window, ngf 64, one thread
    python benchmarks/bench_bf16_layers.py --size 2048 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

# isort: off
import napari_virtual_ihc  # noqa: F401  (before torch: it sets up torch's CPU allocator)

# isort: on
import torch
from torch import nn

from napari_virtual_ihc.inference.pads import keep_pads_in_input_dtype
from napari_virtual_ihc.inference.row_conv import RowSplitConv2d
from napari_virtual_ihc.models import build_generator


def best_of(fns: dict[str, Callable[[], torch.Tensor]], repeats: int) -> dict[str, float]:
    """Best wall seconds of each function, the functions interleaved so drift hits all alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, help="window side (px)")
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), window {args.size} px, ngf {args.ngf}"
    )

    torch.manual_seed(0)
    plain = build_generator("resnet", n_blocks=9, ngf=args.ngf, norm="batch").eval()
    plain = plain.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    kept = copy.deepcopy(plain)
    keep_pads_in_input_dtype(kept)
    x = (torch.rand(1, 3, args.size, args.size) * 2 - 1).contiguous(memory_format=torch.channels_last)

    def forward(m: nn.Module) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return m(x)

        return run

    t = best_of({"pads upcast": forward(plain), "pads in bf16": forward(kept)}, args.repeats)
    same = torch.equal(forward(plain)(), forward(kept)())
    print(
        f"  ResNet-9 forward, bf16: pads upcast {t['pads upcast']:.2f} s, pads in bf16 {t['pads in bf16']:.2f} s: "
        f"{t['pads upcast'] / t['pads in bf16']:.2f}x (outputs identical: {same})"
    )

    conv = nn.Conv2d(args.ngf, 3, 7)
    rows = RowSplitConv2d(conv)
    feat = torch.randn(1, args.ngf, args.size + 6, args.size + 6).contiguous(
        memory_format=torch.channels_last
    )
    for bf16 in (True, False):

        def layer(m: nn.Module, bf16: bool = bf16) -> Callable[[], torch.Tensor]:
            def run() -> torch.Tensor:
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    return m(feat)

            return run

        t = best_of({"direct": layer(conv), "rows": layer(rows)}, args.repeats)
        print(
            f"  RGB layer {args.ngf}->3 7x7, {'bf16' if bf16 else 'fp32'}: direct {t['direct']:.3f} s, "
            f"rows {t['rows']:.3f} s: {t['direct'] / t['rows']:.2f}x"
        )


if __name__ == "__main__":
    main()
