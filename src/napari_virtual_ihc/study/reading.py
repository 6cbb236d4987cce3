"""The reader widget's decisions, without Qt: which score a form may take, what saving says, where the
reader goes next. The widget only shows the case and collects the answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .scores import NOT_ASSESSABLE, ULTRALOW, ordinal_categories

if TYPE_CHECKING:
    from .session import ReaderSession


def accepts_score(score: str, ultralow: bool) -> bool:
    """An ordinal category (ultralow only in a study that asks for it) or "not assessable"."""
    if score == ULTRALOW and not ultralow:
        return False
    return score == NOT_ASSESSABLE or score in ordinal_categories(True)


def saved_message(session: ReaderSession) -> str:
    """What the status line says once the current case's answer is stored."""
    s = session
    if s.is_complete() and s.answered_count() == s.n and s.position + 1 >= s.n:
        return f"Session {s.session_number} complete: all {s.n} cases answered."
    return f"Saved {s.label()}."


def case_after_answer(session: ReaderSession) -> int | None:
    """Where the reader goes after saving: the next case, or from the last one the first still unanswered
    (None: stay)."""
    if session.position + 1 < session.n:
        return session.position + 1
    return session.next_unanswered()
