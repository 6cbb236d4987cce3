"""Run a Python snippet in a child process with a cap on its address space, and report its peak RSS.

Tests of "fails fast and small" must not take the machine down when the code under test regresses: the
cap turns a runaway allocation into a MemoryError in the child instead of an OOM kill of the host.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADDRESS_SPACE_CAP = 5 << 30  # torch alone maps ~1 GB of address space; 4 GB more is plenty for any test
# VmHWM is the peak RSS of this process image only: ru_maxrss would carry over the forking parent's size
# across exec (Linux keeps the larger of the two), so a big pytest process would be counted as the child's.
_EPILOGUE = """
import json as _json
_hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
print("@@RSS_KB@@" + _json.dumps(int(_hwm[0].split()[1])))
"""


@dataclass
class ChildResult:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float | None


def _cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))


def run_capped(code: str, timeout: float = 120.0, cwd: Path | None = None) -> ChildResult:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "trainer"), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(
        [sys.executable, "-c", code + _EPILOGUE],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_cap,
        env=env,
        cwd=cwd,
    )
    rss = None
    out_lines = []
    for line in proc.stdout.splitlines():
        if line.startswith("@@RSS_KB@@"):
            rss = json.loads(line[len("@@RSS_KB@@") :]) / 1024
        else:
            out_lines.append(line)
    return ChildResult(proc.returncode, "\n".join(out_lines), proc.stderr, rss)
