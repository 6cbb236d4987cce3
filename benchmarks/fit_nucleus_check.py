"""Re-choose the blob detector's per-candidate check on the TUNE half of tests/data/nuclei-any-stain, and print
the constants to write into blobs.py. The check has two rules (``nuclei.blobs.not_a_nucleus``): a candidate
that is ragged, pale and small together is no nucleus (``CHECK_SOLIDITY``, ``CHECK_OD_SHARE``,
``CHECK_AREA_SHARE``), nor, on H&E, one that is pale and leans to eosin together (``COLOUR_OD_SHARE``,
``COLOUR_H_SHARE``). They are chosen in that order: the first with no colour rule (as s4n32 chose it), the
second given the first.

Every candidate of ``blobs.blob_candidates`` on a tune image that the blob path runs on (nuclear DAB or no DAB)
is kept or dropped by each rule of a grid; the kept ones are matched to the marks (the tests' one-to-one
matching within half a diameter). The rule chosen maximises the tune images' mean F1 (each image weighs the
same) while no image loses more than ``--max-recall-loss`` of the recall it has without the check: the check
is to drop what is not a nucleus, not to trade found nuclei for precision. A leave-one-image-out estimate
(each tune image scored by the rule chosen on the others) is printed beside the fit's own figures. The held
half is never read.

Run:  python benchmarks/fit_nucleus_check.py [--max-recall-loss 0.01]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from nuclei import _validation as v

from napari_virtual_ihc.nuclei import blobs

NO_COLOUR_RULE = (0.0, 0.0)  # colour od share, colour h share: drops nothing
COLOUR_OD = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4, np.inf)
COLOUR_H = tuple(np.round(np.arange(0.80, 1.01, 0.02), 2))
SOLIDITY = (*np.round(np.arange(0.70, 0.99, 0.02), 2), 1.01)
OD_SHARE = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.1, np.inf)
AREA_SHARE = (0.2, 0.35, 0.5, 0.6, 0.75, 1.0, 1.35, np.inf)

Candidates = tuple[np.ndarray, np.ndarray, np.ndarray, float]  # features, centres, counted marks, radius
Rule = tuple[float, float, float, float, float]  # solidity, od share, area share, colour od, colour h share


def candidates(case: v.Case) -> Candidates:
    """A tune image's counted candidates (features, centres), its counted marks and the matching radius."""
    p = v.prepare(case)
    stains, seg, dab, compartment, eosin, diameter = (
        p.stains,
        p.seg,
        p.dab,
        p.compartment,
        p.eosin,
        p.diameter_px,
    )
    labels, _ = blobs.blob_candidates(
        stains["hematoxylin"],
        diameter,
        dab,
        compartment,
        min_contrast_od=seg.contrast_od,
        nuclear_class_od=seg.nuclear_class_od,
    )
    signal = blobs.stain_signal(stains["hematoxylin"], dab, compartment)
    share = None if eosin is None else blobs.hematoxylin_share(stains["hematoxylin"], eosin)
    features = blobs.blob_features(
        labels,
        signal,
        diameter / 2,
        seg.nuclear_class_od,
        every_solidity=True,
        h_share=share,
        nuclear_h_share=seg.nuclear_h_share or 1.0,
    )
    truth, _ = case.marks()
    truth = truth[v.counted(case, truth, labels.shape, diameter / 2)]
    det = v.centroids_xy(labels)
    inside = v.counted(case, det, labels.shape, diameter / 2)
    return features[inside], det[inside], truth, diameter / 2


def scores(data: list[Candidates], rule: Rule | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: F1, recall, precision with the rule's check (None: no check)."""
    f1, recall, precision = [], [], []
    for features, det, truth, radius in data:
        keep = np.ones(len(det), bool) if rule is None else ~blobs.not_a_nucleus(features, *rule)
        tp = len(v.match(truth, det[keep], radius)[0])
        f1.append(2 * tp / max(len(truth) + int(keep.sum()), 1))
        recall.append(tp / max(len(truth), 1))
        precision.append(tp / max(int(keep.sum()), 1))
    return np.array(f1), np.array(recall), np.array(precision)


def _best(
    data: list[Candidates], rules: list[Rule], start: Rule | None, max_recall_loss: float
) -> Rule | None:
    """Of ``rules``, the one with the best mean F1 above ``start``'s that keeps every image's recall within
    ``max_recall_loss`` of the recall without any check (``start`` if none)."""
    _, recall_none, _ = scores(data, None)
    best, best_f1 = start, float(scores(data, start)[0].mean())
    for rule in rules:
        f1, recall, _ = scores(data, rule)
        if (recall_none - recall).max() <= max_recall_loss + 1e-9 and f1.mean() > best_f1 + 1e-9:
            best, best_f1 = rule, float(f1.mean())
    return best


def choose(data: list[Candidates], max_recall_loss: float, colour: bool = True) -> Rule | None:
    """The ragged rule of the grid (no colour rule), then, given it, the colour rule (``colour``)."""
    ragged = [(*r, *NO_COLOUR_RULE) for r in itertools.product(SOLIDITY, OD_SHARE, AREA_SHARE)]
    first = _best(data, ragged, None, max_recall_loss)
    if not colour:
        return first
    base = first[:3] if first is not None else (0.0, 0.0, 0.0)
    return _best(data, [(*base, *c) for c in itertools.product(COLOUR_OD, COLOUR_H)], first, max_recall_loss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-recall-loss", type=float, default=0.01, help="most recall one tune image may lose")
    ap.add_argument("--no-colour", action="store_true", help="choose the ragged rule only (as s4n32 did)")
    a = ap.parse_args()
    cases = [c for c in v.CASES if c.split == "tune" and c.compartment in ("nuclear", "none")]
    data = [candidates(c) for c in cases]
    rule = choose(data, a.max_recall_loss, not a.no_colour)
    f1_none, r_none, p_none = scores(data, None)
    f1_rule, r_rule, p_rule = scores(data, rule)
    loo = [
        scores([data[k]], choose(data[:k] + data[k + 1 :], a.max_recall_loss, not a.no_colour))[0][0]
        for k in range(len(data))
    ]
    print(f"{'image':28s} cand  R / P no check -> with the rule   F1 no check / rule / leave-one-image-out")
    for k, case in enumerate(cases):
        print(
            f"{case.name:28s} {len(data[k][1]):4d}  {r_none[k]:.2f} / {p_none[k]:.2f} -> {r_rule[k]:.2f} / "
            f"{p_rule[k]:.2f}          {f1_none[k]:.3f} / {f1_rule[k]:.3f} / {loo[k]:.3f}"
        )
    print(f"mean F1: {f1_none.mean():.3f} / {f1_rule.mean():.3f} / {np.mean(loo):.3f}")
    if rule is None:
        print("no rule of the grid raises the mean F1 within the recall limit: no check")
    else:
        names = ("CHECK_SOLIDITY", "CHECK_OD_SHARE", "CHECK_AREA_SHARE", "COLOUR_OD_SHARE", "COLOUR_H_SHARE")
        print("\n".join(f"{n} = {float(x)}" for n, x in zip(names, rule, strict=True)))


if __name__ == "__main__":
    main()
