"""An exclusive OS file lock held by the one run writing a store (``fcntl`` on POSIX, ``msvcrt`` on Windows).

The OS drops the lock when the process dies, so a killed run never leaves a store locked. The lock file
is never followed through a link (a symbolic link or a second hard link at its name could point anywhere
outside the output folder: refused), and only a lock file this run created gets its PID written into it;
one already there is locked as it is, never truncated (issue 29).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path

from .errors import ForeignPathError, OutputNotWritableError, StoreLockedError


class StoreLock:
    """``with StoreLock(path):`` or ``acquire()``/``release()``; a second holder gets StoreLockedError."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> StoreLock:
        fd, created = self._open()
        try:
            _lock(fd)
        except OSError as e:
            os.close(fd)
            raise StoreLockedError(
                f"{self.what} is being written by another run right now (lock {self.path} is held); wait "
                "for it to finish, or choose another output folder"
            ) from e
        if created:
            with contextlib.suppress(OSError):  # the PID is a courtesy; the lock is what counts
                os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def _open(self) -> tuple[int, bool]:
        """The lock file's descriptor and whether this call created it; refuses a link at its name."""
        flags = os.O_RDWR | _NOFOLLOW  # descriptors are not inherited (PEP 446)
        try:
            try:
                return os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                fd = os.open(self.path, flags)
        except OSError as e:
            if self.path.is_symlink():
                raise self._linked() from e
            raise OutputNotWritableError(f"cannot create the lock file {self.path}: {e.strerror or e}") from e
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            raise self._linked()
        return fd, False

    def _linked(self) -> ForeignPathError:
        return ForeignPathError(
            f"the lock file {self.path} is a link (or not a plain file); it is never followed, so nothing "
            "outside the output folder is written: remove it, or choose another output folder"
        )

    def release(self) -> None:
        if self._fd is not None:
            try:
                _unlock(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    _NOFOLLOW = 0  # no symbolic links to follow in practice; the link-count check still applies

    def _lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    _NOFOLLOW = os.O_NOFOLLOW

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
