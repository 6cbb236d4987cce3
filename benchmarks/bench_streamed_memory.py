"""Peak memory of the exact streamed pass against its estimate (seeded ngf-64 ResNet-9, Winograd).

The engine lets a job stream when ``streamed_peak_bytes`` fits its share of memory; this checks that estimate
against the process's peak RSS (``VmHWM``) while the pass runs alone, freed blocks kept as the engine keeps them.

    python benchmarks/bench_streamed_memory.py --side 4272 --precision fp32   # a 4096 px job's windows
"""

from __future__ import annotations

import argparse

import torch

from napari_virtual_ihc.inference.allocator import keep_freed_memory
from napari_virtual_ihc.inference.streamed_pass import streamed_pass, streamed_peak_bytes
from napari_virtual_ihc.models.registry import build_generator


def peak_rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=2048)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_generator("resnet", ngf=64, n_blocks=9, norm="instance").eval()
    image = torch.rand(1, 3, args.side, args.side) * 2 - 1
    estimate = streamed_peak_bytes(model, (args.side, args.side), args.precision)
    assert estimate is not None
    before = peak_rss()
    with keep_freed_memory():
        streamed_pass(model, image, "minus_one_one", winograd=True, precision=args.precision)
    used = peak_rss() - before
    print(
        f"{args.side} px, {args.precision}: estimate {estimate / 1e9:.2f} GB, peak RSS above the process "
        f"before the pass {used / 1e9:.2f} GB ({used / (args.side**2 * 64):.2f} bytes per pixel and channel; "
        f"measured / estimate {used / estimate:.2f})"
    )


if __name__ == "__main__":
    main()
