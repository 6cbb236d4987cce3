"""A coarse start from keypoint matches: SIFT on both overviews, ratio test, RANSAC similarity.

The FFT search in :mod:`.coarse` scores how well the two density blobs overlap, which is blind when a large
part of one section is missing (the best overlap of a half section is anywhere inside the whole one:
measured on the kidney pair with the right 40 % removed, all of its top starts were wrong). Keypoints match
*structures* (vessels, tubules, edges of the section), so the part that is there still finds its place.
Grey level is used: measured on that torn kidney, SIFT on grey found 14-16 RANSAC inliers against 3-4 for
summed OD and a wrong model for hematoxylin. SIFT is rotation-invariant but not mirror-invariant, so the
mirror image is matched too. The start is one more candidate for the rigid stage, whose metric picks the
winner, so a wrong match costs nothing where the FFT search is right.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .coarse import Candidate
from .features import Overview

#: Lowe's ratio test: best descriptor distance below this share of the second best.
RATIO = 0.8
#: RANSAC reprojection threshold as a share of the overview's longest side.
RANSAC_SHARE = 0.01
#: Fewest RANSAC inliers for a start to count.
MIN_INLIERS = 8


def _grey(rgb: np.ndarray) -> np.ndarray:
    """Inverted grey level (tissue bright on dark glass), uint8."""
    return 255 - cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2GRAY)


def _apply(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ m[:2, :2].T + m[:2, 2]


def rigid_fit(src: np.ndarray, dst: np.ndarray, mirrored: bool) -> np.ndarray:
    """Least-squares rotation (times a mirror when ``mirrored``) and shift taking ``src`` to ``dst``
    (Kabsch), 3 x 3. No scale: consecutive sections share the physical scale, and a similarity fitted to a
    few matches on one part of a section got it 10 % wrong (torn kidney), which the rigid stage keeps."""
    cs, cd = src.mean(axis=0), dst.mean(axis=0)
    u, _, vt = np.linalg.svd((src - cs).T @ (dst - cd))
    target = -1.0 if mirrored else 1.0  # det of the result; the sign goes on the smallest singular value
    rot = vt.T @ np.diag([1.0, target * np.sign(np.linalg.det(vt.T @ u.T))]) @ u.T
    out = np.eye(3)
    out[:2, :2] = rot
    out[:2, 2] = cd - rot @ cs
    return out


def _px_to_physical(ov: Overview) -> np.ndarray:
    s = np.eye(3)
    s[0, 0], s[1, 1] = ov.spacing
    s[:2, 2] = ov.origin
    return s


def feature_start(
    fixed: Overview, moving: Overview, flips: tuple[bool, ...] = (False, True), max_keypoints: int = 4000
) -> Candidate | None:
    """A rigid start (rotation, shift, optionally mirrored) as a fixed -> moving physical map: RANSAC (a
    similarity, OpenCV) picks the SIFT matches that agree, then :func:`rigid_fit` fits them in physical
    units. The mirror side with more inliers wins; None when neither has ``MIN_INLIERS``. ``score`` is the
    inlier share of the ratio-test matches."""
    sift = cv2.SIFT.create(nfeatures=max_keypoints)
    a = _grey(fixed.rgb)
    ka, da = sift.detectAndCompute(a, None)
    if da is None or len(ka) < MIN_INLIERS:
        return None
    b = _grey(moving.rgb)
    threshold = RANSAC_SHARE * max(a.shape + b.shape)
    best: tuple[int, np.ndarray, np.ndarray, bool, float] | None = None
    for flipped in flips:
        bb = np.ascontiguousarray(b[:, ::-1]) if flipped else b
        kb, db = sift.detectAndCompute(bb, None)
        if db is None or len(kb) < MIN_INLIERS:
            continue
        pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(db, da, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
        if len(good) < MIN_INLIERS:
            continue
        pm = np.array([kb[g.queryIdx].pt for g in good], dtype=np.float64)
        pf = np.array([ka[g.trainIdx].pt for g in good], dtype=np.float64)
        model, inliers = cv2.estimateAffinePartial2D(
            pm, pf, ransacReprojThreshold=threshold, maxIters=5000, confidence=0.999
        )
        if model is None or inliers is None:
            continue
        keep = inliers.ravel().astype(bool)
        n = int(keep.sum())
        if n >= MIN_INLIERS and (best is None or n > best[0]):
            if flipped:  # back to the moving view's own px: x -> (w - 1) - x
                pm[:, 0] = (b.shape[1] - 1.0) - pm[:, 0]
            best = (
                n,
                _apply(_px_to_physical(moving), pm[keep]),
                _apply(_px_to_physical(fixed), pf[keep]),
                flipped,
                n / len(good),
            )
    if best is None:
        return None
    n, pm_phys, pf_phys, flipped, share = best
    fixed_to_moving = rigid_fit(pf_phys, pm_phys, mirrored=flipped)
    lin = (np.diag([-1.0, 1.0]) if flipped else np.eye(2)) @ fixed_to_moving[:2, :2]  # = rotation
    angle = math.degrees(math.atan2(lin[1, 0], lin[0, 0])) % 360.0
    return Candidate(angle, flipped, float(share), fixed_to_moving)
