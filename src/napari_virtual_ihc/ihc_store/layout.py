"""The store's on-disk names and its OME-NGFF 0.4 metadata (shared by the writer and the reader)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from .naming import PROVENANCE_KEY

DONE_FILE = "tiles_done"
NORM_STATS_FILE = "norm_stats.npz"
STORE_FORMAT = 3  # 2: the run key names the source slide (size, head+tail hash); 3: whole-content hash


def ngff_attrs(
    factors: list[int], mpp: tuple[float, float] | None, provenance: dict[str, Any]
) -> dict[str, Any]:
    mx, my = mpp if mpp is not None else (1.0, 1.0)
    unit = "micrometer" if mpp is not None else None
    axes: list[dict[str, Any]] = [{"name": "c", "type": "channel"}]
    for name in ("y", "x"):
        ax: dict[str, Any] = {"name": name, "type": "space"}
        if unit:
            ax["unit"] = unit
        axes.append(ax)
    datasets = [
        {
            "path": str(i),
            "coordinateTransformations": [{"type": "scale", "scale": [1.0, my * f, mx * f]}],
        }
        for i, f in enumerate(factors)
    ]
    provenance = dict(
        provenance,
        store_format=STORE_FORMAT,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return {
        "multiscales": [{"version": "0.4", "name": "virtual IHC", "axes": axes, "datasets": datasets}],
        "omero": {
            "version": "0.4",
            "rdefs": {"model": "color"},
            "channels": [
                {
                    "label": n,
                    "color": c,
                    "active": True,
                    "window": {"start": 0, "end": 255, "min": 0, "max": 255},
                }
                for n, c in (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))
            ],
        },
        PROVENANCE_KEY: json.loads(json.dumps(provenance, default=str)),
    }
