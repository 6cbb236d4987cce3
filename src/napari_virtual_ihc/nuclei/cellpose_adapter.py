"""Cellpose v3 adapter: the built-in ``nuclei`` model or any local model file, on the hematoxylin channel.

Loading follows cellpose's own path (``CellposeModel``); a model file whose network width differs from
cellpose's default (e.g. a small net trained with ``cellpose.train.train_seg``) is rebuilt with the widths
read from its state dict (``torch.load(weights_only=True)``, no code executed). When the built-in weights
cannot be had (no cache, no network) :class:`CellposeUnavailable` is raised and callers fall back to the
classical method, labelling outputs with the method used.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class CellposeUnavailable(RuntimeError):
    """Cellpose or its weights are not available here (message says why)."""


def _nbase_from_state(state: dict[str, Any]) -> list[int]:
    keys = sorted(
        k for k in state if k.startswith("downsample.down.res_down_") and k.endswith("conv.conv_0.2.weight")
    )
    if not keys:
        raise CellposeUnavailable("not a Cellpose v3 state dict (no downsample.down.res_down_* weights)")
    keys.sort(key=lambda k: int(k.split("res_down_")[1].split(".")[0]))
    first = state[keys[0]]
    return [int(first.shape[1])] + [int(state[k].shape[0]) for k in keys]


_STYLE_WIDTH = 256  # cellpose.core.run_net stores styles in arrays 256 wide


def _any_width_cpnet(cpnet: type) -> type:
    """CPnet whose style vector is zero-padded to 256, so cellpose's ``run_net`` accepts narrower nets.

    Masks do not depend on the returned style (it is only handed back to the caller).
    """
    import torch

    class AnyWidthCPnet(cpnet):
        def forward(self, data):
            t1, style, t0 = super().forward(data)
            pad = _STYLE_WIDTH - style.shape[1]
            return t1, torch.nn.functional.pad(style, (0, pad)), t0

    return AnyWidthCPnet


@dataclass
class CellposeNuclei:
    """A loaded Cellpose model; ``segment`` takes a hematoxylin OD map (nuclei bright)."""

    model: Any
    source: str

    @property
    def method(self) -> str:
        return f"cellpose:{self.source}"

    def segment(self, hematoxylin_od: np.ndarray, diameter_px: float) -> np.ndarray:
        img = hematoxylin_od.astype(np.float32)
        masks, _flows, _styles = self.model.eval(
            img, channels=[0, 0], diameter=float(diameter_px), normalize=True, progress=False
        )
        return np.asarray(masks, dtype=np.int32)


def load_cellpose(model: str | os.PathLike[str] = "nuclei", gpu: bool = False) -> CellposeNuclei:
    """Load ``model`` ("nuclei"/"cyto3"... or a path). Raises CellposeUnavailable when it cannot be had."""
    try:
        import torch
        from cellpose import models
        from cellpose.resnet_torch import CPnet
    except Exception as e:  # pragma: no cover - cellpose is a dependency
        raise CellposeUnavailable(f"cellpose cannot be imported: {e}") from e
    device = None
    if gpu:
        if not torch.cuda.is_available():
            raise CellposeUnavailable("GPU requested but CUDA is not available")
        device = torch.device("cuda")
    path = Path(os.fspath(model)).expanduser()
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CellposeUnavailable(f"{path} is not a loadable Cellpose model: {e}") from e
        if not isinstance(state, dict):
            raise CellposeUnavailable(f"{path} does not hold a state dict")
        nbase = _nbase_from_state(state)
        if nbase[1:] == [32, 64, 128, 256]:
            cp = models.CellposeModel(gpu=gpu, pretrained_model=str(path), nchan=nbase[0], device=device)
        else:
            cp = models.CellposeModel(gpu=gpu, pretrained_model=False, nchan=nbase[0], device=device)
            cp.nbase = nbase
            net_cls = CPnet if nbase[-1] == _STYLE_WIDTH else _any_width_cpnet(CPnet)
            net = net_cls(nbase, 3, sz=3, mkldnn=cp.mkldnn, max_pool=True, diam_mean=cp.diam_mean)
            cp.net = net.to(cp.device)
            cp.net.load_model(str(path), device=cp.device)
            cp.pretrained_model = str(path)
            cp.diam_mean = float(cp.net.diam_mean.data.cpu().numpy()[0])
            cp.diam_labels = float(cp.net.diam_labels.data.cpu().numpy()[0])
        return CellposeNuclei(cp, str(path))
    name = str(model)
    if name not in models.MODEL_NAMES:
        raise CellposeUnavailable(f"no Cellpose model file at {path} and {name!r} is not a built-in model")
    try:
        # cellpose downloads into ~/.cellpose/models when the weights are not cached.
        cp = models.CellposeModel(gpu=gpu, model_type=name, device=device)
    except Exception as e:
        raise CellposeUnavailable(
            f"Cellpose weights for {name!r} could not be loaded or downloaded ({type(e).__name__}: {e}); "
            f"put them in {models.MODEL_DIR} or pass a model path"
        ) from e
    return CellposeNuclei(cp, name)
