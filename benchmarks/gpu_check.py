"""The GPU half of ``benchmarks/gpu_check.sh`` (needs CUDA): engine MP/s per precision against compute alone,
fp16 quality against fp32. Prints one JSON line per measurement."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.devices import describe_device, resolve_device
from napari_virtual_ihc.inference.runner import BatchRunner
from napari_virtual_ihc.models import ModelSpec, build_generator, save_generator
from napari_virtual_ihc.models.spec import LoadedGenerator
from napari_virtual_ihc.slides import open_slide


def big_slide(work: Path, side: int) -> Path:
    """tests/data's TCGA slide's level 0 tiled up to ``side`` x ``side``, a pyramidal JPEG TIFF (real decode)."""
    path = work / f"tcga-{side}.tif"
    if path.exists():
        return path
    src = open_slide(Path("tests/data/tcga-cr-7395-01a-01-ts1.svs"))
    w, h = src.level_dimensions[0]
    base = np.asarray(src.read_region((0, 0), 0, (min(w, 4096), min(h, 4096))))[..., :3]
    src.close()
    reps = (-(-side // base.shape[0]), -(-side // base.shape[1]), 1)
    img = np.ascontiguousarray(np.tile(base, reps)[:side, :side])
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        level = img
        for k in range(4):
            opts = dict(tile=(512, 512), compression="jpeg", photometric="rgb")
            if k == 0:
                tif.write(
                    level, subifds=3, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER", **opts
                )
            else:
                tif.write(level, subfiletype=1, **opts)
            level = level[::2, ::2]
    return path


def main() -> None:
    work = Path(sys.argv[1])
    side = int(sys.argv[2]) if len(sys.argv) > 2 else 16384
    work.mkdir(parents=True, exist_ok=True)
    device = resolve_device("auto")
    assert device.type == "cuda", "gpu_check needs a CUDA device"
    print(json.dumps({"device": describe_device(str(device)), "torch": torch.__version__}), flush=True)
    torch.manual_seed(0)
    module = build_generator("resnet", ngf=64, n_blocks=9, norm="batch").eval()
    spec = ModelSpec("resnet", {"ngf": 64, "n_blocks": 9, "norm": "batch"}, mpp=0.5, name="resnet9-ngf64")
    ckpt = save_generator(work / "resnet9.safetensors", module, spec)
    model = LoadedGenerator(module=module, spec=spec, source=str(ckpt), sha256="gpu-check-resnet9")
    slide_path = big_slide(work, side)
    stores = {}
    for precision in ("fp32", "fp16", "bf16"):
        settings = EngineSettings(tile=1024, device="cuda", precision=precision, bn_stats="running")
        slide = open_slide(slide_path)
        store = work / f"out-{precision}.ome.zarr"
        rep = stain_slide(slide, model, store, settings)
        slide.close()
        stores[precision] = store
        # compute alone: the same window shape from memory, the same runner, no decode and no writes
        win = 1024 + 2 * int(rep.settings["halo"])
        batch = int(rep.settings["batch"])
        windows = np.random.default_rng(0).integers(0, 255, (batch, win, win, 3), dtype=np.uint8)
        runner = BatchRunner(module, device, precision, batch)
        runner(windows)
        torch.cuda.synchronize()
        n, t = 20, time.perf_counter()
        for _ in range(n):
            runner(windows)
        torch.cuda.synchronize()
        compute_mp_s = n * batch * 1024 * 1024 / 1e6 / (time.perf_counter() - t)
        print(
            json.dumps(
                {
                    "precision": precision,
                    "pipeline_mp_s": round(rep.mp_per_s, 2),
                    "compute_alone_mp_s": round(compute_mp_s, 2),
                    "ratio": round(rep.mp_per_s / compute_mp_s, 3),
                    "seconds": round(rep.seconds, 1),
                    "fp16_fallbacks": rep.settings["fp16_fallbacks"],
                    "pipeline": rep.settings["pipeline"],
                    "batch": batch,
                }
            ),
            flush=True,
        )
    import zarr

    ref = zarr.open_group(str(stores["fp32"]), mode="r")["0"]
    for precision in ("fp16", "bf16"):
        other = zarr.open_group(str(stores[precision]), mode="r")["0"]
        a = np.asarray(ref[:, :4096, :4096]).astype(np.float64)
        b = np.asarray(other[:, :4096, :4096]).astype(np.float64)
        mse = float(((a - b) ** 2).mean())
        psnr = 10 * np.log10(255**2 / mse) if mse > 0 else float("inf")
        err = np.abs(a - b)
        print(
            json.dumps(
                {
                    "quality": precision,
                    "psnr_db_vs_fp32": round(psnr, 2),
                    "p999_error": float(np.percentile(err, 99.9)),
                    "max_error": float(err.max()),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
