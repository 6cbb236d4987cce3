"""Export a run's generator to the plugin's checkpoint format (``.safetensors`` + JSON header), with the
training facts a user of the widget or ``virtual-ihc stain`` wants to see: mpp, preset, data, epochs,
steps and metrics."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from napari_virtual_ihc.models import build_generator, read_checkpoint, save_generator

from .config import Config, read_config_file
from .evaluation.protocol import reference_mode
from .run_state import ResumeError, latest_checkpoint, net_file


def export_run(
    run_dir: Path,
    out: Path,
    checkpoint: str | None = None,
    metrics_json: str | Path | None = None,
    mpp: float | None = None,
    name: str | None = None,
    net: str = "G",
) -> Path:
    """Write net ``net`` of the run (``G``: H&E -> IHC; CycleGAN's ``G_B``: the reverse) as a plugin checkpoint."""
    run_dir = Path(run_dir)
    cfg = Config.from_dict(read_config_file(run_dir / "config.yaml"))
    ckpt = run_dir / "checkpoints" / checkpoint if checkpoint else latest_checkpoint(run_dir)
    file = ckpt / net_file(net)
    if not file.is_file():
        raise ResumeError(f"no {file.name} in {ckpt} (net {net!r})")
    spec, sd = read_checkpoint(file)  # refuses NaN/inf weights, naming them
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    module = build_generator(spec.arch, **spec.arch_kwargs)
    module.load_state_dict(sd, strict=True)
    metrics: dict[str, Any] = {}
    if metrics_json:
        result = json.loads(Path(metrics_json).read_text())
        metrics = {
            "summary": result.get("summary", {}),
            "convention": result.get("convention"),
            "n_images": result.get("n_images"),
        }
    data = {
        "kind": cfg.data.kind,
        "root": cfg.data.root or None,
        "source": cfg.data.source or None,
        "target": cfg.data.target or None,
        "split": cfg.data.split,
        "description": cfg.data.description,
        "crop_size": cfg.data.crop_size,
        "preprocess": cfg.data.preprocess,
    }
    provenance = {
        **(spec.provenance or {}),  # what the method recorded (its name, e.g. the segmenters TDKstain used)
        "trainer": "virtual-ihc-train",
        "preset": cfg.preset,
        "data": data,
        "epochs": state["epoch"],
        "steps": state["step"],
        "planned_epochs": cfg.optim.n_epochs + cfg.optim.n_epochs_decay,
        "losses": dataclasses.asdict(cfg.loss),
        "discriminator": cfg.model.discriminator,
        "checkpoint": ckpt.name,
        "metrics": metrics,
    }
    spec = dataclasses.replace(
        reference_mode(spec, module),  # runs written before the header carried the mode get their script's
        mpp=mpp if mpp is not None else cfg.data.mpp,
        name=name or (spec.name if net != "G" else f"{cfg.preset} on {cfg.data.kind}"),
        provenance=provenance,
    )
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the .safetensors file to write")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. --out afile/x: a file where the folder should be
        raise ValueError(f"--out {out}: cannot create its folder {out.parent} ({exc.strerror})") from None
    written = save_generator(out, module.eval(), spec)
    classifier = cfg.cyclegan.classifier_A if net == "G" else cfg.cyclegan.classifier_B
    if spec.class_channel is not None and classifier and Path(classifier).is_file():
        # the engine looks for the classifier beside the model
        shutil.copyfile(classifier, out.with_name(Path(classifier).name))
    return written
