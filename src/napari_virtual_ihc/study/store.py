"""One SQLite answer store per reader: an append-only event log that survives a power cut.

Every answer is its own transaction in WAL mode with ``synchronous=FULL``, so once ``record_answer``
returns the answer is on disk; updates and deletes are refused by triggers, so a changed answer is a new
event and the whole history is kept. The current answer to an image is its latest answer event.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StoreError
from .scores import NOT_ASSESSABLE, parse_score

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_utc TEXT NOT NULL,
    kind TEXT NOT NULL,
    session INTEGER,
    position INTEGER,
    image_id TEXT,
    payload TEXT NOT NULL DEFAULT '{}'
);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the answer log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the answer log is append-only'); END;
"""

#: The reader ID under which ``study.algorithm`` records the HER2 estimate of every image.
ALGORITHM_READER = "algorithm"

# event kinds
OPEN_CASE = "open_case"
ANSWER = "answer"
ACTIVE_TIME = "active_time"
SESSION_START = "session_start"
SESSION_COMPLETE = "session_complete"


@dataclass(frozen=True)
class Answer:
    seq: int
    ts_utc: str
    session: int | None
    position: int | None
    image_id: str | None
    score: str
    confidence: int | None
    comment: str
    source: str  # "reader" or "import:<file>"
    case_id: str | None = None  # only for imports that name cases instead of bundle images
    modality: str | None = None
    seconds: float | None = None  # reading time reported by another tool (imports)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


class AnswerStore:
    """Append-only per-reader event log (open with the study ID and reader ID it belongs to)."""

    def __init__(self, path: str | Path, study_id: str, reader_id: str) -> None:
        self.path = Path(path)
        if self.path.is_file() and self.path.stat().st_size == 0:
            # SQLite would silently start a new, empty log here (the reader back at case 1, the loss
            # unnoticed). A store is never 0 bytes once created (its first statement writes the header),
            # so an empty file is a store whose contents were lost: refuse, and say what to do.
            raise StoreError(
                f"{self.path} is empty (0 bytes): its answers were lost or it was never written. "
                "Restore it from a backup; if this reader never answered anything, delete the file to start."
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the answers folder {self.path.parent} ({exc.strerror or exc}); "
                "choose another answers folder"
            ) from exc
        if not os.access(self.path.parent, os.W_OK):
            raise StoreError(
                f"the answers folder {self.path.parent} is read-only; choose another answers folder"
            )
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable answer store: {exc}") from exc
        self._claim("study_id", study_id)
        self._claim("reader_id", reader_id)
        self._claim("schema_version", str(SCHEMA_VERSION))
        self.study_id, self.reader_id = study_id, reader_id

    def _claim(self, key: str, value: str) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
        elif row[0] != value:
            raise StoreError(f"{self.path} belongs to {key}={row[0]!r}, not {value!r}")

    @classmethod
    def open_existing(cls, path: str | Path) -> AnswerStore:
        """Open a store whatever study/reader it holds (for the coordinator's analysis)."""
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"{path} does not exist")
        if path.stat().st_size == 0:
            raise StoreError(f"{path} is empty (0 bytes): its answers were lost or it was never written")
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            db.close()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path} is not an answer store: {exc}") from exc
        if "study_id" not in meta or "reader_id" not in meta:
            raise StoreError(f"{path} is not an answer store")
        return cls(path, meta["study_id"], meta["reader_id"])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AnswerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing --------------------------------------------------------------------------------
    def append(
        self,
        kind: str,
        *,
        session: int | None = None,
        position: int | None = None,
        image_id: str | None = None,
        payload: dict[str, Any] | None = None,
        ts_utc: str | None = None,
    ) -> int:
        """Append one event in its own durable transaction; returns its sequence number."""
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute(
                "INSERT INTO events (ts_utc, kind, session, position, image_id, payload) VALUES (?,?,?,?,?,?)",
                (
                    ts_utc or _now(),
                    kind,
                    session,
                    position,
                    image_id,
                    json.dumps(payload or {}, sort_keys=True),
                ),
            )
            seq = int(cur.lastrowid or 0)
            cur.execute("COMMIT")
        except BaseException as exc:
            # SQLite rolls a transaction back by itself on some errors (disk full, I/O error): a second
            # ROLLBACK would raise "no transaction is active" over the real cause
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the error below says what went wrong
                    self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(
                    f"cannot write to the answer store {self.path} ({exc}); nothing of this step was stored. "
                    "Free disk space (or fix the folder) and try again"
                ) from exc
            raise
        return seq

    def record_answer(
        self,
        *,
        image_id: str | None,
        score: str,
        confidence: int | None,
        comment: str = "",
        session: int | None = None,
        position: int | None = None,
        source: str = "reader",
        case_id: str | None = None,
        modality: str | None = None,
        seconds: float | None = None,
        ts_utc: str | None = None,
    ) -> int:
        score = parse_score(score)
        if confidence is not None and not (1 <= int(confidence) <= 5):
            raise StoreError(f"confidence must be 1-5, got {confidence}")
        payload: dict[str, Any] = {
            "score": score,
            "confidence": None if confidence is None else int(confidence),
            "comment": comment,
            "source": source,
        }
        if case_id is not None:
            payload["case_id"], payload["modality"] = case_id, modality
        if seconds is not None:
            payload["seconds"] = float(seconds)
        return self.append(
            ANSWER, session=session, position=position, image_id=image_id, payload=payload, ts_utc=ts_utc
        )

    # --- reading --------------------------------------------------------------------------------
    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT seq, ts_utc, kind, session, position, image_id, payload FROM events"
        rows = self._db.execute(
            sql + (" WHERE kind = ?" if kind else "") + " ORDER BY seq", (kind,) if kind else ()
        )
        return [
            {"seq": r[0], "ts_utc": r[1], "kind": r[2], "session": r[3], "position": r[4], "image_id": r[5]}
            | {"payload": json.loads(r[6])}
            for r in rows
        ]

    def answer_history(self) -> list[Answer]:
        out = []
        for e in self.events(ANSWER):
            p = e["payload"]
            out.append(
                Answer(
                    e["seq"],
                    e["ts_utc"],
                    e["session"],
                    e["position"],
                    e["image_id"],
                    p["score"],
                    p.get("confidence"),
                    p.get("comment", ""),
                    p.get("source", "reader"),
                    p.get("case_id"),
                    p.get("modality"),
                    p.get("seconds"),
                )
            )
        return out

    def current_answers(self) -> dict[str, Answer]:
        """Latest answer per image (or per ``case_id/modality`` for imports without image IDs)."""
        latest: dict[str, Answer] = {}
        for a in self.answer_history():
            latest[a.image_id or f"{a.case_id}\x00{a.modality}"] = a
        return latest

    def active_seconds(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for e in self.events(ACTIVE_TIME):
            if e["image_id"]:
                totals[e["image_id"]] = totals.get(e["image_id"], 0.0) + float(e["payload"]["seconds"])
        return totals

    def last_position(self, session: int) -> int | None:
        row = self._db.execute(
            "SELECT position FROM events WHERE kind = ? AND session = ? ORDER BY seq DESC LIMIT 1",
            (OPEN_CASE, session),
        ).fetchone()
        return None if row is None else int(row[0])

    def session_completed_at(self, session: int) -> dt.datetime | None:
        row = self._db.execute(
            "SELECT ts_utc FROM events WHERE kind = ? AND session = ? ORDER BY seq LIMIT 1",
            (SESSION_COMPLETE, session),
        ).fetchone()
        return None if row is None else dt.datetime.fromisoformat(row[0])


def is_scored(answer: Answer) -> bool:
    return answer.score != NOT_ASSESSABLE
