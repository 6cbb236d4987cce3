"""``virtual-ihc-train evaluate``: the papers' metrics on full-resolution images, overall and per HER2 class.

Either run a checkpoint on a dataset's H&E images (written to ``OUT/generated/`` at full resolution, never
resized) or compare two folders of already generated and real images. Writes ``metrics.json``,
``metrics.md`` and ``plots/*.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..data import HER2_CLASSES, Pair, find_pairs, paired_folders, read_rgb, to_tensor
from ..reporting import to_uint8
from . import metrics, mist_metrics, tdkstain_errors
from .distribution import fid_from_features, kid_from_features
from .inception import MissingWeightsError, describe_weights, load_inception
from .protocol import ProtocolForward, describe, deviations, resolve_protocol

__all__ = ["MissingWeightsError", "add_arguments", "evaluate_cli", "evaluate_folders"]

ALL_METRICS = ("psnr", "ssim", "fid", "kid", "lpips", "dists", "nuclei", "membrane", "kid_asp", "phv")
DEFAULT_METRICS = "psnr,ssim,fid,kid,nuclei,membrane"
GIVEN_IMAGES = "images given with --generated: how the generator ran is not known here"
FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]  # (N, H, W, 3) uint8 -> (N, D)


@torch.no_grad()
def extract(paths: list[Path], extractor: FeatureExtractor, batch: int = 16) -> np.ndarray:
    feats = []
    for i in range(0, len(paths), batch):
        imgs = torch.from_numpy(np.stack([read_rgb(p) for p in paths[i : i + batch]]))
        feats.append(extractor(imgs).double().cpu().numpy())
    return np.concatenate(feats)


# ---------------------------------------------------------------- the evaluation
@dataclass
class EvalItem:
    name: str
    label: str
    real: Path
    fake: Path


@dataclass
class Backends:
    """Loaded networks for the metrics that need them (tests inject small ones)."""

    features: FeatureExtractor | None = None
    lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    dists: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    nuclei_counter: tdkstain_errors.NucleiCounter | None = None
    nuclei_method: str = ""
    asp_features: FeatureExtractor | None = None  # KID, ASP convention (mist_metrics)
    phv: torch.nn.Module | None = None  # ResNet-50 features for PHV (mist_metrics)
    # per metric: the network, its input convention and the weights files with their SHA-256 (the report's)
    networks: dict[str, str] = field(default_factory=dict)


def load_backends(wanted: set[str], args: Any) -> Backends:
    """Load every network the metrics need *before* any work, so a missing file fails fast."""
    b = Backends()
    if wanted & {"fid", "kid"}:
        inception = load_inception(getattr(args, "inception", None))
        b.features = inception
        b.networks["fid/kid"] = (
            f"Inception-v3 2048-d pool, {'pytorch-fid FID' if inception.fid_variant else 'torchvision'} "
            f"variant, RGB resized bilinear to 299 px, [-1, 1]; FID pytorch-fid's formula; KID unbiased cubic-kernel "
            f"MMD^2, mean of 100 seeded subsets of min(n, 1000); weights {describe_weights(inception.weights_files)}"
        )
    if "lpips" in wanted:
        from .perceptual import load_lpips

        net = getattr(args, "lpips_net", "vgg")
        backbone = getattr(args, "vgg16" if net == "vgg" else "alexnet", None)
        lp = load_lpips(backbone, getattr(args, "lpips_lin", None), net=net)
        b.lpips = lp
        b.networks["lpips"] = (
            f"LPIPS v0.1, {'VGG16' if net == 'vgg' else 'AlexNet'} backbone, RGB in [-1, 1], full resolution; "
            f"weights {describe_weights(lp.weights_files)}"
        )
    if "dists" in wanted:
        from .perceptual import load_dists

        dists = load_dists(getattr(args, "vgg16", None), getattr(args, "dists_weights", None))
        b.dists = dists
        b.networks["dists"] = (
            f"DISTS, L2-pooled VGG16, RGB in [0, 1], full resolution; weights {describe_weights(dists.weights_files)}"
        )
    if "nuclei" in wanted:
        b.nuclei_counter, b.nuclei_method = tdkstain_errors.default_nuclei_counter(
            getattr(args, "nuclei_method", "auto"), getattr(args, "cellpose_model", None) or "nuclei"
        )
    if "kid_asp" in wanted:
        asp = mist_metrics.load_asp_inception(getattr(args, "inception_torchvision", None))
        b.asp_features = asp
        b.networks["kid_asp"] = (
            "torchvision Inception-v3 2048-d pool (ASP's kid_score.py), RGB resized bilinear to 299 px, [-1, 1]; "
            f"weights {describe_weights(asp.weights_files)}"
        )
    if "phv" in wanted:
        phv = mist_metrics.load_resnet50(getattr(args, "resnet50", None))
        b.phv = phv
        b.networks["phv"] = (
            f"torchvision ResNet-50 layers 1-4 (ASP's perceptual.py); weights {describe_weights(phv.weights_files)}"
        )
    return b


def evaluate_items(
    items: list[EvalItem],
    wanted: set[str],
    backends: Backends,
    out_dir: Path,
    progress: bool = True,
    protocol: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per-image metrics, then overall and per-class summaries; writes JSON, Markdown and plots. ``protocol``
    is how the generator ran (from :func:`generate`; None for images made elsewhere)."""
    unknown = wanted - set(ALL_METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {', '.join(ALL_METRICS)}")
    if not items:
        raise ValueError("nothing to evaluate: no image pairs")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for it in tqdm(items, desc="evaluate", unit="img", disable=not progress):
        real, fake = read_rgb(it.real), read_rgb(it.fake)
        if real.shape != fake.shape:
            raise ValueError(f"{it.name}: generated {fake.shape} and real {real.shape} differ in size")
        row: dict[str, Any] = {"name": it.name, "label": it.label}
        if "psnr" in wanted:
            row["psnr"] = metrics.psnr(real, fake)
        if "ssim" in wanted:
            row["ssim"] = metrics.ssim(real, fake)
        pair_t = (torch.from_numpy(real)[None], torch.from_numpy(fake)[None])
        with torch.no_grad():
            if backends.lpips is not None:
                row["lpips"] = float(backends.lpips(*pair_t)[0])
            if backends.dists is not None:
                row["dists"] = float(backends.dists(*pair_t)[0])
        if "nuclei" in wanted and backends.nuclei_counter is not None:
            row["nuclei_count_error"] = tdkstain_errors.nuclei_count_error(
                real, fake, backends.nuclei_counter
            )
        if "membrane" in wanted:
            row["membrane_intensity_error"] = tdkstain_errors.membrane_intensity_error(real, fake)
        if backends.phv is not None:
            row.update(mist_metrics.phv_columns(mist_metrics.phv_layers(backends.phv, *pair_t)))
        rows.append(row)

    groups = {"overall": rows}
    for c in HER2_CLASSES:
        members = [r for r in rows if r["label"] == c]
        if members:
            groups[c] = members
    summary = {g: summarise(members) for g, members in groups.items()}

    if backends.features is not None and wanted & {"fid", "kid"}:
        fr = extract([it.real for it in items], backends.features)
        ff = extract([it.fake for it in items], backends.features)
        for g in groups:
            idx = [i for i, it in enumerate(items) if g == "overall" or it.label == g]
            if "fid" in wanted:
                summary[g]["fid"] = fid_from_features(fr[idx], ff[idx]) if len(idx) > 1 else float("nan")
            if "kid" in wanted:
                summary[g]["kid"], summary[g]["kid_std"] = kid_from_features(fr[idx], ff[idx])
    if backends.asp_features is not None:
        fr = extract([it.real for it in items], backends.asp_features)
        ff = extract([it.fake for it in items], backends.asp_features)
        for g in groups:
            idx = [i for i, it in enumerate(items) if g == "overall" or it.label == g]
            summary[g]["kid_asp_x1000"], summary[g]["kid_asp_x1000_std"] = mist_metrics.kid_asp_from_features(
                fr[idx], ff[idx]
            )

    result = {
        "convention": metrics.CONVENTION,
        "protocol": protocol or {"description": GIVEN_IMAGES},
        "deviations": list(protocol.get("deviations", [])) if protocol else [],
        "networks": dict(backends.networks),
        "n_images": len(rows),
        "metrics": sorted(wanted),
        "nuclei_counter": backends.nuclei_method or None,
        "summary": summary,
        "per_image": rows,
    }
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=_json_default))
    (out_dir / "metrics.md").write_text(markdown_table(result))
    write_plots(result, out_dir / "plots")
    return result


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows)}
    phv_keys = ("phv_layer1", "phv_layer2", "phv_layer3", "phv_layer4", "phv_avg")
    for key in ("psnr", "ssim", "lpips", "dists", "membrane_intensity_error", *phv_keys):
        vals = [r[key] for r in rows if key in r]
        if vals:
            out[key], out[key + "_std"] = float(np.mean(vals)), float(np.std(vals))
    errs = [r["nuclei_count_error"] for r in rows if "nuclei_count_error" in r]
    if errs:
        out["nuclei_count_error_mean"] = float(np.mean(errs))
        out["nuclei_count_error_mae"] = float(np.mean(np.abs(errs)))
    return out


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


COLUMNS = [
    ("n", "n", "{:d}"),
    ("psnr", "PSNR (dB)", "{:.3f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("fid", "FID", "{:.2f}"),
    ("kid", "KID", "{:.4f}"),
    ("lpips", "LPIPS", "{:.4f}"),
    ("dists", "DISTS", "{:.4f}"),
    ("nuclei_count_error_mae", "nuclei count |err|", "{:.2f}"),
    ("membrane_intensity_error", "membrane intensity err", "{:.4f}"),
    ("kid_asp_x1000", "KID x1000 (ASP)", "{:.1f}"),
    ("phv_avg", "PHV avg (ASP)", "{:.4f}"),
]


def markdown_table(result: dict[str, Any]) -> str:
    summary = result["summary"]
    cols = [c for c in COLUMNS if any(c[0] in s for s in summary.values())]
    lines = ["| HER2 class | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for group, s in summary.items():
        cells = []
        for key, _, fmt in cols:
            v = s.get(key)
            cells.append("" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v))
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    note = f"\n{result['n_images']} image pairs. Convention: {result['convention']}.\n"
    note += f"Generator ran: {result['protocol']['description']}.\n"
    for d in result.get("deviations", []):
        note += f"Deviation from the reference script: {d}.\n"
    for metric, network in result.get("networks", {}).items():
        note += f"Network for {metric}: {network}.\n"
    if result.get("nuclei_counter"):
        note += f"Nuclei counted with: {result['nuclei_counter']}.\n"
    return "\n".join(lines) + "\n" + note


def write_plots(result: dict[str, Any], plot_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    rows = result["per_image"]
    labels = [c for c in HER2_CLASSES if any(r["label"] == c for r in rows)] or [""]
    for key, title in (
        ("psnr", "PSNR (dB)"),
        ("ssim", "SSIM"),
        ("membrane_intensity_error", "membrane intensity error"),
        ("nuclei_count_error", "nuclei count error (generated - real)"),
    ):
        if not any(key in r for r in rows):
            continue
        data = [[r[key] for r in rows if key in r and (r["label"] == c or c == "")] for c in labels]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        names = [c or "all" for c in labels]
        try:
            ax.boxplot(data, tick_labels=names)
        except TypeError:  # matplotlib < 3.9
            ax.boxplot(data, labels=names)  # type: ignore[call-arg]
        ax.set_xlabel("HER2 class")
        ax.set_ylabel(title)
        fig.tight_layout()
        fig.savefig(plot_dir / f"{key}.png", dpi=100)
        plt.close(fig)


# ---------------------------------------------------------------- generating, folders, CLI
@torch.no_grad()
def generate(
    checkpoint: Path,
    pairs: list[Pair],
    out_dir: Path,
    device: str = "cpu",
    progress: bool = True,
    bn_stats: str | None = None,
    dropout: str | None = None,
    seed: int = 0,
) -> tuple[list[EvalItem], dict[str, Any]]:
    """Run the generator on each full-resolution H&E image under its protocol (the header's test-script mode
    unless ``bn_stats``/``dropout`` override it) and save the output next to the real one; returns the items
    and the protocol as recorded in the report."""
    from napari_virtual_ihc.models import load_generator

    loaded = load_generator(checkpoint, device=device)
    mode = resolve_protocol(loaded.module, loaded.spec, bn_stats, dropout, seed)
    forward = ProtocolForward(loaded.module, mode)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for p in tqdm(pairs, desc="generate", unit="img", disable=not progress):
        assert p.target is not None
        fake = to_uint8(forward(to_tensor(read_rgb(p.source))[None].to(device))[0])
        dest = out_dir / f"{p.name}.png"
        Image.fromarray(fake).save(dest)
        items.append(EvalItem(p.name, p.label or "", p.target, dest))
    protocol = {
        **mode.to_dict(),
        "description": describe(mode),
        "warnings": list(mode.warnings),
        "deviations": deviations(loaded.module, mode),
    }
    return items, protocol


def evaluate_folders(
    generated: Path, real: Path, out_dir: Path, wanted: set[str], backends: Backends, progress: bool = True
) -> dict[str, Any]:
    """Generated and real images matched by file name (HER2 class from BCI-style names)."""
    pairs = paired_folders(generated, real, check_sizes=True)
    items = [EvalItem(p.name, p.label or "", p.target, p.source) for p in pairs if p.target is not None]
    return evaluate_items(items, wanted, backends, out_dir, progress)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", required=True, help="folder for metrics.json, metrics.md, plots/ (and generated/)"
    )
    p.add_argument("--checkpoint", help="generator .safetensors (or reference .pth) to run on the H&E images")
    p.add_argument("--bci", metavar="ROOT")
    p.add_argument("--mist", metavar="ROOT")
    p.add_argument("--paired", nargs=2, metavar=("HE_DIR", "IHC_DIR"))
    p.add_argument("--split", default="test", help="dataset split (BCI: test, MIST: val)")
    p.add_argument("--generated", help="folder of already generated images (instead of --checkpoint)")
    p.add_argument("--real", help="folder of the real IHC images matching --generated by name")
    p.add_argument("--metrics", default=DEFAULT_METRICS, help=f"comma list from {','.join(ALL_METRICS)}")
    p.add_argument(
        "--inception", help="pt_inception-2015-12-05-6726825d.pth or inception_v3_google-0cc3c7bd.pth"
    )
    p.add_argument("--vgg16", help="torchvision vgg16-397923af.pth (LPIPS, DISTS)")
    p.add_argument("--inception-torchvision", help="inception_v3_google-0cc3c7bd.pth (kid_asp)")
    p.add_argument("--resnet50", help="torchvision resnet50-0676ba61.pth (phv)")
    p.add_argument(
        "--lpips-net",
        choices=("vgg", "alex"),
        default="vgg",
        help="LPIPS backbone: vgg (this project's default) or alex (the lpips package's default)",
    )
    p.add_argument("--alexnet", help="torchvision alexnet-owt-7be5be79.pth (LPIPS with --lpips-net alex)")
    p.add_argument("--lpips-lin", help="lpips v0.1 vgg.pth (or alex.pth with --lpips-net alex)")
    p.add_argument("--dists-weights", help="DISTS weights.pt")
    p.add_argument(
        "--nuclei-method",
        choices=("auto", "cellpose", "classical"),
        default="auto",
        help="nuclei counter: Cellpose (auto falls back to the classical method when weights are missing)",
    )
    p.add_argument(
        "--cellpose-model", help="Cellpose model file for the nuclei count (default: built-in nuclei)"
    )
    p.add_argument(
        "--bn-stats",
        choices=("running", "slide"),
        help="override the checkpoint's batch-norm mode: running (eval mode) or slide (each image's own "
        "statistics, as test.py without --eval; the default for batch-norm presets and imported .pth files)",
    )
    p.add_argument(
        "--dropout", help="override the checkpoint's dropout mode: off | sample (as test.py) | mean:N"
    )
    p.add_argument(
        "--dropout-seed", type=int, default=0, help="seed of the dropout masks (repeatable figures)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


def evaluate_cli(args: argparse.Namespace) -> int:
    wanted = {m.strip() for m in args.metrics.split(",") if m.strip()}
    unknown = wanted - set(ALL_METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {', '.join(ALL_METRICS)}")
    out = Path(args.out)
    backends = load_backends(wanted, args)  # fails here, before any work, when a weights file is missing
    progress = not args.no_progress
    if args.generated or args.real:
        if not (args.generated and args.real):
            raise ValueError("--generated and --real go together")
        result = evaluate_folders(Path(args.generated), Path(args.real), out, wanted, backends, progress)
    else:
        if not args.checkpoint:
            raise ValueError("give --checkpoint with --bci/--mist/--paired, or --generated with --real")
        if args.bci:
            pairs = find_pairs("bci", args.bci, args.split)
        elif args.mist:
            pairs = find_pairs("mist", args.mist, args.split)
        elif args.paired:
            pairs = find_pairs("paired", None, "", args.paired[0], args.paired[1])
        else:
            raise ValueError(
                "--checkpoint needs a dataset: --bci ROOT, --mist ROOT or --paired HE_DIR IHC_DIR"
            )
        items, protocol = generate(
            Path(args.checkpoint),
            pairs,
            out / "generated",
            args.device,
            progress,
            args.bn_stats,
            args.dropout,
            args.dropout_seed,
        )
        for warning in protocol["warnings"]:
            print(f"virtual-ihc-train: note: {warning}", file=sys.stderr)
        result = evaluate_items(items, wanted, backends, out, progress, protocol)
    print((out / "metrics.md").read_text())
    print(f"wrote {out / 'metrics.json'}")
    return 0 if result["n_images"] else 1
