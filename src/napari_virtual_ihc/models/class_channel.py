"""Generators with a tumour-class input channel (CycleGAN + MIL): the plane is supplied here, once, so the
engine, the CLI and the widget run such a model like any other RGB -> RGB generator.

The plane comes from one class for the whole slide (the user's pick) or from the tumour classifier run
tile-wise over each window. A checkpoint whose header declares the channel and gets neither is refused
with a message saying what to give; it is never run on a silent zero channel.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch
from torch import Tensor, nn

from .classifier import CLASS_VALUES, class_plane_tilewise, load_classifier
from .errors import CheckpointError
from .spec import LoadedGenerator

AUTO = "auto"  # use the tumour classifier (named in the header, found beside the checkpoint, or given)


class ClassChannelError(CheckpointError):
    """A generator with a class channel and no way to supply the class."""


class ClassConditionedGenerator(nn.Module):
    """RGB in, RGB out: appends the class plane as the 4th channel of the wrapped generator's input."""

    def __init__(
        self, generator: nn.Module, value: float | None, classifier: nn.Module | None, tile: int
    ) -> None:
        super().__init__()
        self.generator = generator
        self.value = value
        self.tile = tile
        # a plain list, not a child: the engine's receptive-field trace and norm freezing see only the generator
        self._classifier: list[nn.Module] = [classifier] if classifier is not None else []

    def forward(self, x: Tensor) -> Tensor:
        if self.value is not None:
            plane = x.new_full((x.shape[0], 1, x.shape[2], x.shape[3]), self.value)
        else:
            clf = self._classifier[0].to(x.device)
            plane = class_plane_tilewise(clf, x.float(), self.tile).to(x.dtype)
        return self.generator(torch.cat((x, plane), 1))


def needs_class(model: LoadedGenerator) -> bool:
    """True for a class-channel generator that has not been given its class yet."""
    return model.spec.class_channel is not None and not isinstance(model.module, ClassConditionedGenerator)


def describe_choices(model: LoadedGenerator) -> str:
    name = model.spec.name or Path(model.source).name
    return (
        f"model {name!r} has a tumour-class input channel (CycleGAN + MIL): give one class for the slide "
        f"({' or '.join(CLASS_VALUES)}) or its tumour classifier (.safetensors)"
    )


def supply_class_channel(
    model: LoadedGenerator, tumour_class: str | None = None, classifier: str | Path | None = None
) -> LoadedGenerator:
    """``model`` ready to run on RGB: unchanged without a class channel; else the plane is attached.

    ``tumour_class``: ``"tumour"`` / ``"non-tumour"`` (one class for the slide) or ``"auto"``/None (the
    classifier: ``classifier`` if given, else the file the header names, beside the checkpoint).
    """
    header = model.spec.class_channel
    if header is None or not needs_class(model):
        return model
    value: float | None = None
    clf: nn.Module | None = None
    tile = int(header.get("tile", 224))
    if tumour_class not in (None, "", AUTO):
        if tumour_class not in CLASS_VALUES:
            raise ClassChannelError(
                f"unknown tumour class {tumour_class!r}; use {', '.join(CLASS_VALUES)} or auto"
            )
        value = CLASS_VALUES[tumour_class]
        choice = f"class={tumour_class}"
    else:
        path = Path(classifier) if classifier else None
        named = header.get("classifier")
        if path is None and named and model.source:
            candidate = Path(model.source).with_name(str(named))
            path = candidate if candidate.is_file() else None
        if path is None:
            where = f"; its classifier {named!r} is not beside {model.source}" if named else ""
            raise ClassChannelError(describe_choices(model) + where)
        clf = load_classifier(path, "cpu")
        choice = f"classifier={path.resolve()}"
    module = ClassConditionedGenerator(model.module, value, clf, tile).eval()
    sha = hashlib.sha256(f"{model.sha256}|{choice}".encode()).hexdigest()
    provenance = {**model.spec.provenance, "class_channel_input": choice}
    spec = dataclasses.replace(model.spec, provenance=provenance)
    return LoadedGenerator(module=module, spec=spec, source=model.source, sha256=sha)
