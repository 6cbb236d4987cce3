"""Run many CLI invocations from one warm process: each is a fork with a capped address space.

Usage: ``python cli_fuzz_runner.py CASES.json RESULTS.json``. Each case is ``{"id", "prog", "argv", "root",
"out"}``; the child chdirs to ``root``, runs ``virtual-ihc`` or ``virtual-ihc-train``'s ``main(argv)``
with stdout/stderr in files, and exits with its return code (an uncaught exception prints its traceback,
which the test then finds). The parent collects, per case: exit code, stdout, stderr, the child's peak RSS
(``os.wait4``'s rusage; a fork starts with the parent's resident pages, reported as ``baseline_mb``) and every
file under ``root`` outside ``out`` that appeared, vanished or changed.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path

CASE_TIMEOUT_S = 180
ADDRESS_SPACE_HEADROOM = 3 << 30  # beyond what the warm parent already maps: a runaway allocation fails


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    files: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if (here / d) != skip]
        for name in filenames:
            p = here / name
            try:
                st = p.lstat()
            except OSError:
                continue
            files[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return files


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 2 << 30


def run_case(case: dict, mains: dict) -> dict:
    root, out = Path(case["root"]), Path(case["out"])
    before = snapshot(root, out)
    t0 = time.perf_counter()
    so, se = root / f".{case['id']}.stdout", root / f".{case['id']}.stderr"
    cap = _vm_size() + ADDRESS_SPACE_HEADROOM
    pid = os.fork()
    if pid == 0:  # child
        code = 99
        try:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            signal.alarm(CASE_TIMEOUT_S)
            fo, fe = (
                os.open(so, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                os.open(se, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
            )
            os.dup2(fo, 1)
            os.dup2(fe, 2)
            os.chdir(root)
            try:
                code = int(mains[case["prog"]](case["argv"]) or 0)
            except SystemExit as e:  # argparse
                code = e.code if isinstance(e.code, int) else 2
            except BaseException:
                traceback.print_exc()
                code = 98
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - t0
    after = snapshot(root, out)
    changed = sorted(
        k
        for k in set(before) | set(after)
        if before.get(k) != after.get(k) and not k.startswith(f".{case['id']}.")
    )
    result = {
        "id": case["id"],
        "exit": os.waitstatus_to_exitcode(status),
        "stdout": so.read_text(errors="replace"),
        "stderr": se.read_text(errors="replace"),
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "seconds": seconds,
        "changed_outside_out": changed,
    }
    so.unlink()
    se.unlink()
    return result


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    import torch  # noqa: F401 - warm: every child shares the imports
    from virtual_ihc_train.cli import main as train_main

    from napari_virtual_ihc.cli import main as vihc_main

    # warm what the commands import lazily, so each fork starts with it (the table's cells cost ms, not s)
    for module in (
        "napari_virtual_ihc.inference",
        "napari_virtual_ihc.stain",
        "napari_virtual_ihc.study",
        "napari_virtual_ihc.study.analysis",
        "napari_virtual_ihc.study.report",
        "napari_virtual_ihc.registration",
        "napari_virtual_ihc.registration.compare",
        "napari_virtual_ihc.registration.pairs",
        "virtual_ihc_train.loop",
        "virtual_ihc_train.mil",
        "virtual_ihc_train.evaluation.evaluate",
        "tqdm",
        "matplotlib.pyplot",
    ):
        importlib.import_module(module)

    mains = {"virtual-ihc": vihc_main, "virtual-ihc-train": train_main}
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = [run_case(c, mains) for c in cases]
    Path(sys.argv[2]).write_text(json.dumps({"baseline_mb": baseline, "results": results}, indent=1))


if __name__ == "__main__":
    main()
