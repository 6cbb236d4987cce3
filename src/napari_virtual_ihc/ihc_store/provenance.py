"""What made a store, in one builder: the engine writes it into the store, the widget shows it on the layer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def build_provenance(
    *,
    model: dict[str, Any],
    target_stain: str | None,
    settings: dict[str, Any],
    source: dict[str, Any],
    store_mpp: tuple[float, float] | None,
    model_mpp: float | None,
    level0_downsample: float,
    receptive_field: int,
    norm: str,
    **extra: Any,
) -> dict[str, Any]:
    """The ``virtual_ihc`` attribute a new store starts with (``complete`` etc. are updated as it runs);
    ``extra``: what else the engine records (its run mode, warnings)."""
    return {
        "model": model,
        "target_stain": target_stain,
        "settings": settings,
        "source": source,
        "mpp": list(store_mpp) if store_mpp else None,
        "model_mpp": model_mpp,
        "level0_downsample": level0_downsample,
        "receptive_field": receptive_field,
        "norm": norm,
        **extra,
    }


def layer_provenance(stored: dict[str, Any], store: Path, **extra: Any) -> dict[str, Any]:
    """A layer's ``metadata["virtual_ihc"]``: the store's provenance, where it is, and what the viewer adds
    (the source layer's name, the device, the report of the run that just ended)."""
    prov = dict(stored)
    prov["store"] = str(Path(store).resolve())
    prov.setdefault("time", datetime.now(UTC).isoformat(timespec="seconds"))
    prov["complete"] = bool(prov.get("complete", False))
    prov.update({k: v for k, v in extra.items() if v is not None})
    return prov


def model_name(prov: dict[str, Any]) -> str:
    """The model's name as a store's provenance records it."""
    model = prov.get("model")
    if isinstance(model, dict):
        return str(model.get("name") or Path(str(model.get("source") or "model")).stem)
    return str(model or "model")
