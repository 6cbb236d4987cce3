"""A reader's session over a bundle: where they are, what they answered, what they may open.

Used by the napari widget and by scripts alike; every state change goes through the answer store first,
so the position and answers after a crash are those of the last committed event.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Bundle, SessionPlan, StudyItem, load_bundle
from .errors import ReaderError, WashoutError
from .store import ACTIVE_TIME, OPEN_CASE, SESSION_COMPLETE, SESSION_START, Answer, AnswerStore


def store_filename(reader_id: str) -> str:
    """A file name for a reader's store that is safe on every file system."""
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", reader_id) and not reader_id.startswith("."):
        return f"{reader_id}.sqlite"
    return f"reader-{hashlib.sha256(reader_id.encode()).hexdigest()[:16]}.sqlite"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ReaderSession:
    def __init__(
        self,
        bundle: Bundle | str | Path,
        reader_id: str,
        answers_dir: str | Path | None = None,
        now: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        reader_id = reader_id.strip()
        if not reader_id:
            raise ReaderError("enter a reader ID")
        self.reader_id = reader_id
        self.plans = self.bundle.sessions_for(reader_id)
        folder = Path(answers_dir) if answers_dir is not None else self.bundle.root / "answers"
        self.store = AnswerStore(folder / store_filename(reader_id), self.bundle.study_id, reader_id)
        self._now = now
        self._shown: str | None = None  # image whose pixels were last handed out for display
        self.plan = self._open_session()
        self.store.append(SESSION_START, session=self.plan.number)
        resume = self.store.last_position(self.plan.number)
        self.position = resume if resume is not None else self._first_unanswered()
        self.go_to(self.position)

    # --- sessions -------------------------------------------------------------------------------
    def _open_session(self) -> SessionPlan:
        previous: SessionPlan | None = None
        for plan in self.plans:
            if self.store.session_completed_at(plan.number) is None:
                self.check_washout(plan, previous)
                return plan
            previous = plan
        return self.plans[-1]  # everything done: reopen the last session for review

    def check_washout(self, plan: SessionPlan, previous: SessionPlan | None) -> None:
        now = self._now()
        if plan.opens_on is not None and now.date() < plan.opens_on:
            raise WashoutError(
                f"session {plan.number} opens on {plan.opens_on.isoformat()} (washout); come back then"
            )
        if plan.washout_days and previous is not None:
            done = self.store.session_completed_at(previous.number)
            if done is None:
                raise WashoutError(f"finish session {previous.number} first")
            opens = done + dt.timedelta(days=plan.washout_days)
            if now < opens:
                raise WashoutError(
                    f"session {plan.number} opens on {opens.date().isoformat()}, "
                    f"{plan.washout_days} days after session {previous.number} (washout)"
                )

    @property
    def session_number(self) -> int:
        return self.plan.number

    @property
    def n_sessions(self) -> int:
        return len(self.plans)

    # --- navigation -----------------------------------------------------------------------------
    @property
    def items(self) -> tuple[StudyItem, ...]:
        return self.plan.items

    @property
    def n(self) -> int:
        return len(self.plan.items)

    @property
    def current(self) -> StudyItem:
        return self.plan.items[self.position]

    def go_to(self, position: int) -> None:
        if not 0 <= position < self.n:
            raise IndexError(f"case {position + 1} is outside 1..{self.n}")
        self.position = position
        self._shown = None
        self.store.append(OPEN_CASE, session=self.plan.number, position=position, image_id=self.current.image)

    def next(self) -> bool:
        if self.position + 1 >= self.n:
            return False
        self.go_to(self.position + 1)
        return True

    def previous(self) -> bool:
        if self.position == 0:
            return False
        self.go_to(self.position - 1)
        return True

    def label(self, position: int | None = None) -> str:
        """What the reader sees as the case's name."""
        pos = self.position if position is None else position
        return f"Case {pos + 1} of {self.n}"

    # --- pixels ---------------------------------------------------------------------------------
    def pixels(self) -> np.ndarray:
        """The current case's pixels; from here on the case counts as on screen (and may be scored)."""
        self._shown = None
        rgb = self.bundle.load_pixels(self.current.image)
        self._shown = self.current.image
        return rgb

    def levels(self) -> list[Any]:
        """The current case as lazily read pyramid levels (full resolution first); marks it on screen."""
        self._shown = None
        levels = self.bundle.load_levels(self.current.image)
        self._shown = self.current.image
        return levels

    def context_pixels(self) -> np.ndarray | None:
        ctx = self.current.context
        return None if ctx is None else self.bundle.load_pixels(ctx)

    def context_levels(self) -> list[Any] | None:
        ctx = self.current.context
        return None if ctx is None else self.bundle.load_levels(ctx)

    @property
    def shown_image(self) -> str | None:
        """The image ID whose pixels are on screen (None after a move or a failed load)."""
        return self._shown

    def hide(self) -> None:
        """The front end could not show the case (e.g. its H&E is missing): it may not be scored."""
        self._shown = None

    # --- answers --------------------------------------------------------------------------------
    def answers(self) -> dict[str, Answer]:
        images = {it.image for it in self.plan.items}
        return {k: a for k, a in self.store.current_answers().items() if k in images}

    def answer_at(self, position: int) -> Answer | None:
        return self.store.current_answers().get(self.plan.items[position].image)

    def answer(self, score: str, confidence: int, comment: str = "") -> int:
        """Record (durably) the reader's answer for the current case; returns the event sequence.

        Refused unless the current case's pixels were handed out for display since the last move, so a
        score can never land on an image the reader did not see (e.g. one that vanished mid-study).
        """
        if self._shown is None or self._shown != self.current.image:
            raise ReaderError(f"{self.label()} is not on screen; nothing was stored")
        seq = self.store.record_answer(
            image_id=self.current.image,
            score=score,
            confidence=confidence,
            comment=comment,
            session=self.plan.number,
            position=self.position,
        )
        if self.answered_count() == self.n and self.store.session_completed_at(self.plan.number) is None:
            self.store.append(SESSION_COMPLETE, session=self.plan.number)
        return seq

    def add_active_time(self, seconds: float) -> None:
        if seconds > 0:
            self.store.append(
                ACTIVE_TIME,
                session=self.plan.number,
                position=self.position,
                image_id=self.current.image,
                payload={"seconds": round(float(seconds), 3)},
            )

    def answered_count(self) -> int:
        return len(self.answers())

    def is_complete(self) -> bool:
        return self.store.session_completed_at(self.plan.number) is not None

    def _first_unanswered(self) -> int:
        done = self.answers()
        for pos, it in enumerate(self.plan.items):
            if it.image not in done:
                return pos
        return 0

    def next_unanswered(self) -> int | None:
        done = self.answers()
        order = list(range(self.position + 1, self.n)) + list(range(self.position + 1))
        for pos in order:
            if self.plan.items[pos].image not in done:
                return pos
        return None

    def close(self) -> None:
        self.store.close()
