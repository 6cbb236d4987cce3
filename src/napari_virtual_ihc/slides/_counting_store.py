"""A zarr store wrapper that counts chunk reads, so tests and benchmarks can prove reads are on demand."""

from __future__ import annotations

import threading
from typing import Any

from zarr.storage import WrapperStore

_METADATA_KEYS = (".zarray", ".zattrs", ".zgroup", "zarr.json")


class CountingStore(WrapperStore):
    """Delegates to the wrapped store; ``chunks_read`` counts chunk (tile) fetches, metadata excluded."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.chunks_read = 0
        self._count_lock = threading.Lock()

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        if not key.rsplit("/", 1)[-1].startswith(_METADATA_KEYS):
            with self._count_lock:
                self.chunks_read += 1
        return await self._store.get(key, prototype, byte_range)
