"""Reading orders: reproducible from the seed, different per reader, min gap / sessions always respected."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_virtual_ihc.study.errors import OrderingError
from napari_virtual_ihc.study.ordering import (
    check_order,
    gap_is_feasible,
    gapped_order,
    reader_rng,
    session_split,
)


def pairs(n: int) -> list[list[str]]:
    return [[f"{i}a", f"{i}b"] for i in range(n)]


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(1, 3), min_size=1, max_size=45),
    gap_fraction=st.floats(0, 1),
)
def test_gap_respected_for_every_seed_when_feasible(seed: int, sizes: list[int], gap_fraction: float) -> None:
    groups = [[f"{g}:{k}" for k in range(s)] for g, s in enumerate(sizes)]
    # the largest feasible gap for these group sizes, then a fraction of it
    max_gap = max(g for g in range(1, sum(sizes) + 2) if gap_is_feasible(sizes, g))
    gap = max(1, round(gap_fraction * max_gap))
    order = gapped_order(groups, gap, reader_rng(seed, "r"))
    assert sorted(order) == sorted(i for g in groups for i in g)
    group_of = {i: gi for gi, g in enumerate(groups) for i in g}
    check_order(order, group_of, gap)
    last: dict[int, int] = {}
    for pos, item in enumerate(order):
        g = group_of[item]
        assert g not in last or pos - last[g] >= gap
        last[g] = pos


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), gap=st.integers(1, 40))
def test_forty_pairs_reproducible_and_different_per_reader(seed: int, gap: int) -> None:
    groups = pairs(40)
    a1 = gapped_order(groups, gap, reader_rng(seed, "alice"))
    a2 = gapped_order(groups, gap, reader_rng(seed, "alice"))
    b = gapped_order(groups, gap, reader_rng(seed, "bob"))
    assert a1 == a2
    assert a1 != b
    for order in (a1, b):
        pos = {item: i for i, item in enumerate(order)}
        assert all(abs(pos[f"{i}a"] - pos[f"{i}b"]) >= gap for i in range(40))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40))
def test_sessions_hold_one_version_of_each_case(seed: int, n: int) -> None:
    groups = pairs(n)
    s1, s2 = session_split(groups, reader_rng(seed, "r"))
    assert session_split(groups, reader_rng(seed, "r")) == [s1, s2]
    for s in (s1, s2):
        assert sorted(i[:-1] for i in s) == sorted(str(i) for i in range(n))
    assert sorted(s1 + s2) == sorted(i for g in groups for i in g)


def test_infeasible_gap_is_a_clear_error() -> None:
    with pytest.raises(OrderingError, match="lower the gap"):
        gapped_order(pairs(10), 11, random.Random(0))
    assert gap_is_feasible([2] * 10, 10) and not gap_is_feasible([2] * 10, 11)
