"""Why the blob detector misses nuclei and counts non-nuclei, on the TUNE half of tests/data/nuclei-any-stain
only (the held half is never read): every missed mark and every false detection of the offline path on a tune
image with nuclear DAB or no DAB is put in one class, by the stage of ``nuclei.blobs`` that lost or made it.

Missed marks:
- ``merged``: the mark lies inside a detection that matched another mark (touching nuclei segmented as one);
- ``no peak``: no LoG maximum within one radius (none at all, or within SEED_SPACING radii of a higher LoG value
  on the slope of a brighter neighbour's response: ``peak_local_max``'s window drops it);
- ``low contrast`` / ``too pale``: its maximum failed the contrast cut / the nuclear-class floor (both: pale);
- ``saddle``: its seed was merged into a neighbour's by the saddle test;
- ``check``: its candidate was dropped by the per-candidate check;
- ``border``: within one diameter of the image border (these are still counted by the tests);
- ``off centre``: a detection's centre lies beyond one radius, or the matching gave it to another mark.
False detections:
- ``split``: within one diameter of a mark that another detection matched (half of a split nucleus, or texture
  next to a nucleus);
- ``off centre``: within one diameter of an unmatched mark;
- ``pale texture``: mean signal below the nuclear-class OD and no mark within one diameter;
- ``other``: the rest (dark, unmarked: missed by the marker, or a dark speck).

Run:  python benchmarks/diagnose_nuclei_tune.py [--png-dir /tmp/diag]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from nuclei import _validation as v

from napari_virtual_ihc.nuclei import blobs


def stages(case: v.Case) -> dict:
    """The blob detector's intermediate results on one tune image (the same calls as ``blob_candidates``)."""
    rgb = case.rgb()
    p = v.prepare(case)
    st, seg, dab, compartment, eosin, diameter = p.stains, p.seg, p.dab, p.compartment, p.eosin, p.diameter_px
    radius = max(diameter / 2, 1.5)
    signal = blobs.stain_signal(st["hematoxylin"], dab, compartment)
    response = blobs.log_response(signal, radius)
    smooth = ndi.gaussian_filter(signal, max(radius / 4.0, 0.5))
    contrast = blobs.local_contrast(smooth, radius)
    raw = peak_local_max(
        response,
        min_distance=max(round(radius * blobs.SEED_SPACING), 2),
        threshold_abs=blobs.SEED_LOG_OD,
        exclude_border=False,
    )
    ok_contrast = contrast[tuple(raw.T)] >= seg.contrast_od
    ok_floor = smooth[tuple(raw.T)] >= blobs.NUCLEAR_CLASS_SHARE * seg.nuclear_class_od
    passed = raw[ok_contrast & ok_floor]
    merged = blobs.merge_seeds(smooth, passed, radius)
    kw = dict(eosin_od=eosin, nuclear_h_share=seg.nuclear_h_share)
    cand, feats = blobs.blob_candidates(
        st["hematoxylin"], diameter, dab, compartment, seg.contrast_od, None, seg.nuclear_class_od, **kw
    )
    final = blobs.segment_blobs(
        st["hematoxylin"], diameter, dab, compartment, seg.contrast_od, None, seg.nuclear_class_od, **kw
    )
    return dict(
        rgb=rgb, signal=signal, smooth=smooth, contrast=contrast, raw=raw, ok_contrast=ok_contrast,
        ok_floor=ok_floor, merged=merged, cand=cand, feats=feats, final=final, radius=radius,
        nuclear_class_od=seg.nuclear_class_od, contrast_od=seg.contrast_od,
    )  # fmt: skip


def near(points_yx: np.ndarray, xy: np.ndarray, r: float) -> np.ndarray:
    """Index of the nearest of ``points_yx`` within r of (x, y), or -1."""
    if not len(points_yx):
        return -1
    d = np.hypot(points_yx[:, 1] - xy[0], points_yx[:, 0] - xy[1])
    k = int(np.argmin(d))
    return k if d[k] <= r else -1


def classify(case: v.Case, s: dict) -> tuple[Counter, Counter, list, list]:
    labels, r = s["final"], s["radius"]
    truth, _ = case.marks()
    truth = truth[v.counted(case, truth, labels.shape, r)]
    det = v.centroids_xy(labels)
    det_ids = np.arange(1, len(det) + 1)
    inside = v.counted(case, det, labels.shape, r)
    det, det_ids = det[inside], det_ids[inside]
    ti, di = v.match(truth, det, r)
    matched_t = np.zeros(len(truth), bool)
    matched_t[ti] = True
    matched_d = np.zeros(len(det), bool)
    matched_d[di] = True
    matched_label = set(det_ids[di].tolist())
    cand_det = v.centroids_xy(s["cand"])
    dropped = blobs.not_a_nucleus(s["feats"]) if len(s["feats"]) else np.zeros(0, bool)
    cand_kept = ~dropped
    h, w = labels.shape
    misses, falses = Counter(), Counter()
    miss_list, false_list = [], []
    for k in np.flatnonzero(~matched_t):
        x, y = truth[k]
        yi, xi = round(float(y)), round(float(x))
        lab = labels[min(yi, h - 1), min(xi, w - 1)]
        if min(x, y, w - 1 - x, h - 1 - y) < 2 * r:
            why = "border"
        elif lab and lab in matched_label:
            why = "merged"
        else:
            kraw = near(s["raw"], truth[k], r)
            if kraw < 0:
                why = "no peak"
            elif not s["ok_contrast"][kraw] and not s["ok_floor"][kraw]:
                why = "too pale (both)"
            elif not s["ok_floor"][kraw]:
                why = "too pale (floor)"
            elif not s["ok_contrast"][kraw]:
                why = "low contrast"
            elif near(s["merged"], truth[k], r) < 0:
                why = "saddle"
            else:
                kc = near(cand_det[:, ::-1], truth[k], r)
                why = "check" if kc >= 0 and not cand_kept[kc] else "off centre"
        misses[why] += 1
        miss_list.append((x, y, why))
    taken = truth[matched_t]
    for j in np.flatnonzero(~matched_d):
        x, y = det[j]
        lab = det_ids[j]
        od = float(s["signal"][labels == lab].mean()) / max(s["nuclear_class_od"], 1e-3)
        d_taken = np.hypot(*(taken - det[j]).T).min() if len(taken) else np.inf
        d_any = np.hypot(*(truth - det[j]).T).min() if len(truth) else np.inf
        if d_taken <= 2 * r:
            why = "split"
        elif d_any <= 2 * r:
            why = "off centre"
        elif od < 1.0:
            why = "pale texture"
        else:
            why = "other (dark)"
        falses[why] += 1
        false_list.append((x, y, why, od))
    return misses, falses, miss_list, false_list


def save_png(case: v.Case, s: dict, miss_list: list, false_list: list, out: Path) -> None:
    """The image x3 with the detections' outlines (green), missed marks (red x) and false detections (yellow o)."""
    from skimage.io import imsave
    from skimage.segmentation import find_boundaries
    from skimage.transform import rescale

    scale = 3 if max(s["rgb"].shape) < 400 else 2
    img = rescale(s["rgb"], scale, channel_axis=2, order=0, preserve_range=True).astype(np.uint8)
    edge = find_boundaries(np.kron(s["final"], np.ones((scale, scale), np.int32)), mode="inner")
    img[edge] = (0, 200, 0)
    truth, _ = case.marks()
    for x, y in truth:
        yy, xx = int(y * scale), int(x * scale)
        img[max(yy - 1, 0) : yy + 2, max(xx - 1, 0) : xx + 2] = (0, 0, 255)
    for x, y, *_ in miss_list:
        yy, xx = int(y * scale), int(x * scale)
        for d in range(-5, 6):
            for a, b in ((yy + d, xx + d), (yy + d, xx - d)):
                if 0 <= a < img.shape[0] and 0 <= b < img.shape[1]:
                    img[a, b] = (255, 0, 0)
    t = np.linspace(0, 2 * np.pi, 40)
    for x, y, *_ in false_list:
        for a, b in zip(
            (y * scale + 7 * np.sin(t)).astype(int), (x * scale + 7 * np.cos(t)).astype(int), strict=True
        ):
            if 0 <= a < img.shape[0] and 0 <= b < img.shape[1]:
                img[a, b] = (255, 255, 0)
    out.mkdir(parents=True, exist_ok=True)
    imsave(out / f"{case.name.replace('#', '_')}.png", img, check_contrast=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--png-dir", type=Path, default=None, help="write one overlay PNG per tune image here")
    a = ap.parse_args()
    cases = [c for c in v.CASES if c.split == "tune" and c.compartment in ("nuclear", "none")]
    all_m, all_f = Counter(), Counter()
    for case in cases:
        s = stages(case)
        m, f, ml, fl = classify(case, s)
        all_m.update(m)
        all_f.update(f)
        print(f"{case.name}: misses {dict(m)}; false {dict(f)}")
        if a.png_dir is not None:
            save_png(case, s, ml, fl, a.png_dir)
    print(f"ALL misses {dict(all_m)}\nALL false {dict(all_f)}")


if __name__ == "__main__":
    main()
