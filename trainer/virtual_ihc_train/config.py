"""The run configuration: one dataclass per concern, dotted keys (``optim.lr``) for overrides.

A run starts from a preset (``presets.py``), then a YAML/TOML file, then ``--set key=value`` pairs; the
result is written to ``RUN_DIR/config.yaml`` and is all ``resume`` needs.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A key that does not exist, a value of the wrong type, or an unreadable config file."""


@dataclass
class DataConfig:
    kind: str = "bci"  # bci | mist | paired | unpaired
    root: str = ""  # bci / mist root folder
    source: str = ""  # paired / unpaired: H&E folder
    target: str = ""  # paired / unpaired: IHC folder
    split: str = "train"
    val_split: str = ""  # bci: "test", mist: "val"; empty = no validation (paired: use val_source/val_target)
    val_source: str = ""
    val_target: str = ""
    preprocess: str = "crop"  # crop | resize_and_crop | none
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    rot90: bool = True
    color_jitter: float = 0.0
    num_workers: int = 2
    mpp: float | None = None  # µm/px of the training images, written into the exported checkpoint
    description: str = ""


@dataclass
class ModelConfig:
    arch: str = "resnet"  # any name in napari_virtual_ihc.models.GENERATORS
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    discriminator: str = "patch"  # patch (70x70 PatchGAN) | multiscale (pix2pixHD, 3 scales)
    ndf: int = 64
    n_layers_d: int = 3
    norm_d: str = "batch"
    num_d: int = 3
    init_gain: float = 0.02


@dataclass
class LossConfig:
    gan_mode: str = "vanilla"  # vanilla | lsgan
    lambda_gan: float = 1.0
    pyramid_weights: list[float] = field(default_factory=lambda: [100.0])  # [L1 full res, S1, S2, ...]
    pyramid_blurs: int = 4
    pyramid_sigma: float = 1.0
    lambda_variance: float = 0.0
    lambda_feat: float = 0.0  # pix2pixHD feature matching (multiscale discriminator only)


@dataclass
class OptimConfig:
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_epochs: int = 100  # epochs at constant lr
    n_epochs_decay: int = 100  # epochs of linear decay to zero


@dataclass
class TrainConfig:
    batch_size: int = 1  # per process
    grad_accum: int = 1
    max_steps: int = 0  # 0 = run all epochs; otherwise stop after this many optimizer steps
    checkpoint_every: int = 1000  # optimizer steps; a checkpoint is also written at each epoch end
    checkpoint_each_epoch: bool = True
    keep_checkpoints: int = 3
    precision: str = "fp32"  # fp32 | fp16 | bf16 (autocast on CUDA)
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    log_every: int = 10
    val_every: int = 0  # optimizer steps between held-out PSNR/SSIM checks (0 = at epoch ends only)
    val_samples: int = 16
    val_crop: int = 0  # centre crop for validation (0 = full image; U-Net-256 needs multiples of 256)
    # how validation runs G ("" = as the preset's reference test script, recorded in the header): bn_stats
    # running | slide, dropout off | sample | mean:N (masks seeded with train.seed)
    val_bn_stats: str = ""
    val_dropout: str = ""
    grid_every_epoch: bool = True
    grid_samples: int = 4
    log_sample_indices: bool = False  # write each step's sample indices to indices_rank<r>.csv
    tensorboard: bool = True
    progress: bool = True


@dataclass
class TDKstainConfig:
    """TDKstain (balball/TDKstain ``tdk_model.py`` and ``preprocess/``): loss weights, estimator, knowledge maps."""

    lambda_l1: float = 10.0  # coef_L1
    lambda_mask: float = 10.0  # coef_mask: L1(G(A * M), K_M)
    lambda_estimator: float = 10.0  # coef_E: MSE(E(G_enc(B)), K_N) when E learns
    lambda_nuclei: float = 10.0  # coef_nuclei: MSE(E(G_enc(G(A))), K_N) when G learns
    nef: int = 128
    n_estimator_blocks: int = 4
    cache_dir: str = ""  # knowledge-map cache; empty = RUN_DIR/knowledge
    saturation_threshold: float = 0.15
    mask_blur_ksize: int = 9
    mask_blur_sigma: float = 3.0
    h_percentile: float = 99.0
    hole_area: int = 400
    dilation_radius: int = 1
    nuclei_sigma: float = 11.0
    cellpose_diameter: float = 30.0
    membrane_nuclei: bool = True  # the reference's cyto2 centroids on the blurred membrane mask
    nuclei_method: str = "auto"  # auto | cellpose | classical
    cellpose_model: str = "nuclei"  # built-in name or a model file
    membrane_cellpose_model: str = "cyto2"
    nuclei_method_used: str = ""  # written by the run: what really segmented the nuclei
    allow_knowledge_change: bool = False  # resume with other knowledge parameters (maps are recomputed)


@dataclass
class CycleGANConfig:
    """``cyclegan`` method: junyanz ``cycle_gan_model.py`` weights, and the MIL class channel (off by default)."""

    lambda_A: float = 10.0  # cycle A -> B -> A (L1)
    lambda_B: float = 10.0  # cycle B -> A -> B (L1)
    lambda_identity: float = 0.5  # identity L1, times lambda_A / lambda_B
    pool_size: int = 50  # fakes remembered per discriminator (0 = none)
    class_channel: bool = False  # append the tumour class plane as a 4th input channel of both generators
    labels_A: str = ""  # CSV file,class for the H&E images (class: tumour | non-tumour)
    labels_B: str = ""  # CSV file,class for the IHC images
    classifier_A: str = ""  # MIL classifier (.safetensors) giving the H&E class when no label is given
    classifier_B: str = ""  # MIL classifier for the IHC domain


@dataclass
class AspConfig:
    """ASP / AMMFI contrastive terms (CUT's PatchNCE, ASP's adaptive supervised PatchNCE, Gaussian pyramid)."""

    nce_layers: list[int] = field(default_factory=lambda: [0, 4, 8, 12, 16])  # generator encoder layers
    num_patches: int = 256  # positions sampled per layer
    nce_temperature: float = 0.07
    netf_nc: int = 256  # width of F's MLPs
    lambda_nce: float = 10.0  # PatchNCE(G(A), A)
    lambda_asp: float = 10.0  # adaptive supervised PatchNCE(G(A), B)
    asp_schedule: str = "lambda_linear"  # lambda_linear | none (plain supervised PatchNCE)
    lambda_gp: float = 10.0  # Gaussian-pyramid L1
    gp_weights: list[float] = field(default_factory=lambda: [0.015625, 0.03125, 0.0625, 0.125, 0.25, 1.0])
    multi_magnification: bool = False  # AMMFI: train on native, x2-down and x2/x4-zoomed views of each pair


@dataclass
class Config:
    preset: str = "pix2pix"
    method: str = "pix2pix"  # the training method (methods.METHODS): pix2pix | cyclegan | ...
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tdkstain: TDKstainConfig = field(default_factory=TDKstainConfig)
    cyclegan: CycleGANConfig = field(default_factory=CycleGANConfig)
    asp: AspConfig = field(default_factory=AspConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        cfg = cls()
        merge(cfg, d)
        return cfg

    def save(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def merge(cfg: Config, d: dict[str, Any], prefix: str = "") -> None:
    """Apply a nested mapping of overrides, rejecting unknown keys."""
    for key, value in d.items():
        if isinstance(value, dict) and not _is_dict_field(cfg, prefix + key):
            merge(cfg, value, prefix + key + ".")
        else:
            set_value(cfg, prefix + key, value)


def _is_dict_field(cfg: Config, dotted: str) -> bool:
    try:
        obj, name = _resolve(cfg, dotted)
    except ConfigError:
        return False
    return isinstance(getattr(obj, name), dict)


def _resolve(cfg: Config, dotted: str) -> tuple[Any, str]:
    parts = dotted.split(".")
    obj: Any = cfg
    for p in parts[:-1]:
        if not dataclasses.is_dataclass(obj) or not hasattr(obj, p):
            raise ConfigError(f"unknown config key {dotted!r}")
        obj = getattr(obj, p)
    if not dataclasses.is_dataclass(obj) or parts[-1] not in {f.name for f in dataclasses.fields(obj)}:
        raise ConfigError(f"unknown config key {dotted!r}; known: {', '.join(known_keys(cfg))}")
    return obj, parts[-1]


def known_keys(cfg: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        keys += known_keys(v, prefix + f.name + ".") if dataclasses.is_dataclass(v) else [prefix + f.name]
    return keys


def set_value(cfg: Config, dotted: str, value: Any) -> None:
    obj, name = _resolve(cfg, dotted)
    current = getattr(obj, name)
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"{dotted!r} is a section; set one of its keys")
    if isinstance(value, str) and not isinstance(current, str):
        value = _parse_text(dotted, value, current)
    if isinstance(current, bool) and not isinstance(value, bool):
        raise ConfigError(f"{dotted} expects true/false, got {value!r}")
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (
        isinstance(current, int)
        and not isinstance(current, bool)
        and isinstance(value, float)
        and value.is_integer()
    ):
        value = int(value)
    if current is not None and value is not None and not isinstance(value, type(current)):
        raise ConfigError(f"{dotted} expects {type(current).__name__}, got {value!r}")
    setattr(obj, name, value)


def _parse_text(dotted: str, text: str, current: Any) -> Any:
    try:
        if isinstance(current, bool):
            return yaml.safe_load(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, int):
            return int(text)
        return yaml.safe_load(text) if text != "" else None
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{dotted}: cannot parse {text!r} as {type(current).__name__}") from exc


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=1e-4", "train.batch_size=8"]`` -> ``{"optim.lr": "1e-4", ...}`` (values parsed by type)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except Exception as exc:
        raise ConfigError(f"cannot parse config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping")
    return data
