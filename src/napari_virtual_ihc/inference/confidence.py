"""The dropout confidence map: a second, single-channel store beside the stain, best effort.

With ``dropout="mean:N"`` every pixel is the mean of N dropout samples; their standard deviation (grey levels,
averaged over R, G, B; 0 = all samples agree) is written here, tile by tile like the stain. A confidence store
that cannot be created or written costs only the map: the failure becomes a warning in ``run.json`` and the
main store carries on unaffected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..ihc_store import StoreError, TileStore
from ..ihc_store.naming import confidence_store_path
from .errors import EngineError


class ConfidenceWriter:
    """Writes spread tiles into the confidence store until the first failure, then only records it."""

    def __init__(self, store: TileStore | None, warnings: list[str]) -> None:
        self.store = store
        self.warnings = warnings

    @classmethod
    def open(
        cls,
        main: Path,
        plane: tuple[int, int],
        tile: int,
        factors: list[int],
        mpp: tuple[float, float] | None,
        run_key: dict[str, Any],
        provenance: dict[str, Any],
        warnings: list[str],
    ) -> ConfidenceWriter:
        path = confidence_store_path(main)
        try:
            store = TileStore.open(
                path,
                plane,
                tile,
                factors,
                mpp,
                run_key,
                dict(provenance, map="dropout spread, grey levels"),
                channels=1,
                fill=0,
            )
        except (EngineError, StoreError, OSError) as e:
            warnings.append(f"confidence map not written ({path}): {e}; the stain itself is unaffected")
            return cls(None, warnings)
        return cls(store, warnings)

    @property
    def path(self) -> str | None:
        return str(self.store.path) if self.store is not None else None

    def write(self, core: tuple[int, int, int, int], spread: np.ndarray) -> None:
        if self.store is None:
            return
        try:
            self.store.write_tile(core, spread)
        except (EngineError, StoreError, OSError) as e:
            self.warnings.append(
                f"confidence map stopped at tile {core}: {e}; the stain itself is unaffected"
            )
            self.close()
            self.store = None

    def close(self, **provenance: Any) -> None:
        if self.store is None:
            return
        try:
            if provenance:
                self.store.update_provenance(**provenance)
        except (EngineError, OSError):
            pass
        self.store.close()
