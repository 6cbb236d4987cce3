"""Reading orders: seeded per reader, with versions of one case kept apart.

Two designs: one session where two versions of a case are at least ``min_gap`` positions apart
(``|i - j| >= min_gap``), or several sessions where each session holds at most one version of each case
(a washout between sessions is enforced when they are opened).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

from .errors import OrderingError

T = TypeVar("T", bound=Hashable)

RANDOM_ATTEMPTS = 50


def reader_rng(seed: int, reader_id: str, purpose: str = "order") -> random.Random:
    """An RNG that depends only on (seed, reader, purpose): reproducible, different per reader."""
    digest = hashlib.sha256(f"{seed}\x00{reader_id}\x00{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def gap_is_feasible(group_sizes: Sequence[int], min_gap: int) -> bool:
    """Whether some order keeps equal-group items ``min_gap`` apart (task-scheduling bound)."""
    sizes = [s for s in group_sizes if s > 0]
    if not sizes or min_gap <= 1:
        return True
    biggest = max(sizes)
    n_biggest = sum(1 for s in sizes if s == biggest)
    return sum(sizes) >= (biggest - 1) * min_gap + n_biggest


def check_order(order: Sequence[T], group_of: Mapping[T, Hashable], min_gap: int) -> None:
    """Raise OrderingError if two items of one group are closer than ``min_gap``."""
    last: dict[Hashable, int] = {}
    for pos, item in enumerate(order):
        g = group_of[item]
        if g in last and pos - last[g] < min_gap:
            raise OrderingError(f"items of one case at positions {last[g]} and {pos} (< {min_gap} apart)")
        last[g] = pos


def gapped_order(groups: Sequence[Sequence[T]], min_gap: int, rng: random.Random) -> list[T]:
    """A random order of all items in which items of one group are at least ``min_gap`` apart.

    Random draws (weighted by what each group has left) are tried first; if they paint themselves into
    a corner, a greedy most-remaining-first pass with random tie-breaks, which succeeds whenever the
    bound of :func:`gap_is_feasible` holds, finishes the job.
    """
    sizes = [len(g) for g in groups]
    if not gap_is_feasible(sizes, min_gap):
        raise OrderingError(
            f"no order keeps versions {min_gap} apart with group sizes up to {max(sizes)} "
            f"and {sum(sizes)} items; lower the gap or use sessions with a washout"
        )
    group_of = {item: gi for gi, g in enumerate(groups) for item in g}
    for _ in range(RANDOM_ATTEMPTS):
        order = _draw(groups, min_gap, rng, greedy=False)
        if order is not None:
            check_order(order, group_of, min_gap)
            return order
    order = _draw(groups, min_gap, rng, greedy=True)
    if order is None:  # pragma: no cover - the bound above guarantees success
        raise OrderingError(f"could not build an order with gap {min_gap}")
    check_order(order, group_of, min_gap)
    return order


def _draw(groups: Sequence[Sequence[T]], min_gap: int, rng: random.Random, greedy: bool) -> list[T] | None:
    remaining = [list(g) for g in groups]
    for r in remaining:
        rng.shuffle(r)
    last = [-(10**9)] * len(groups)
    total = sum(len(r) for r in remaining)
    order: list[T] = []
    for pos in range(total):
        eligible = [gi for gi, r in enumerate(remaining) if r and pos - last[gi] >= min_gap]
        if not eligible:
            return None
        if greedy:
            most = max(len(remaining[gi]) for gi in eligible)
            choice = rng.choice([gi for gi in eligible if len(remaining[gi]) == most])
        else:
            choice = rng.choices(eligible, weights=[len(remaining[gi]) for gi in eligible])[0]
        order.append(remaining[choice].pop())
        last[choice] = pos
    return order


def session_split(groups: Sequence[Sequence[T]], rng: random.Random) -> list[list[T]]:
    """Split items into sessions, one version of each case per session, each session shuffled."""
    n_sessions = max(len(g) for g in groups)
    sessions: list[list[T]] = [[] for _ in range(n_sessions)]
    for g in groups:
        items = list(g)
        rng.shuffle(items)
        for s, item in enumerate(items):
            sessions[s].append(item)
    for session in sessions:
        rng.shuffle(session)
    return sessions
