"""A real read-only folder for the tests: root ignores file modes, so a chmod proves nothing."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def read_only_tmpfs(folder: Path) -> Iterator[bool]:
    """Mount an empty read-only tmpfs on ``folder`` (made if missing); yields whether it could be mounted
    (tests skip where mounting is not allowed) and unmounts it afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", f"vihc-{uuid.uuid4().hex[:8]}", str(folder)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)
