"""The whole-slide tile engine (being built; the signature is the contract)."""

from __future__ import annotations

import threading
from pathlib import Path

from ..models.spec import LoadedGenerator
from ..slides.base import Slide
from .api import Box, EngineSettings, PriorityProvider, ProgressCallback, RunReport


def stain_slide(
    slide: Slide,
    model: LoadedGenerator,
    store: str | Path,
    settings: EngineSettings | None = None,
    *,
    region: Box | None = None,
    priority: PriorityProvider | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> RunReport:
    """Stain ``slide`` (or ``region`` of it, level-0 box) into the OME-Zarr ``store``; resumable."""
    raise NotImplementedError
