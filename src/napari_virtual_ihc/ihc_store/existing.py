"""Whether the store found for a slide holds that slide's result: what the stain widget offers to load.

The answer compares the store's recorded source with the slide's identity, whose first computation reads
the whole slide file (SHA-256, ~1 GB/s; a 3 GB scan ~10 s on a shared core, see ``identity``): callers
with a GUI run ``existing_result`` off the GUI thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .identity import same_source, source_identity
from .provenance import model_name
from .reader import read_store_provenance

if TYPE_CHECKING:
    from ..slides.base import Slide


@dataclass(frozen=True)
class ExistingResult:
    """A store at the slide's result path: its provenance, and whether its source is this slide."""

    store: Path
    provenance: dict[str, Any]
    holds_this_slide: bool

    @property
    def complete(self) -> bool:
        return bool(self.provenance.get("complete"))

    def describe(self) -> str:
        """``<model>, complete`` or ``<model>, partial (Run resumes it)``."""
        state = "complete" if self.complete else "partial (Run resumes it)"
        return f"{model_name(self.provenance)}, {state}"


def existing_result(store: Path, slide: Slide) -> ExistingResult | None:
    """The result in ``store`` (None when there is no readable store); ``holds_this_slide`` when its
    recorded source has this slide's size and content hash (a store without a run key, or one the slide
    cannot be identified against, holds another slide's result as far as a user is concerned)."""
    prov = read_store_provenance(store)
    if prov is None:
        return None
    run_key = prov.get("run_key")
    if not isinstance(run_key, dict):
        return ExistingResult(Path(store), prov, False)
    try:
        identity = source_identity(slide)
    except OSError:
        return ExistingResult(Path(store), prov, False)
    return ExistingResult(Path(store), prov, same_source(run_key.get("source"), identity))
