"""The run-scoped allocator setting: freed activations are reused (no fresh page faults) during a run only."""

from __future__ import annotations

import resource

import numpy as np
import pytest

from napari_virtual_ihc.inference import allocator
from napari_virtual_ihc.inference.allocator import keep_freed_memory

pytestmark = pytest.mark.skipif(allocator._glibc() is None, reason="glibc's malloc only")

BLOCK = 64 * 2**20 // 8  # a 64 MiB float64 array: above glibc's largest automatic mmap threshold


def _faults_of_a_fresh_block() -> int:
    """Minor page faults for allocating and touching a 64 MiB block (after one was just freed)."""
    np.ones(BLOCK).sum()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(BLOCK).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_freed_blocks_are_reused_during_a_run_and_given_back_after_it() -> None:
    default = _faults_of_a_fresh_block()
    with keep_freed_memory() as applied:
        assert applied
        kept = _faults_of_a_fresh_block()
        with keep_freed_memory():  # a nested (or concurrent) run shares the setting...
            pass
        assert _faults_of_a_fresh_block() * 4 <= default  # ...and leaving it does not end the outer one
    after = _faults_of_a_fresh_block()
    assert kept * 4 <= default, (kept, default)
    assert after * 4 > default, (after, default)  # glibc's defaults are back: fresh pages again
