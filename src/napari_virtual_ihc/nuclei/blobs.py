"""Offline nuclei on any stain: multi-scale LoG blobs at the expected nucleus size, then a seeded watershed.

Nuclei are compact blobs of optical density about one diameter across, whatever colours them. A
scale-normalised Laplacian of Gaussian (LoG) at radii around the expected one (from µm/px) peaks once at each
nucleus centre, also where nuclei touch, where a threshold-then-split method merges them. Seeds are the LoG
maxima whose response and signal clear fixed optical-density cuts (the white point is calibrated per slide, so
tiles agree without an overview); masks come from a watershed of the smoothed signal from those seeds.

The signal is the nuclear optical density of the stain (:func:`stain_signal`): hematoxylin on H&E; H + DAB
when DAB is nuclear (Ki-67, ER, PR: stained nuclei are brown, not blue); hematoxylin minus DAB when DAB is on
membranes or in cytoplasm, so stained membranes become troughs between the nuclei of touching cells.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from skimage.feature import peak_local_max
from skimage.morphology import convex_hull_image
from skimage.segmentation import relabel_sequential, watershed

from .classical import check_compartment, dab_is_nuclear, nuclear_od, otsu_threshold
from .learned_check import LearnedCheck, candidate_patches, judged, load_check
from .positivity import NUCLEAR_DAB_CUTOFF

RADIUS_FACTORS = (0.8, 1.0, 1.3, 1.7)  # LoG radii tried, as shares of the expected radius (1.7: large
# tumour nuclei, ~12 µm at the 7 µm default; tuned)
SEED_LOG_OD = 0.02  # a seed's LoG response (OD) must reach this (tuned on the "tune" half)
MIN_CONTRAST_OD = 0.08  # a nucleus stands this much OD above its surroundings (no overview calibration)
# an overview resolves nuclei (calibration reads them) at this diameter in its pixels
RESOLVED_DIAMETER_PX = 4.0
CONTRAST_PERCENTILE = 90.0  # the overview's typical nuclear contrast: this percentile of its H contrast
CONTRAST_SHARE = 0.2  # a nucleus stands this share of the typical contrast above its surroundings (tuned)
HALF_MAX = 0.6  # a nucleus' mask: contrast above this share of its seed's contrast (tuned)
SEED_SPACING = 0.8  # seeds at least this many radii apart (tuned)
MEMBRANE_WEIGHT = 0.5  # membrane/cytoplasm DAB subtracted (with this weight) from the seeds' signal
MERGE_SADDLE = 0.95  # two seeds are one nucleus when the signal between them stays above this share of the
# lower one (tuned)
NUCLEAR_CLASS_SHARE = 0.65  # a seed's signal reaches this share of the overview's nuclear class OD (tuned;
# the largest share that keeps the tune images' Ki-67 index within 4.5 points: the floor drops pale negative nuclei)
MERGE_REACH = 2.0  # seeds up to this many radii apart are compared
# Nuclear-marker IHC (Ki-67, ER, PR; session 34). Its counterstain is light, so negative nuclei are pale and
# often out of focus beside dark brown ones, and the cytoplasm is clear (no eosin texture to mistake for a
# nucleus). There a pale nucleus keeps its seed: a LoG maximum is dropped only by a stronger *maximum* within
# NUCLEAR_DAB_SEED_REACH radii (not by a brighter slope of its neighbour's response, as peak_local_max's window
# does), seeds in one nucleus are joined at a lower saddle, and the per-candidate check (chosen on H&E-dominated
# images; on nuclear DAB it dropped nuclei) is not applied. Chosen on the tune half's twelve Ki-67 images: mean
# F1 0.822 -> 0.853, the same setting chosen with each image left out in turn (docs/analysis.md).
NUCLEAR_DAB_SEED_REACH = 1.8
NUCLEAR_DAB_MERGE_SADDLE = 0.85
CHECKS = ("rules", "learned")  # the per-candidate check: the hand rules (default) or learned (learned_check;
# not the default: it beat the rules on the tune half, image-out, but not on the held half, docs/analysis.md)


# The per-candidate check (:func:`not_a_nucleus`). A candidate is dropped when it is at once ragged, pale and
# small: a fragment of cytoplasm or stroma texture, an out-of-focus speck, or the lesser half of a large pale
# nucleus split in two. Any one of these alone also describes real nuclei (a pale vesicular nucleus, a small
# lymphocyte, a nucleus cut by its neighbour), so only all three together reject. Chosen on the tune half by
# benchmarks/fit_nucleus_check.py (grid; the mean F1 of the tune images, no image losing more than 0.01 recall).
CHECK_SOLIDITY = 0.88  # ragged: mask area / its convex hull's area below this
CHECK_OD_SHARE = 0.9  # pale: mean signal inside the mask below this share of the overview's nuclear-class OD
CHECK_AREA_SHARE = 0.6  # small: mask area below this share of the expected nucleus' area (pi r²)
# On H&E a second rule of the check reads colour: a candidate that is pale AND leans to eosin is cytoplasm or
# stroma texture, not a nucleus (the dominant false detection of the sparse tune fields, where pink-purple
# cytoplasm deconvolves into some hematoxylin; benchmarks/diagnose_nuclei_tune.py). Its hematoxylin share,
# H / (H + eosin) averaged inside it, is compared with that of the slide's nuclear-class pixels. Chosen on the
# tune half by benchmarks/fit_nucleus_check.py (same rule: best mean F1, no image losing > 0.01 recall).
COLOUR_OD_SHARE = 0.75  # pale: mean signal below this share of the nuclear-class OD
COLOUR_H_SHARE = 0.88  # eosin-leaning: hematoxylin share below this share of the nuclear-class pixels'
# Large nuclei on H&E (session 36). Where a field's nuclei are much larger than the expected diameter (large
# vesicular tumour nuclei), the detector at that diameter finds their chromatin clumps and the dark cytoplasm
# between them, and the field reads far better at LARGE_NUCLEI_FACTOR times the diameter. Two cues, both read on the
# overview, must agree (docs/analysis.md "Fresh set 6" and "Fresh set 7"):
# - at the larger diameter, nuclei of the usual size keep their size, so the median mask covers a small share of
#   the larger expected area, while large nuclei fill it (median_area_share > LARGE_NUCLEI_AREA_SHARE);
# - but masks also fill it where small nuclei are packed (a dense field of elongated nuclei), so the hematoxylin's
#   blobs must be large themselves: the scale-normalised LoG responds about as strongly at LARGE_NUCLEI_LOG_FACTOR
#   times the diameter as at the diameter (blob_scale_ratio >= LARGE_NUCLEI_LOG_RATIO; Lindeberg's scale selection).
# Chosen on the 38 tune H&E images: mean F1 0.721 at 7 µm, 0.754 with the area cue alone (set 6's look: a dense
# field crossed it, F1 0.68 -> 0.46), 0.763 with both; eight fields switch, none reads lower than at 7 µm, and the
# same eight switch for ratio cuts 0.8-0.9 and share cuts 0.48-0.52.
LARGE_NUCLEI_FACTOR = 12.0 / 7.0
LARGE_NUCLEI_AREA_SHARE = 0.5
LARGE_NUCLEI_LOG_FACTOR = 16.0 / 7.0
LARGE_NUCLEI_LOG_RATIO = 0.85
LARGE_NUCLEI_PROBE_PX = 1024  # the cue is read on at most this central square of the overview (its cost)
# Poor stain separation on H&E (session 38). Where the slide's nuclear class itself leans to eosin (its hematoxylin
# share, nuclear_class_h_share, below EOSIN_LEANING_CLASS_H_SHARE) and is pale (its mean OD, nuclear_class_level,
# below EOSIN_LEANING_CLASS_OD), deconvolution has not separated faint nuclei from the eosin (a blurred,
# eosin-dominated frozen section): cytoplasm is in the "nuclear" class and pulls its mean down, so the seeds' floor
# at NUCLEAR_CLASS_SHARE of that mean lets cytoplasm texture seed "nuclei" everywhere (3-4 detections per marked
# nucleus). There a seed must reach EOSIN_LEANING_CLASS_SHARE of the class mean. Chosen on every scored H&E image
# (docs/analysis.md "Fresh set 9"): the four fields of a TCGA frozen section read 0.42-0.48 and 0.23-0.32 OD, the 50
# other images 0.58 or more and 0.39 OD or more; each cut is the middle of its gap (both must hold: collagen-rich
# stroma leans to eosin too, 0.57-0.58, but its nuclei are dark); 1.1 was the best summed F1 of the four over
# 0.65-1.6. One slide chose it: the report says when it fires.
EOSIN_LEANING_CLASS_H_SHARE = 0.53
EOSIN_LEANING_CLASS_OD = 0.36
EOSIN_LEANING_CLASS_SHARE = 1.1
FEATURES = ("od_share", "area_share", "solidity", "h_share")  # what blob_features returns, in this order
NO_COLOUR = np.inf  # the h_share feature where no eosin is given (IHC, hematoxylin-only): never eosin-leaning


def hematoxylin_share(hematoxylin_od: np.ndarray, eosin_od: np.ndarray) -> np.ndarray:
    """H / (H + eosin) per pixel: near 1 in a nucleus, lower in pink-purple cytoplasm and stroma."""
    h = np.maximum(hematoxylin_od.astype(np.float32), 0.0)
    return h / (h + np.abs(eosin_od.astype(np.float32)) + 1e-3)


def blob_features(
    labels: np.ndarray,
    signal: np.ndarray,
    radius: float,
    nuclear_class_od: float,
    every_solidity: bool = False,
    h_share: np.ndarray | None = None,
    nuclear_h_share: float = 1.0,
) -> np.ndarray:
    """(n, len(FEATURES)) features of labels 1..n: mean signal / ``nuclear_class_od``, area / (pi r²), solidity,
    mean ``h_share`` (:func:`hematoxylin_share`) / ``nuclear_h_share`` (``NO_COLOUR`` without ``h_share``).
    The solidity (a convex hull per nucleus, the slow part) is measured only for candidates pale and small
    enough for the check to ask it (1 for the others), unless ``every_solidity``."""
    ids = np.arange(1, int(labels.max()) + 1)
    area = ndi.sum_labels(np.ones_like(signal), labels, ids)
    od_share = ndi.mean(signal, labels, ids) / max(nuclear_class_od, 1e-3)
    area_share = area / (np.pi * radius**2)
    solidity = np.ones(len(ids))
    asked = (
        np.ones(len(ids), bool)
        if every_solidity
        else (od_share < CHECK_OD_SHARE) & (area_share < CHECK_AREA_SHARE)
    )
    boxes = ndi.find_objects(labels)
    for k in np.flatnonzero(asked):
        if boxes[k] is not None:
            mask = labels[boxes[k]] == k + 1
            solidity[k] = area[k] / max(float(convex_hull_image(mask).sum()), 1.0)
    colour = (
        np.full(len(ids), NO_COLOUR)
        if h_share is None
        else ndi.mean(h_share, labels, ids) / max(nuclear_h_share, 1e-3)
    )
    return np.column_stack([od_share, area_share, solidity, colour]).astype(np.float32)


def not_a_nucleus(
    features: np.ndarray,
    solidity: float = CHECK_SOLIDITY,
    od_share: float = CHECK_OD_SHARE,
    area_share: float = CHECK_AREA_SHARE,
    colour_od_share: float = COLOUR_OD_SHARE,
    colour_h_share: float = COLOUR_H_SHARE,
) -> np.ndarray:
    """(n,) bool: candidates that are ragged, pale and small together (see ``CHECK_SOLIDITY``), or, on H&E,
    pale and eosin-leaning together (see ``COLOUR_OD_SHARE``)."""
    ragged = (features[:, 2] < solidity) & (features[:, 0] < od_share) & (features[:, 1] < area_share)
    eosin = (features[:, 0] < colour_od_share) & (features[:, 3] < colour_h_share)
    return ragged | eosin


def merge_seeds(
    smooth: np.ndarray, peaks: np.ndarray, radius_px: float, saddle_share: float = MERGE_SADDLE
) -> np.ndarray:
    """Seeds that lie in one nucleus: a textured or large nucleus (granular Ki-67, vesicular chromatin) has
    several LoG maxima with no valley between them, while touching nuclei have a dimmer rim between their
    centres. Of each group joined by straight lines that stay above ``saddle_share`` x the lower seed's
    signal, the brightest seed is kept."""
    if len(peaks) < 2 or saddle_share >= 1.0:
        return peaks
    pairs = cKDTree(peaks).query_pairs(MERGE_REACH * radius_px, output_type="ndarray")
    if not len(pairs):
        return peaks
    values = smooth[tuple(peaks.T)]
    steps = np.linspace(0.0, 1.0, max(int(np.ceil(MERGE_REACH * radius_px)), 3))[None, :, None]
    a, b = peaks[pairs[:, 0]][:, None, :], peaks[pairs[:, 1]][:, None, :]
    line = np.rint(a + steps * (b - a)).astype(np.intp)  # (pairs, steps, 2)
    saddle = smooth[line[..., 0], line[..., 1]].min(axis=1)
    joined = pairs[saddle >= saddle_share * np.minimum(values[pairs[:, 0]], values[pairs[:, 1]])]
    graph = coo_matrix((np.ones(len(joined)), (joined[:, 0], joined[:, 1])), shape=(len(peaks),) * 2)
    _, group = connected_components(graph, directed=False)
    brightest = np.full(group.max() + 1, -1)
    for k in np.argsort(values):  # ascending: the brightest seed of each group is written last
        brightest[group[k]] = k
    return peaks[np.sort(brightest)]


def strongest_maxima(response: np.ndarray, reach_px: int, threshold: float) -> np.ndarray:
    """(n, 2) row, col of the local maxima of ``response`` above ``threshold``, each dropped only when a stronger
    kept maximum lies closer than ``reach_px`` (greedy, strongest first)."""
    peaks = peak_local_max(response, min_distance=1, threshold_abs=threshold, exclude_border=False)
    if len(peaks) < 2:
        return peaks
    tree = cKDTree(peaks)
    keep, dropped = np.zeros(len(peaks), bool), np.zeros(len(peaks), bool)
    for i in np.argsort(-response[tuple(peaks.T)], kind="stable"):
        if not dropped[i]:
            keep[i] = True
            dropped[tree.query_ball_point(peaks[i], r=reach_px - 1e-9)] = True
    return peaks[keep]


def stain_signal(hematoxylin_od: np.ndarray, dab_od: np.ndarray | None, dab_compartment: str) -> np.ndarray:
    """The optical density in which nuclei are bright on this stain: H + DAB for a nuclear marker, else H."""
    check_compartment(dab_compartment)
    return nuclear_od(hematoxylin_od, dab_od, dab_compartment).astype(np.float32)


def log_response(signal: np.ndarray, radius_px: float) -> np.ndarray:
    """Max over scales of the scale-normalised LoG (-sigma² ∇²G), blobs of radius ~ ``radius_px`` positive."""
    best = np.full(signal.shape, -np.inf, np.float32)
    for f in RADIUS_FACTORS:
        sigma = max(radius_px * f / np.sqrt(2.0), 0.7)
        r = -(sigma**2) * ndi.gaussian_laplace(signal, sigma)
        np.maximum(best, r.astype(np.float32), out=best)
    return best


def local_contrast(smooth: np.ndarray, radius_px: float) -> np.ndarray:
    """Signal above its surroundings (white top-hat, window ~ five radii): eosin or DAB backgrounds drop out."""
    size = max(round(5 * radius_px), 3)
    return smooth - ndi.grey_opening(smooth, size=(size, size))


def median_area_share(labels: np.ndarray, diameter_px: float) -> float:
    """The median object's area over the expected nucleus' area (pi r²); 0 without objects."""
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return float(np.median(areas)) / (np.pi * (diameter_px / 2.0) ** 2) if areas.size else 0.0


def blob_scale_ratio(
    signal: np.ndarray, diameter_px: float, factor: float = LARGE_NUCLEI_LOG_FACTOR
) -> float:
    """How strongly the image's blobs answer a LoG ``factor`` times the expected diameter, against the diameter
    itself: the 90th percentile of the positive local maxima of the scale-normalised LoG (sigma = d / 2 sqrt 2) at
    each, as a ratio (about 1 or above for a field of blobs that large; 0 on a blank field)."""
    levels = []
    for d in (diameter_px, diameter_px * factor):
        sigma = d / (2.0 * np.sqrt(2.0))
        response = -(sigma**2) * ndi.gaussian_laplace(signal.astype(np.float32), sigma)
        peaks = (ndi.maximum_filter(response, size=max(3, int(2 * sigma))) == response) & (response > 0)
        levels.append(float(np.percentile(response[peaks], 90)) if peaks.any() else 0.0)
    return levels[1] / levels[0] if levels[0] > 0 else 0.0


def contrast_cut(hematoxylin_overview: np.ndarray, diameter_px: float) -> float:
    """The contrast a nucleus needs, from an overview of the whole area (so every tile cuts the same way): a
    share of the typical hematoxylin contrast, so faint (pale, out-of-focus) and dark slides both work."""
    h = hematoxylin_overview.astype(np.float32)
    if h.size == 0:
        return MIN_CONTRAST_OD
    radius = max(diameter_px / 2.0, 1.5)
    contrast = local_contrast(ndi.gaussian_filter(h, max(radius / 4.0, 0.5)), radius)
    return max(CONTRAST_SHARE * float(np.percentile(contrast, CONTRAST_PERCENTILE)), 0.01)


def _nuclear_class(
    hematoxylin_overview: np.ndarray, diameter_px: float, dab_overview: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(smoothed hematoxylin, mask of its Otsu upper class: the pixels Otsu calls nuclear; empty if none).
    ``dab_overview`` (nuclear DAB): only pixels whose smoothed DAB stays below the positivity cut-off count."""
    sigma = max(diameter_px / 8.0, 0.5)
    h = ndi.gaussian_filter(hematoxylin_overview.astype(np.float32), sigma)
    counted = np.ones(h.shape, bool)
    if dab_overview is not None:
        counted = ndi.gaussian_filter(dab_overview.astype(np.float32), sigma) < NUCLEAR_DAB_CUTOFF
    cut = otsu_threshold(h[counted]) if counted.any() else float("nan")
    if not np.isfinite(cut):
        return h, np.zeros(h.shape, bool)
    return h, counted & (h > cut)


def nuclear_class_level(
    hematoxylin_overview: np.ndarray, diameter_px: float, dab_overview: np.ndarray | None = None
) -> float:
    """The typical hematoxylin OD of a nucleus on this slide: the mean of Otsu's upper class of the smoothed
    hematoxylin of an overview (the pixels Otsu calls nuclear). Unlike a share of the Otsu cut itself, which
    falls towards the cytoplasm in a sparse field (few nuclear pixels, much pale tissue), the class mean stays
    near the nuclei's own OD; unlike a top percentile of the overview, it does not rise in a dense field.
    ``dab_overview``: give it for a nuclear marker. The class is then that of the DAB-negative pixels, the
    counterstain of the negative nuclei: dark brown nuclei also read as hematoxylin after deconvolution, and a
    field with many of them raised the class so far that its pale negative nuclei fell under the floor (a
    Ki-67 field read 54 % for 26 % marked)."""
    h, nuclear = _nuclear_class(hematoxylin_overview, diameter_px, dab_overview)
    return float(h[nuclear].mean()) if nuclear.any() else 0.0


def seed_floor_share(nuclear_h_share: float | None, nuclear_class_od: float) -> float:
    """The share of the nuclear class OD a seed must reach: ``NUCLEAR_CLASS_SHARE``, or on H&E whose nuclear class
    is pale and leans to eosin (poor stain separation, see ``EOSIN_LEANING_CLASS_H_SHARE``)
    ``EOSIN_LEANING_CLASS_SHARE``. ``nuclear_h_share``: None where no eosin is given (IHC, hematoxylin only)."""
    if (
        nuclear_h_share is not None
        and nuclear_h_share < EOSIN_LEANING_CLASS_H_SHARE
        and nuclear_class_od < EOSIN_LEANING_CLASS_OD
    ):
        return EOSIN_LEANING_CLASS_SHARE
    return NUCLEAR_CLASS_SHARE


def nuclear_class_h_share(
    hematoxylin_overview: np.ndarray, eosin_overview: np.ndarray, diameter_px: float
) -> float:
    """The typical hematoxylin share (:func:`hematoxylin_share`) of a nucleus on this H&E slide: its mean over
    the same nuclear-class pixels as :func:`nuclear_class_level` (1 where there are none)."""
    _, nuclear = _nuclear_class(hematoxylin_overview, diameter_px)
    if not nuclear.any():
        return 1.0
    return float(hematoxylin_share(hematoxylin_overview, eosin_overview)[nuclear].mean())


def segment_blobs(
    hematoxylin_od: np.ndarray,
    diameter_px: float,
    dab_od: np.ndarray | None = None,
    dab_compartment: str = "membrane",
    min_contrast_od: float | None = None,
    seed_log_od: float | None = None,
    nuclear_class_od: float | None = None,
    eosin_od: np.ndarray | None = None,
    nuclear_h_share: float | None = None,
    check: str = "rules",
) -> np.ndarray:
    """int32 nuclei labels. The cuts are optical-density contrasts against the surroundings (the white point is
    calibrated per slide), so every tile of a slide cuts the same way without an overview.
    ``nuclear_class_od``: :func:`nuclear_class_level` of an overview (without it, that of this array); a seed's
    signal must reach ``NUCLEAR_CLASS_SHARE`` of it (:func:`seed_floor_share`: more where an H&E slide's nuclear
    class is pale and leans to eosin), so the texture of eosin-rich stroma or of cytoplasm, which
    has local contrast but little hematoxylin, seeds no nucleus, in dense and sparse fields alike (on nuclear DAB
    the class is that of the DAB-negative pixels, see :func:`nuclear_class_level`, and the seeds are
    :func:`strongest_maxima`, joined at ``NUCLEAR_DAB_MERGE_SADDLE``, with no per-candidate check). Candidates
    that are ragged, pale and small together are dropped, and on H&E (``eosin_od``: the eosin OD, or the
    deconvolution's second channel, into which eosin falls) those pale and eosin-leaning together, against
    ``nuclear_h_share`` (:func:`nuclear_class_h_share` of an overview; without it, that of this array); see
    :func:`not_a_nucleus`.
    ``check``: "rules" (default): the hand rules above; "learned": on H&E, hematoxylin-only images and nuclear
    DAB, seeds reach down to the learned check's lower floor and spacing, and its network also judges the
    candidates (``learned_check.LearnedCheck``); with membrane or cytoplasmic DAB (which it was not trained
    on), the hand rules alone.
    """
    if check not in CHECKS:
        raise ValueError(f"the nucleus check must be one of {CHECKS}, not {check!r}")
    check_compartment(dab_compartment)
    learned = check == "learned" and (dab_od is None or dab_compartment == "nuclear")
    nuclear_dab = dab_is_nuclear(dab_od, dab_compartment)
    if nuclear_class_od is None:
        nuclear_class_od = nuclear_class_level(hematoxylin_od, diameter_px, dab_od if nuclear_dab else None)
    model = load_check() if learned else None
    if eosin_od is not None and nuclear_h_share is None:
        nuclear_h_share = nuclear_class_h_share(hematoxylin_od, eosin_od, diameter_px)
    labels, features = blob_candidates(
        hematoxylin_od,
        diameter_px,
        dab_od,
        dab_compartment,
        min_contrast_od,
        seed_log_od,
        nuclear_class_od,
        eosin_od,
        nuclear_h_share,
        nuclear_class_share=seed_floor_share(nuclear_h_share, nuclear_class_od)
        if model is None
        else model.floor,
        seed_spacing=SEED_SPACING if model is None else model.spacing,
        strongest_seeds=nuclear_dab and model is None,
    )
    if not len(features):
        return labels
    keep = np.zeros(len(features) + 1, bool)
    keep[1:] = True if nuclear_dab and model is None else ~not_a_nucleus(features)
    if model is not None:
        keep[1:] = _learned_keep(
            model, labels, keep[1:], hematoxylin_od, dab_od, eosin_od, nuclear_class_od, diameter_px
        )
    labels[~keep[labels]] = 0
    return relabel_sequential(labels)[0].astype(np.int32)


def _learned_keep(
    model: LearnedCheck,
    labels: np.ndarray,
    rules_keep: np.ndarray,
    hematoxylin_od: np.ndarray,
    dab_od: np.ndarray | None,
    eosin_od: np.ndarray | None,
    nuclear_class_od: float,
    diameter_px: float,
) -> np.ndarray:
    """The learned check's decision on candidates 1..n (``dab_od``, if given, is nuclear)."""
    signal = stain_signal(hematoxylin_od, dab_od, "nuclear")
    radius = max(diameter_px / 2.0, 1.5)
    smooth = ndi.gaussian_filter(signal, max(radius / 4.0, 0.5))
    ids = np.arange(1, len(rules_keep) + 1)
    peak = np.asarray(ndi.maximum(smooth, labels, ids))
    above_floor = peak >= NUCLEAR_CLASS_SHARE * nuclear_class_od
    second = dab_od if dab_od is not None else eosin_od
    centres = np.asarray(ndi.center_of_mass(labels > 0, labels, ids)).reshape(-1, 2)
    inner = judged(centres, labels.shape, diameter_px)
    asked = model.asked(rules_keep, inner)
    patches = candidate_patches(
        labels,
        signal,
        hematoxylin_od,
        second,
        nuclear_class_od,
        diameter_px,
        dab_od is not None,
        ids=ids[asked],
        centres=centres[asked],
    )
    keep = rules_keep & above_floor  # as without the network; the asked ones are decided by it
    keep[asked] = model.keep(patches, rules_keep[asked], above_floor[asked], np.ones(int(asked.sum()), bool))
    return keep


def blob_candidates(
    hematoxylin_od: np.ndarray,
    diameter_px: float,
    dab_od: np.ndarray | None = None,
    dab_compartment: str = "membrane",
    min_contrast_od: float | None = None,
    seed_log_od: float | None = None,
    nuclear_class_od: float | None = None,
    eosin_od: np.ndarray | None = None,
    nuclear_h_share: float | None = None,
    nuclear_class_share: float = NUCLEAR_CLASS_SHARE,
    seed_spacing: float = SEED_SPACING,
    strongest_seeds: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate nuclei before the per-blob check: int32 labels 1..n and their (n, len(FEATURES)) features
    (:func:`blob_features`). Arguments as :func:`segment_blobs`; ``nuclear_class_share`` and ``seed_spacing``
    (the seeds' floor and spacing, see ``NUCLEAR_CLASS_SHARE``, ``SEED_SPACING``) are lower for a check that
    sorts more candidates. ``strongest_seeds``: the nuclear-DAB seeding (``NUCLEAR_DAB_SEED_REACH``,
    ``NUCLEAR_DAB_MERGE_SADDLE``; ``seed_spacing`` is then unused)."""
    min_contrast_od = MIN_CONTRAST_OD if min_contrast_od is None else min_contrast_od
    seed_log_od = SEED_LOG_OD if seed_log_od is None else seed_log_od
    signal = stain_signal(hematoxylin_od, dab_od, dab_compartment)
    radius = max(diameter_px / 2.0, 1.5)
    markers = np.zeros(signal.shape, np.int32)
    no_features = np.zeros((0, len(FEATURES)), np.float32)
    if signal.size == 0 or float(signal.max()) <= min_contrast_od:
        return markers, no_features
    seeds_from = signal
    if dab_od is not None and dab_compartment != "nuclear":  # stained membranes: troughs between nuclei
        seeds_from = signal - MEMBRANE_WEIGHT * dab_od.astype(np.float32)
    response = log_response(seeds_from, radius)
    smooth = ndi.gaussian_filter(signal, max(radius / 4.0, 0.5))
    contrast = local_contrast(smooth, radius)
    if strongest_seeds:
        peaks = strongest_maxima(response, max(round(radius * NUCLEAR_DAB_SEED_REACH), 2), seed_log_od)
    else:
        peaks = peak_local_max(
            response,
            min_distance=max(round(radius * seed_spacing), 2),
            threshold_abs=seed_log_od,
            exclude_border=False,
        )
    if nuclear_class_od is None:
        nuclear_dab = dab_is_nuclear(dab_od, dab_compartment)
        nuclear_class_od = nuclear_class_level(hematoxylin_od, diameter_px, dab_od if nuclear_dab else None)
    if len(peaks):
        keep = contrast[tuple(peaks.T)] >= min_contrast_od
        keep &= smooth[tuple(peaks.T)] >= nuclear_class_share * nuclear_class_od
        peaks = peaks[keep]
    peaks = merge_seeds(smooth, peaks, radius, NUCLEAR_DAB_MERGE_SADDLE if strongest_seeds else MERGE_SADDLE)
    if not len(peaks):
        return markers, no_features
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    # a nucleus reaches at most ~1.5 radii from its seed, so a seed in a dense faint field stays one nucleus
    near = ndi.distance_transform_edt(markers == 0) <= 1.5 * radius
    labels = watershed(-smooth, markers, mask=near & (contrast >= HALF_MAX * min_contrast_od))
    # each nucleus keeps the pixels above HALF_MAX of its own seed's contrast (half-maximum outline)
    seed_contrast = np.zeros(len(peaks) + 1, np.float32)
    seed_contrast[1:] = contrast[tuple(peaks.T)]
    labels[contrast < HALF_MAX * seed_contrast[labels]] = 0
    labels = labels.astype(np.int32)
    if eosin_od is None:
        return labels, blob_features(labels, signal, radius, nuclear_class_od)
    if nuclear_h_share is None:
        nuclear_h_share = nuclear_class_h_share(hematoxylin_od, eosin_od, diameter_px)
    share = hematoxylin_share(hematoxylin_od, eosin_od)
    return labels, blob_features(
        labels, signal, radius, nuclear_class_od, h_share=share, nuclear_h_share=nuclear_h_share
    )
