"""Slides shared by the processes of a cohort through claim files in the output folder.

Any number of workers (``torchrun`` ranks, Slurm array tasks, processes started by hand, on one machine or
many sharing an NFS folder) stain the same list of slides into the same ``--out``. Each takes the next
slide nobody holds by creating ``OUT/.cohort/<store>.claim`` with ``O_CREAT | O_EXCL`` (atomic on local
disks and on NFSv3+; no ``fcntl`` lock, which NFS does not keep reliably), rewrites that file every
``lease / 4`` seconds while it works (the heartbeat), and records the outcome as ``<store>.done.json`` or
``<store>.failed.json`` (made by ``link``: also atomic, also exclusive). A claim whose content has not
changed for ``lease`` seconds *of the observer's own clock* belongs to a worker that stopped (killed, node
lost): another worker renames it away (one rename wins) and claims the slide afresh; the engine resumes the
store from its finished tiles. Comparing content rather than mtimes keeps clock skew between hosts out of
it. A worker whose claim was taken (it stalled longer than the lease) is told by its heartbeat and stops.

Workers hand out the largest slides (by file size) first, so one large slide does not arrive last and
hold one worker while the others idle.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

COHORT_DIR = ".cohort"
COHORT_CSV = "cohort.csv"
LEASE_ENV = "VIRTUAL_IHC_COHORT_LEASE_S"
DEFAULT_LEASE_S = 120.0
STATES = ("done", "failed", "claimed", "pending")


class CohortMismatchError(Exception):
    """A worker was started on a folder whose cohort uses another model or other output settings."""


@dataclass
class SlideRecord:
    """One row of ``cohort.csv``: a slide and what became of it."""

    slide: str
    state: str = "pending"  # done | failed | claimed | pending
    worker: str = ""
    tiles: int = 0  # tiles stained (model and background) by the run that finished it
    seconds: float = 0.0
    mp_per_s: float = 0.0
    error: str = ""
    signature: str = ""  # the slide file's size and mtime when it was stained (see slide_signature)


def slide_signature(slide: str | os.PathLike[str]) -> str:
    """Size and modification time of a slide (summed and latest over a folder such as an OME-Zarr).

    A ``done`` record counts only while the slide still has this signature: a slide replaced at the same
    path goes back to the engine, whose content identity check refuses or resumes its store (issue 29)."""
    p = Path(slide)
    try:
        if p.is_dir():
            stats = [f.stat() for f in p.rglob("*") if f.is_file()]
            return f"{sum(st.st_size for st in stats)}:{max((st.st_mtime_ns for st in stats), default=0)}"
        st = p.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return ""


def default_lease() -> float:
    """``$VIRTUAL_IHC_COHORT_LEASE_S`` or 120 s: a claim not renewed for this long is taken over."""
    try:
        return max(0.5, float(os.environ.get(LEASE_ENV, DEFAULT_LEASE_S)))
    except ValueError:
        return DEFAULT_LEASE_S


def worker_name(rank: int | None = None) -> str:
    """``host:pid`` (and the launcher's rank): who holds a claim, in the status table."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    return f"{name}:rank{rank}" if rank is not None else name


def largest_first(slides: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(key, slide) pairs by file size, largest first (the given order among equals or unreadable files)."""

    def size(item: tuple[str, str]) -> int:
        try:
            p = Path(item[1])
            return sum(f.stat().st_size for f in p.rglob("*")) if p.is_dir() else p.stat().st_size
        except OSError:
            return 0

    return sorted(slides, key=size, reverse=True)


def _write_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists; readers never see it half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _slide_of(text: str | None) -> str | None:
    try:
        return str(json.loads(text or "{}").get("slide"))
    except (ValueError, AttributeError):
        return None


class Cohort:
    """The claim board of one output folder, as seen by one worker."""

    def __init__(self, out: Path, worker: str, lease_s: float | None = None) -> None:
        self.out = Path(out)
        self.dir = self.out / COHORT_DIR
        self.worker = worker
        self.lease_s = default_lease() if lease_s is None else float(lease_s)
        self._seen: dict[str, tuple[str, float]] = {}  # key -> (claim content, when it last changed here)
        self._slides: dict[str, str] = {}  # key -> this worker's slide of that store name

    def _path(self, key: str, kind: str) -> Path:
        return self.dir / f"{key}.{kind}"

    # --- the list and the states ------------------------------------------------------------------------
    def join(self, identity: dict[str, object]) -> None:
        """Join the cohort of this folder: the first worker records what it stains with (model, settings
        that shape the output); a worker started with anything else is refused (CohortMismatchError)
        before it claims a slide, so one folder never mixes two models."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "identity.json"
        text = json.dumps(identity, sort_keys=True, default=str)
        if _write_exclusive(path, text):
            return
        recorded = json.loads(_read(path) or "{}")
        mine = json.loads(text)
        differ = sorted(k for k in set(recorded) | set(mine) if recorded.get(k) != mine.get(k))
        if differ:
            detail = "; ".join(f"{k}: {recorded.get(k)!r} there, {mine.get(k)!r} here" for k in differ)
            raise CohortMismatchError(
                f"{self.out} holds a cohort started with other settings ({detail}); use another --out, or "
                f"delete {self.dir} to start it again"
            )

    def register(self, slides: list[tuple[str, str]]) -> None:
        """Name every (key, slide) of this cohort, so ``cohort status`` lists the ones nobody took yet."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._slides.update(slides)
        for key, slide in slides:
            path = self._path(key, "slide")
            if not path.exists():
                _write_exclusive(path, json.dumps({"slide": slide}))

    def state(self, key: str) -> str:
        """done | failed | claimed | pending. A record of another slide under the same store name (a slide
        of that name from another folder, or this one moved) does not count: the engine then decides
        (refused by the store's identity check, or resumed)."""
        mine = self._slides.get(key)
        for kind in ("done", "failed"):
            path = self._path(key, f"{kind}.json")
            text = _read(path)
            if text is None or (mine is not None and _slide_of(text) != mine):
                continue
            if kind == "done" and not self._current(text):
                continue  # the slide changed since it was stained: the engine decides again
            if kind == "done" and not (self.out / key).exists():
                path.unlink(missing_ok=True)  # the store was deleted since: stain it again
                continue
            return kind
        return "claimed" if self._path(key, "claim").exists() else "pending"

    @staticmethod
    def _current(record_text: str) -> bool:
        """True when a record's slide still has the signature recorded with it."""
        try:
            data = json.loads(record_text or "{}")
        except ValueError:
            return False
        recorded = data.get("signature", "")
        return recorded == slide_signature(str(data.get("slide", "")))

    def settled(self, key: str) -> bool:
        return self.state(key) in ("done", "failed")

    def retry_failed(self, keys: list[str]) -> None:
        """Forget the failures of ``keys`` so they are claimed again (``--retry-failed``)."""
        for key in keys:
            self._path(key, "failed.json").unlink(missing_ok=True)

    # --- claiming ---------------------------------------------------------------------------------------------
    def _claim_text(self, beat: int) -> str:
        return json.dumps({"worker": self.worker, "beat": beat, "renewed": time.time()})

    def _create_claim(self, key: str) -> bool:
        return _write_exclusive(self._path(key, "claim"), self._claim_text(0))

    def _stale(self, key: str) -> bool:
        """True once this claim's content has not changed for a lease, by this worker's clock."""
        text = _read(self._path(key, "claim"))
        if text is None:
            return False
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or seen[0] != text:
            self._seen[key] = (text, now)
            return False
        return now - seen[1] >= self.lease_s

    def _take_over(self, key: str) -> bool:
        """Move the stale claim away (one rename wins among the workers that saw it stale), then claim."""
        taken = self._path(key, f"claim.taken.{os.getpid()}")
        try:
            os.rename(self._path(key, "claim"), taken)
        except FileNotFoundError:
            return False
        with contextlib.suppress(OSError):
            taken.unlink()
        self._seen.pop(key, None)
        return self._create_claim(key) and not self.settled(key)

    def claim_next(self, keys: list[str]) -> str | None:
        """The next slide this worker now holds, or None when every other one is settled or held alive."""
        for key in keys:
            if self.settled(key):
                continue
            if self._create_claim(key):
                if self.settled(key):  # finished between the check and the claim
                    self._path(key, "claim").unlink(missing_ok=True)
                    continue
                return key
            if self._stale(key) and self._take_over(key):
                return key
        return None

    def unsettled(self, keys: list[str]) -> list[str]:
        return [k for k in keys if not self.settled(k)]

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[threading.Event]:
        """Renew the claim every lease / 4 while the body runs; the event is set if the claim was lost."""
        lost, stop = threading.Event(), threading.Event()
        path = self._path(key, "claim")

        def beat() -> None:
            n = 0
            while not stop.wait(self.lease_s / 4):
                n += 1
                text = _read(path)
                if text is None or json.loads(text or "{}").get("worker") != self.worker:
                    lost.set()
                    return
                with contextlib.suppress(OSError):
                    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # no O_CREAT: never revive a taken claim
                    with os.fdopen(fd, "w") as f:
                        f.write(self._claim_text(n))

        thread = threading.Thread(target=beat, name=f"vihc-claim-{key}", daemon=True)
        thread.start()
        try:
            yield lost
        finally:
            stop.set()
            thread.join()

    def finish(self, key: str, record: SlideRecord) -> bool:
        """Record the outcome and let the claim go; False if another worker recorded this slide first."""
        path = self._path(key, f"{record.state}.json")
        if record.state == "done" and not record.signature:
            record.signature = slide_signature(record.slide)
        recorded = _write_exclusive(path, json.dumps(asdict(record)))
        old = _read(path)
        stale = _slide_of(old) != record.slide or (record.state == "done" and not self._current(old or ""))
        if not recorded and stale:  # an old record of another slide, or of this slide before it changed
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(asdict(record)))
            os.replace(tmp, path)
            recorded = True
        text = _read(self._path(key, "claim"))
        if text is not None and json.loads(text or "{}").get("worker") == self.worker:
            self._path(key, "claim").unlink(missing_ok=True)
        return recorded

    # --- the summary --------------------------------------------------------------------------------------------
    def records(self) -> list[SlideRecord]:
        """Every registered slide with its state, in name order."""
        rows: list[SlideRecord] = []
        if not self.dir.is_dir():
            return rows
        for path in sorted(self.dir.glob("*.slide")):
            key = path.name[: -len(".slide")]
            slide = json.loads(_read(path) or "{}").get("slide", key)
            state = self.state(key)
            record = SlideRecord(slide, state)
            if state in ("done", "failed"):
                with contextlib.suppress(ValueError, TypeError):
                    data = json.loads(_read(self._path(key, f"{state}.json")) or "{}")
                    record = SlideRecord(
                        **{f.name: data[f.name] for f in fields(SlideRecord) if f.name in data}
                    )
            elif state == "claimed":
                with contextlib.suppress(ValueError):
                    record.worker = json.loads(_read(self._path(key, "claim")) or "{}").get("worker", "")
            rows.append(record)
        return rows

    def write_csv(self) -> Path:
        """``OUT/cohort.csv`` (slide, state, worker, tiles, seconds, MP/s, error), replaced atomically."""
        path = self.out / COHORT_CSV
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["slide", "state", "worker", "tiles", "seconds", "mp_per_s", "error"])
            for r in self.records():
                w.writerow(
                    [r.slide, r.state, r.worker, r.tiles, f"{r.seconds:.2f}", f"{r.mp_per_s:.3f}", r.error]
                )
        os.replace(tmp, path)
        return path


def wait_interval(lease_s: float) -> float:
    """How often an idle worker looks again for a slide to claim or a claim gone stale."""
    return min(5.0, max(0.1, lease_s / 4))
