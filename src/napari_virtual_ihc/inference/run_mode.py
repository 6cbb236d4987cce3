"""How a run treats batch norm and dropout, and what it assumes: decided once, recorded in provenance.

The papers' reference ``test.py`` scripts run generators in train mode (no ``--eval``): batch norm uses the test
image's own statistics and dropout stays on. A checkpoint's header says which mode the model is meant for
(imported ``.pth`` files default to their test.py's); the user's settings override it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..models.spec import UNKNOWN_MPP_NOTE, ModelSpec
from .api import EngineSettings
from .dropout import DropoutMode, dropout_layers
from .errors import EngineError
from .normalization import batch_norm_names

BN_STATS_MODES = ("running", "slide")


class RunModeError(EngineError, ValueError):
    """An unknown batch-norm statistics or dropout mode."""


@dataclass
class RunMode:
    bn_stats: str = "running"  # running (eval mode) | slide (the slide's own statistics, frozen)
    dropout: DropoutMode = field(default_factory=DropoutMode)
    seed: int = 0
    dropout_layers: int = 0
    source: dict[str, str] = field(default_factory=dict)  # per choice: settings | checkpoint | default
    warnings: list[str] = field(default_factory=list)

    @property
    def slide_batch_norm(self) -> bool:
        return self.bn_stats == "slide"

    @property
    def samples(self) -> int:
        return self.dropout.samples if self.dropout.kind == "mean" else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "bn_stats": self.bn_stats,
            "dropout": str(self.dropout),
            "dropout_seed": self.seed,
            "dropout_layers": self.dropout_layers,
            "source": dict(self.source),
        }


def _pick(given: str | None, header: str | None, default: str, what: str, source: dict[str, str]) -> str:
    if given:
        source[what] = "settings"
        return given
    if header:
        source[what] = "checkpoint"
        return header
    source[what] = "default"
    return default


def resolve_run_mode(module: nn.Module, spec: ModelSpec, settings: EngineSettings, norm: str) -> RunMode:
    """The run's batch-norm and dropout modes, with a warning for each request that cannot apply."""
    source: dict[str, str] = {}
    bn = _pick(settings.bn_stats, spec.bn_stats, "running", "bn_stats", source).strip().lower()
    if bn not in BN_STATS_MODES:
        raise RunModeError(f"bn_stats {bn!r}: use running (eval mode) or slide (the slide's own statistics)")
    try:
        dropout = DropoutMode.parse(_pick(settings.dropout, spec.dropout, "off", "dropout", source))
    except ValueError as e:
        raise RunModeError(str(e)) from e
    warnings: list[str] = []
    # ``slide`` applies to every BatchNorm layer, also in a model that is otherwise instance-norm (AMMFI's
    # attention): the reference test scripts run those layers in train mode too.
    if bn == "slide" and not batch_norm_names(module):
        if source["bn_stats"] == "settings":
            warnings.append(f"bn_stats 'slide' ignored: the model has no BatchNorm layers (norm: {norm})")
        bn = "running"
    n_dropout = len(dropout_layers(module))
    if dropout.active and n_dropout == 0:
        warnings.append(
            f"dropout '{dropout}' requested but the model has no dropout layers: every sample is the same "
            "output (one pass is run; the confidence map is zero)"
        )
    return RunMode(bn, dropout, int(settings.dropout_seed), n_dropout, source, warnings)


def resolution_warning(spec: ModelSpec, settings: EngineSettings) -> str | None:
    """What a run without a known model µm/px assumes, and how to fix it."""
    if settings.model_mpp is not None or spec.mpp is not None:
        return None
    return UNKNOWN_MPP_NOTE
