"""Peak memory does not grow with the slide: 16k x 16k vs 4k x 4k (lazily generated slides, subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def peak_rss_kib(side: int, data_dir: Path) -> tuple[int, int, int]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run(
        [sys.executable, str(HERE / "rss_job.py"), str(side), str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    total, done, skipped, rss = (int(v) for v in r.stdout.split()[-4:])
    assert done + skipped == total
    return total, done, rss


@pytest.mark.slow
def test_peak_rss_16k_slide_within_1_3x_of_4k(data_dir):
    small_total, small_done, small = peak_rss_kib(4096, data_dir)
    big_total, big_done, big = peak_rss_kib(16384, data_dir)
    print(
        f"peak RSS 4k: {small / 1024:.0f} MiB ({small_total} tiles), 16k: {big / 1024:.0f} MiB ({big_total} tiles)"
    )
    assert big_total == 16 * small_total and big_done > small_done
    assert big <= 1.3 * small
