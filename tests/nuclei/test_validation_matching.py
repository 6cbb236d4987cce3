"""The validation set's matching of detections to marks (tests/nuclei/_validation.py): it must pair as many
marks as lie within the radius of a distinct detection, so adding truth never loses matches."""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from . import _validation as v


def _most_pairs(truth: np.ndarray, det: np.ndarray, radius: float) -> int:
    near = np.linalg.norm(truth[:, None] - det[None], axis=2) <= radius
    return int((maximum_bipartite_matching(csr_matrix(near), perm_type="column") >= 0).sum())


def test_matching_pairs_every_mark_it_can():
    rng = np.random.default_rng(0)
    for _ in range(200):
        truth = rng.uniform(0, 60, (rng.integers(1, 12), 2))
        det = rng.uniform(0, 60, (rng.integers(1, 12), 2))
        r, c = v.match(truth, det, 8.0)
        assert len(set(r)) == len(r) and len(set(c)) == len(c)
        assert (np.linalg.norm(truth[r] - det[c], axis=1) <= 8.0).all()
        assert len(r) == _most_pairs(truth, det, 8.0)


def test_an_added_mark_far_from_every_detection_costs_no_match():
    truth = np.array([[0.0, 0.0], [9.0, 0.0]])
    det = np.array([[4.0, 0.0], [13.0, 0.0]])
    assert len(v.match(truth, det, 5.0)[0]) == 2
    assert len(v.match(np.vstack([truth, [[200.0, 0.0]]]), det, 5.0)[0]) == 2
