"""What a generator checkpoint says about itself (the JSON header of the project's ``.safetensors`` files)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

FORMAT_VERSION = 1
#: Pixel scalings a header may name for ``input_norm``/``output_norm``.
PIXEL_NORMS = ("minus_one_one", "zero_one")
#: µm/px a model can have been trained at (microscope scans: 0.1-2; the bounds catch typos like 0 or 1e-3).
MODEL_MPP_RANGE = (0.05, 50.0)
UNKNOWN_MPP_NOTE = (
    "no µm/px recorded: the model runs at the slide's native resolution, right only if it was trained at that "
    "magnification; set --model-mpp (EngineSettings.model_mpp, e.g. 0.5 for a 20x model) or record it with "
    "'virtual-ihc convert IN.pth OUT.safetensors --model-mpp 0.5'"
)


@dataclass
class ModelSpec:
    """Everything needed to rebuild a generator and run it at the right scale.

    ``arch`` names a constructor in the generator registry and ``arch_kwargs`` are its arguments.
    ``input_norm``/``output_norm`` describe pixel scaling: ``"minus_one_one"`` maps uint8 0..255 to
    -1..1 (the pix2pix/CycleGAN convention). ``mpp`` is the µm/pixel the model was trained at; ``None``
    (an imported ``.pth``) means "run at the slide's native resolution unless told otherwise".
    ``bn_stats`` (``running`` | ``slide``) and ``dropout`` (``off`` | ``sample`` | ``mean:N``) record how the
    model is meant to run (None: eval mode); imported ``.pth`` files get what their reference test.py does.
    """

    arch: str
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    input_norm: str = "minus_one_one"
    output_norm: str = "minus_one_one"
    mpp: float | None = None
    target_stain: str = "HER2"
    name: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    # a 4th input channel holding the tumour class plane (CycleGAN + MIL): {"classes": {name: value}, ...};
    # None for the usual RGB-only generator
    class_channel: dict[str, Any] | None = None
    bn_stats: str | None = None
    dropout: str | None = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class LoadedGenerator:
    """A generator module in eval mode with its spec, the file it came from and that file's sha256."""

    module: torch.nn.Module
    spec: ModelSpec
    source: str = ""
    sha256: str = ""
    notes: list[str] = field(default_factory=list)  # what loading assumed, for the CLI and the widget to say
