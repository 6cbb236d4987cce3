"""``virtual-ihc-train reproduce TABLE``: for every row of a paper's table, fit the row's preset, pick the
checkpoint by the paper's rule, export it, evaluate it under the paper's protocol and metrics, then write the
paper's numbers beside ours (``TABLE.md``, ``TABLE.csv``, ``TABLE.png``).

Everything that can refuse the run (layout, weights files, disk, every row's config) is checked before the
first row trains. A dry run (or no ``--data``) prints the plan and exits 0. A row whose evaluation is already
in ``RUN/ROW/eval`` is not run again; a row with checkpoints but no ``trained.json`` is resumed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..config import Config, ConfigError, parse_set, read_config_file, set_value
from ..presets import preset_config
from . import preflight
from .tables import TABLES, PaperTable, Row

MIL_DEFAULTS: dict[str, Any] = {"tile": 224, "width": 64, "epochs": 100, "lr": 1e-4, "k": 1, "batch_size": 16}


@dataclass
class Options:
    target: str
    data: Path | None
    run_dir: Path
    dry_run: bool = False
    iterations: int | None = None
    epochs: int | None = None
    sets: list[str] = field(default_factory=list)
    rows: list[str] | None = None
    metrics: list[str] | None = None  # a subset of the table's metrics (the others' columns stay empty)
    weights: dict[str, str | None] = field(default_factory=dict)
    device: str = "auto"  # training (train.device); evaluation runs on the device it resolves to
    nuclei_method: str = "auto"
    dropout_seed: int = 0
    mpp: float = 0.5
    progress: bool = True


@dataclass
class RowPlan:
    row: Row
    cfg: Config | None  # None: not trainable here
    skip_reason: str = ""


# ------------------------------------------------------------------ overrides
def split_sets(sets: list[str], row_keys: set[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """``--set KEY=V`` (every row) and ``--set ROW:KEY=V`` (one row) -> ({row or "": {key: value}}, mil)."""
    per_row: dict[str, dict[str, Any]] = {}
    mil: dict[str, Any] = {}
    for item in sets:
        row = ""
        head = item.split("=", 1)[0]
        if ":" in head:
            row, item = item.split(":", 1)
            if row not in row_keys:
                raise ConfigError(f"--set {row}:...: no row {row!r}; rows: {', '.join(sorted(row_keys))}")
        for key, value in parse_set([item]).items():
            if key.startswith("mil."):
                name = key.removeprefix("mil.")
                if name not in MIL_DEFAULTS:
                    raise ConfigError(
                        f"unknown key {key!r}; MIL keys: {', '.join('mil.' + k for k in MIL_DEFAULTS)}"
                    )
                mil[name] = type(MIL_DEFAULTS[name])(value)
            else:
                per_row.setdefault(row, {})[key] = value
    return per_row, mil


def apply(cfg: Config, key: str, value: Any) -> None:
    """``set_value``, plus ``model.arch_kwargs.NAME`` for one generator argument (only where the row's
    generator takes it, so one ``--set`` can shrink rows with different generators)."""
    if key.startswith("model.arch_kwargs."):
        name = key.removeprefix("model.arch_kwargs.")
        if name in cfg.model.arch_kwargs:
            # a new dict: the row's may be a preset's or a table's shared one (mutating it leaked into later runs)
            cfg.model.arch_kwargs = {
                **cfg.model.arch_kwargs,
                name: yaml.safe_load(value) if isinstance(value, str) else value,
            }
        return
    set_value(cfg, key, value)


def row_config(table: PaperTable, row: Row, opts: Options, sets: dict[str, dict[str, Any]]) -> Config:
    assert row.preset is not None
    cfg = preset_config(row.preset, row.multiscale)
    root = str(opts.data or "DATA")
    for key, value in table.common.items():
        set_value(cfg, key, value)
    for key, value in row.overrides.items():
        if key != "data.kind":
            set_value(cfg, key, value)
    unpaired = row.overrides.get("data.kind") == "unpaired" or table.layout == "ki67"
    if unpaired:
        src, tgt = {
            "bci": ("HE/train", "IHC/train"),
            "mist": ("trainA", "trainB"),
            "ki67": ("HE/train", "Ki67/train"),
        }[table.layout]
        set_value(cfg, "data.kind", "unpaired")
        set_value(cfg, "data.source", str(Path(root) / src))
        set_value(cfg, "data.target", str(Path(root) / tgt))
    else:
        set_value(cfg, "data.kind", table.layout)
        set_value(cfg, "data.root", root)
        set_value(cfg, "data.split", "train")
    set_value(cfg, "data.val_split", "")  # the paper's evaluation runs after training, below
    row_dir = opts.run_dir / row.key
    if cfg.method == "tdkstain":  # the ablation rows share the knowledge maps (same images, same parameters)
        set_value(cfg, "tdkstain.cache_dir", str(opts.run_dir / "knowledge"))
    if cfg.cyclegan.class_channel:
        set_value(cfg, "cyclegan.classifier_A", str(opts.run_dir / "mil" / "HE.safetensors"))
        set_value(cfg, "cyclegan.classifier_B", str(opts.run_dir / "mil" / "Ki67.safetensors"))
    for key, value in {**sets.get("", {}), **sets.get(row.key, {})}.items():
        apply(cfg, key, value)
    if opts.epochs is not None:
        total = cfg.optim.n_epochs + cfg.optim.n_epochs_decay
        constant = round(opts.epochs * cfg.optim.n_epochs / total) if total else opts.epochs
        set_value(cfg, "optim.n_epochs", constant)
        set_value(cfg, "optim.n_epochs_decay", opts.epochs - constant)
    if opts.iterations is not None:
        set_value(cfg, "train.max_steps", opts.iterations)
    if table.selection == "best_ki67_ratio":  # one checkpoint per epoch, all kept
        set_value(cfg, "train.checkpoint_every", 0)
        set_value(cfg, "train.checkpoint_each_epoch", True)
        set_value(cfg, "train.keep_checkpoints", cfg.optim.n_epochs + cfg.optim.n_epochs_decay + 2)
    set_value(cfg, "train.device", opts.device)
    del row_dir
    return cfg


def make_plans(table: PaperTable, opts: Options) -> tuple[list[RowPlan], dict[str, Any]]:
    keys = {r.key for r in table.rows}
    if opts.rows:
        unknown = [r for r in opts.rows if r not in keys]
        if unknown:
            raise ConfigError(
                f"--rows {','.join(unknown)}: not rows of {table.key}; rows: {', '.join(r.key for r in table.rows)}"
            )
    sets, mil = split_sets(opts.sets, keys)
    plans = []
    for row in table.rows:
        if opts.rows and row.key not in opts.rows:
            plans.append(RowPlan(row, None, "not in --rows"))
        elif row.preset is None:
            plans.append(RowPlan(row, None, row.note or "no preset here"))
        else:
            plans.append(RowPlan(row, row_config(table, row, opts, sets)))
    return plans, {**MIL_DEFAULTS, **mil}


# ------------------------------------------------------------------ the plan, printed
def describe_plan(table: PaperTable, plans: list[RowPlan], mil: dict[str, Any], opts: Options) -> list[str]:
    out = [
        f"reproduce {table.key}: {table.title}",
        f"  paper: {table.citation}",
        f"  data ({table.layout} layout): {preflight.LAYOUTS[table.layout]}",
        f"  data folder: {opts.data if opts.data else '(none given: dry run)'}; run folder: {opts.run_dir}",
        f"  checkpoint selection: {table.selection_text}",
        f"  metrics: {', '.join(table.metrics)} on the {table.eval_split} split; groups: {', '.join(table.groups)}",
        f"  protocol: PSNR/SSIM: {table.psnr_convention}; crop: {table.crop}; features: {table.features}",
    ]
    for metric in table.metrics:
        for arg, names, what, flag, _ in preflight.weights_needed(metric):
            try:
                found = f"found: {preflight.find_weights(opts.weights.get(arg), names, what, flag, '')}"
            except preflight.MissingWeightsError:
                found = "NOT FOUND: give the path or put the file in ~/.cache/virtual_ihc/weights"
            out.append(f"  weights for {metric}: {' or '.join(names)} ({flag}); {found}")
    if table.layout == "ki67" and any(p.cfg is not None and p.cfg.cyclegan.class_channel for p in plans):
        out.append(
            "  step 0: MIL tumour classifiers: virtual-ihc-train mil ROOT/mil/HE ROOT/mil/HE.csv and ROOT/mil/Ki67 "
            f"ROOT/mil/Ki67.csv (ResNet-34 width {mil['width']}, tile {mil['tile']}, {mil['epochs']} rounds, "
            f"k {mil['k']}, lr {mil['lr']}) -> RUN/mil/HE.safetensors, RUN/mil/Ki67.safetensors"
        )
    for i, p in enumerate(plans, 1):
        row = p.row
        if p.cfg is None:
            out.append(f"  row {i} {row.key} ({row.label}): not run ({p.skip_reason}); paper's numbers only")
            continue
        c = p.cfg
        epochs = c.optim.n_epochs + c.optim.n_epochs_decay
        stop = f", stopping at {c.train.max_steps} iterations" if c.train.max_steps else ""
        out += [
            f"  row {i} {row.key} ({row.label}):",
            f"    fit: preset {row.preset}{' --multiscale-discriminator' if row.multiscale else ''}, "
            f"{c.model.arch} {json.dumps(c.model.arch_kwargs)}, batch {c.train.batch_size}, "
            f"{c.optim.n_epochs} + {c.optim.n_epochs_decay} epochs ({epochs}){stop}, data {c.data.kind} "
            f"({c.data.preprocess}, crop {c.data.crop_size}) -> {opts.run_dir / row.key}",
            f"    select: {table.selection_text}",
            f"    export: {opts.run_dir / row.key / 'model.safetensors'}",
            f"    evaluate: {', '.join(table.metrics)}; generator run as: {row.bn_dropout}",
        ]
        if row.note:
            out.append(f"    differs from the paper: {row.note}")
        if (
            c.loss.lambda_variance > 0
            and c.train.batch_size * c.train.grad_accum < 2
            and c.method == "pix2pix"
        ):
            out.append(
                "    warning: a batch of 1 makes the variance penalty zero (the row trains as its baseline)"
            )
    for note in table.notes:
        out.append(f"  note: {note}")
    out.append(f"  writes: {opts.run_dir / (table.key + '.md')}, .csv and .png (paper beside ours)")
    return out


# ------------------------------------------------------------------ checks before training
def preflight_all(table: PaperTable, plans: list[RowPlan], opts: Options) -> dict[str, preflight.WeightsFile]:
    from ..loop import check_config

    assert opts.data is not None
    for p in plans:  # every row's values, as fit would check them, before the first row trains
        if p.cfg is not None:
            check_config(p.cfg)
    preflight.check_layout(table.layout, opts.data)
    if any(p.cfg is not None and p.cfg.cyclegan.class_channel for p in plans):
        preflight.check_mil_labels(opts.data)
    weights = preflight.resolve_weights(table.metrics, opts.weights)
    if table.layout == "bci":
        eval_dirs, train_t = [opts.data / "IHC" / "test"], [opts.data / "IHC" / "train"]
    elif table.layout == "mist":
        eval_dirs, train_t = [opts.data / "valB"], [opts.data / "trainB"]
    else:
        eval_dirs = [opts.data / "Ki67" / s for s in preflight.KI67_SPLITS]
        train_t = []
    needed = 0
    for p in plans:
        if p.cfg is not None and not (opts.run_dir / p.row.key / "eval" / "metrics.json").is_file():
            keep = p.cfg.train.keep_checkpoints
            needed += preflight.estimate_row_bytes(p.cfg, keep, eval_dirs, train_t)
    preflight.check_disk(opts.run_dir, needed)
    return weights


# ------------------------------------------------------------------ one row
def eval_device(opts: Options) -> str:
    """The device ``--device`` names, as the engine resolves it (``auto``: CUDA when there is one)."""
    from napari_virtual_ihc.inference.devices import resolve_device

    return str(resolve_device(opts.device, use_mps=False))


def train_row(cfg: Config, row_dir: Path) -> dict[str, Any]:
    from ..loop import fit

    done = row_dir / "trained.json"
    if done.is_file():
        return json.loads(done.read_text())
    if (row_dir / "checkpoints" / "latest.txt").is_file():
        print(f"{row_dir.name}: resuming the interrupted run in {row_dir} (its config.yaml)")
        summary = fit(Config.from_dict(read_config_file(row_dir / "config.yaml")), row_dir, resume=True)
    else:
        summary = fit(cfg, row_dir)
    done.write_text(json.dumps(summary))
    return summary


def checkpoints(row_dir: Path) -> list[Path]:
    return sorted(p for p in (row_dir / "checkpoints").glob("step_*") if (p / "state.pt").is_file())


def cached_features(
    extractor: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same features, remembered by the images' bytes: the real images are measured once per table."""
    memo: dict[str, torch.Tensor] = {}

    def features(images: torch.Tensor) -> torch.Tensor:
        key = hashlib.sha256(images.numpy().tobytes()).hexdigest()
        if key not in memo:
            memo[key] = extractor(images)
        return memo[key]

    return features


def load_metric_backends(table: PaperTable, weights: dict[str, preflight.WeightsFile], opts: Options) -> Any:
    from ..evaluation.evaluate import load_backends

    args = argparse.Namespace(
        **{k: (weights[k].path if k in weights else None) for k in preflight.WEIGHTS_FLAGS},
        lpips_net="alex",
        nuclei_method=opts.nuclei_method,
        cellpose_model="nuclei",
    )
    wanted = set(table.metrics) - {"ki67_ratio"}
    backends = load_backends(wanted, args)
    if backends.features is not None:
        backends.features = cached_features(backends.features)
    if backends.asp_features is not None:
        backends.asp_features = cached_features(backends.asp_features)
    return backends


def evaluate_row(
    table: PaperTable, model: Path, row_dir: Path, backends: Any, opts: Options
) -> dict[str, Any]:
    from ..data import find_pairs
    from ..evaluation.evaluate import evaluate_items, generate

    assert opts.data is not None
    pairs = find_pairs(table.layout, opts.data, table.eval_split)
    items, protocol = generate(
        model, pairs, row_dir / "eval" / "generated", eval_device(opts), False, seed=opts.dropout_seed
    )
    wanted = set(table.metrics)
    return evaluate_items(items, wanted, backends, row_dir / "eval", False, protocol)


# ------------------------------------------------------------------ the Ki-67 table
class Ki67Counter:
    """Pooled Ki-67 ratio of a set of images: positive nuclei / all nuclei, by the core's Ki-67 index
    (``stain.markers.ki67_estimate`` on the core's analysis of each image)."""

    def __init__(self, nuclei_method: str, mpp: float) -> None:
        self.nuclei_method, self.mpp = nuclei_method, mpp
        self.methods_used: set[str] = set()
        self.memo: dict[Path, tuple[int, int]] = {}

    def counts(self, path: Path) -> tuple[int, int]:
        from napari_virtual_ihc.slides import ArraySlide
        from napari_virtual_ihc.stain import AnalysisSettings, analyze_slide
        from napari_virtual_ihc.stain.markers import ki67_estimate

        from ..data import read_rgb

        if path not in self.memo:
            settings = AnalysisSettings(marker="ki67", nuclei_method=self.nuclei_method, mpp=self.mpp)
            res = analyze_slide(ArraySlide(read_rgb(path), mpp=self.mpp), settings)
            self.methods_used.add(res.nuclei_method)
            est = ki67_estimate(res.cells, res.bins, res.mpp)
            self.memo[path] = (int(est["n_positive"]), int(est["n_cells"]))
        return self.memo[path]

    def ratio(self, paths: list[Path]) -> tuple[float, int]:
        pos = cells = 0
        for p in paths:
            k, n = self.counts(p)
            pos, cells = pos + k, cells + n
        return (pos / cells if cells else math.nan), cells


@torch.no_grad()
def synthesize(
    model: Path, he_files: list[Path], out_dir: Path, opts: Options
) -> tuple[list[Path], dict[str, Any]]:
    """G(H&E) for each file under its protocol; a class-channel generator gets the class its MIL classifier
    (saved beside the model by ``export``) gives the image."""
    from PIL import Image

    from napari_virtual_ihc.models import load_generator
    from napari_virtual_ihc.models.classifier import classify, load_classifier

    from ..data import read_rgb, to_tensor
    from ..evaluation.protocol import ProtocolForward, describe, resolve_protocol
    from ..methods.cyclegan import class_plane, with_class
    from ..reporting import to_uint8

    device = eval_device(opts)
    loaded = load_generator(model, device=device)
    mode = resolve_protocol(loaded.module, loaded.spec, None, None, opts.dropout_seed)
    forward = ProtocolForward(loaded.module, mode)
    classifier = None
    if loaded.spec.class_channel is not None:
        classifier = load_classifier(model.with_name(loaded.spec.class_channel["classifier"]), device)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for f in he_files:
        x = to_tensor(read_rgb(f))[None].to(device)
        if classifier is not None:
            x = with_class(x, class_plane(classify(classifier, x), x.shape, x.device))
        dest = out_dir / f"{f.stem}.png"
        Image.fromarray(to_uint8(forward(x)[0])).save(dest)
        written.append(dest)
    return written, {**mode.to_dict(), "description": describe(mode)}


def ki67_row(
    row_dir: Path, row: Row, counter: Ki67Counter, opts: Options, export: Callable[[str | None, Path], Path]
) -> tuple[dict[str, Any], str]:
    """Select the checkpoint by the validation ratio error, then the train and evaluation ratios (Table 3)."""
    from ..data import list_images

    assert opts.data is not None
    files = {s: list_images(opts.data / "HE" / s) for s in preflight.KI67_SPLITS}
    real = {s: counter.ratio(list_images(opts.data / "Ki67" / s))[0] for s in preflight.KI67_SPLITS}
    errors: list[tuple[float, str]] = []
    for ck in checkpoints(row_dir):
        model = export(ck.name, row_dir / "selection" / f"{ck.name}.safetensors")
        synth, _ = synthesize(model, files["val"], row_dir / "selection" / ck.name, opts)
        errors.append((abs(counter.ratio(synth)[0] - real["val"]), ck.name))
    finite = [e for e in errors if not math.isnan(e[0])]
    best = min(finite)[1] if finite else checkpoints(row_dir)[-1].name
    model = export(best, row_dir / "model.safetensors")
    summary: dict[str, Any] = {"n": len(files["test"])}
    protocol: dict[str, Any] = {}
    for split, name in (("train", "train"), ("test", "eval")):
        synth, protocol = synthesize(model, files[split], row_dir / "eval" / f"generated_{split}", opts)
        summary[f"ratio_{name}_real"] = real[split]
        summary[f"ratio_{name}_synthetic"], _ = counter.ratio(synth)
    result = {
        "summary": {"overall": summary},
        "selection": {"errors": [{"checkpoint": c, "val_ratio_error": e} for e, c in errors], "chosen": best},
        "protocol": protocol,
        "nuclei_counter": ", ".join(sorted(counter.methods_used)),
    }
    (row_dir / "eval").mkdir(parents=True, exist_ok=True)
    (row_dir / "eval" / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    return result, best


def train_mil_classifiers(opts: Options, mil: dict[str, Any]) -> None:
    from ..mil import train_mil

    assert opts.data is not None
    for side, (folder, csv) in preflight.check_mil_labels(opts.data).items():
        out = opts.run_dir / "mil" / f"{side}.safetensors"
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            train_mil(
                folder,
                csv,
                out,
                tile=mil["tile"],
                epochs=mil["epochs"],
                lr=mil["lr"],
                width=mil["width"],
                k=mil["k"],
                batch_size=mil["batch_size"],
            )


# ------------------------------------------------------------------ the whole table
def reproduce(opts: Options) -> int:
    from ..export import export_run
    from .report import write_report

    table = TABLES[opts.target]
    if opts.metrics:
        unknown = [m for m in opts.metrics if m not in table.metrics]
        if unknown:
            raise ConfigError(
                f"--metrics {','.join(unknown)}: {table.key} measures {', '.join(table.metrics)}"
            )
        table = dataclasses.replace(table, metrics=tuple(m for m in table.metrics if m in opts.metrics))
    plans, mil = make_plans(table, opts)
    dry = opts.dry_run or opts.data is None
    print("\n".join(describe_plan(table, plans, mil, opts)))
    if dry:
        print("dry run: nothing trained or written" + ("" if opts.data else " (no --data given)"))
        return 0
    from napari_virtual_ihc.inference.devices import DeviceError

    try:
        eval_device(opts)
    except DeviceError as exc:
        raise ConfigError(f"--device {opts.device}: {exc}") from None
    weights = preflight_all(table, plans, opts)  # layout, weights files, disk: before any training
    for w in weights.values():
        print(f"weights: {w.what}: {w.path} (sha256 {w.sha256[:16]}...)")
    backends = None if table.layout == "ki67" else load_metric_backends(table, weights, opts)
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    if any(p.cfg is not None and p.cfg.cyclegan.class_channel for p in plans):
        train_mil_classifiers(opts, mil)
    counter = Ki67Counter(opts.nuclei_method, opts.mpp) if table.layout == "ki67" else None
    results: dict[str, dict[str, Any]] = {}
    for p in plans:
        if p.cfg is None:
            continue
        row_dir = opts.run_dir / p.row.key
        done = row_dir / "eval" / "metrics.json"
        if done.is_file() and (row_dir / "selected.json").is_file():
            print(f"row {p.row.key}: already evaluated in {done}")
            results[p.row.key] = {
                **json.loads(done.read_text()),
                **json.loads((row_dir / "selected.json").read_text()),
            }
            continue
        print(f"row {p.row.key}: fit preset {p.row.preset} in {row_dir}")
        summary = train_row(p.cfg, row_dir)

        def export(checkpoint: str | None, out: Path, _row: Row = p.row, _dir: Path = row_dir) -> Path:
            return export_run(_dir, out, checkpoint=checkpoint, name=f"{_row.label} ({table.key})")

        if counter is not None:
            result, chosen = ki67_row(row_dir, p.row, counter, opts, export)
        else:
            chosen = checkpoints(row_dir)[-1].name
            model = export(chosen, row_dir / "model.safetensors")
            result = evaluate_row(table, model, row_dir, backends, opts)
        dc = p.cfg.data
        crop = "whole images" if dc.preprocess == "none" else f"{dc.preprocess} {dc.crop_size} px"
        selected = {
            "checkpoint": chosen,
            "step": summary["step"],
            "epoch": summary["epoch"],
            "train_crop": crop,
        }
        (row_dir / "selected.json").write_text(json.dumps(selected))
        results[p.row.key] = {**result, **selected}
    paths = write_report(table, plans, results, weights, opts.run_dir)
    print(paths["md"].read_text())
    print(f"wrote {paths['md']}, {paths['csv']}, {paths['png']}")
    return 0


__all__ = ["Options", "describe_plan", "make_plans", "reproduce"]
