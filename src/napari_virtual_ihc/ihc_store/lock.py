"""An exclusive OS file lock held by the one run writing a store (``fcntl`` on POSIX, ``msvcrt`` on Windows).

The OS drops the lock when the process dies, so a killed run never leaves a store locked.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO

from .errors import OutputNotWritableError, StoreLockedError


class StoreLock:
    """``with StoreLock(path):`` or ``acquire()``/``release()``; a second holder gets StoreLockedError."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fh: IO[str] | None = None

    def acquire(self) -> StoreLock:
        try:
            fh = open(self.path, "a+")  # noqa: SIM115 - held until release()
        except OSError as e:
            raise OutputNotWritableError(f"cannot create the lock file {self.path}: {e.strerror or e}") from e
        try:
            _lock(fh)
        except OSError as e:
            fh.close()
            raise StoreLockedError(
                f"{self.what} is being written by another run right now (lock {self.path} is held); wait "
                "for it to finish, or choose another output folder"
            ) from e
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            try:
                _unlock(self._fh)
            finally:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fh: IO[str]) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock(fh: IO[str]) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fh: IO[str]) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fh: IO[str]) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
