"""Benchmark ``inference.allocator.keep_freed_memory``: generator forwards with glibc's default malloc
thresholds vs with freed activations kept for the next batch, in one process, alternating (ABAB).

Prints the median forward time and minor page faults of each, and their ratio, on the main thread (the CLI)
and on a worker thread (the widget). Not a timed test.

Run:  python benchmarks/bench_allocator.py [--ngf 16] [--size 384] [--batch 4] [--repeats 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import threading
import time

import torch

from napari_virtual_ihc.inference.allocator import keep_freed_memory
from napari_virtual_ihc.models import build_generator


def _forward_stats(
    module: torch.nn.Module, x: torch.Tensor, kept: bool, calls: int
) -> list[tuple[float, int]]:
    """``calls`` forwards after one warm-up under the setting: seconds and minor page faults of each."""
    out = []
    with keep_freed_memory() if kept else contextlib.nullcontext(), torch.inference_mode():
        module(x)
        for _ in range(calls):
            faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            module(x)
            out.append(
                (time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0)
            )
    return out


def _compare(label: str, module: torch.nn.Module, x: torch.Tensor, repeats: int) -> None:
    runs: dict[bool, list[tuple[float, int]]] = {False: [], True: []}
    for _ in range(2):  # ABAB
        for kept in (False, True):
            runs[kept] += _forward_stats(module, x, kept, repeats)
    default_s = statistics.median(t for t, _ in runs[False])
    kept_s = statistics.median(t for t, _ in runs[True])
    print(
        f"{label:12s} default {default_s * 1000:7.0f} ms ({statistics.median(f for _, f in runs[False]):8.0f} faults)"
        f"   kept {kept_s * 1000:7.0f} ms ({statistics.median(f for _, f in runs[True]):8.0f} faults)"
        f"   speed-up {default_s / kept_s:.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="measured forwards per block (ABAB)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the widget uses cores - 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    module = build_generator("resnet", ngf=args.ngf, n_blocks=args.blocks, norm="batch").eval()
    x = torch.rand(args.batch, 3, args.size, args.size)
    print(
        f"ResNet ngf={args.ngf} blocks={args.blocks}, input {args.batch} x {args.size}^2, torch threads "
        f"{args.threads}, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    _compare("main thread", module, x, args.repeats)
    worker = threading.Thread(target=_compare, args=("worker", module, x, args.repeats))
    worker.start()
    worker.join()


if __name__ == "__main__":
    main()
