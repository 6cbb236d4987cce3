"""The worker-thread side of a staining run: what it needs (captured on the GUI thread), and what it does."""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ihc_store import layer_provenance
from ..inference.api import EngineSettings, RunEvent, RunPlan, RunReport
from ..slides.base import Slide
from ._run_scope import gui_friendly_run
from ._stain_messages import ModelLoadError


@dataclass
class RunRequest:
    """Everything a run needs, captured on the GUI thread when Run is pressed."""

    source_layer: Any
    slide: Slide
    store: Path
    model_path: str
    settings: EngineSettings
    opacity: float = 0.6
    tumour_class: str = "auto"  # models with a tumour-class channel: auto (classifier) | tumour | non-tumour


def run_events(request: RunRequest, cancel: threading.Event, priority: Any) -> Generator[RunEvent, None, Any]:
    """Worker thread: load the model, then the engine's own generator (plan, progress..., report)."""
    from .. import inference, models

    with gui_friendly_run():
        try:
            model = models.supply_class_channel(
                models.load_generator(request.model_path, device="cpu"), request.tumour_class
            )
        except models.CheckpointError:
            raise
        except Exception as exc:  # any failure reading the file is a model problem for the user
            raise ModelLoadError(f"{request.model_path}: {type(exc).__name__}: {exc}") from exc
        if cancel.is_set():
            return None
        return (
            yield from inference.iter_stain_slide(
                request.slide, model, request.store, request.settings, priority=priority, cancel=cancel
            )
        )


def run_provenance(request: RunRequest, plan: RunPlan | None, report: RunReport | None) -> dict[str, Any]:
    """``layer.metadata["virtual_ihc"]``: the store's provenance and what this run adds to it."""
    stored = plan.provenance if plan is not None else {}
    device = report.device if report else plan.device if plan else request.settings.device
    return layer_provenance(
        {**stored, "complete": bool(report and report.store_complete)},
        Path(request.store).resolve(),
        source_layer=request.source_layer.name,
        slide_path=str(request.slide.path) if request.slide.path else None,
        device=device,
        report=report.__dict__ if report else None,
        settings={**stored.get("settings", {}), **(report.settings if report else {})},
    )
