"""A reference standard: truth rows in imrmc.csv, accuracy per modality against it equal to sklearn and
statsmodels on the same data, for a HER2-score reference and a binary (FISH-like) one."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix
from statsmodels.stats.proportion import proportion_confint

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.study import CaseTableError, ReaderSession, load_bundle, load_key, read_case_table
from napari_virtual_ihc.study.analysis import analyze
from napari_virtual_ihc.study.ratings import collect_ratings
from napari_virtual_ihc.study.reference import parse_reference, reference_from_key

CATS = ["0", "1+", "2+", "3+"]


def table_with_reference(source_table: Path, folder: Path, n: int = 16) -> Path:
    """The first n cases of the 40-pair table with a reference column (clinical HER2 score)."""
    with source_table.open() as f:
        rows = list(csv.DictReader(f))[:n]
    out = folder / "cases_ref.csv"
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["case_id", "real", "virtual", "reference"])
        w.writeheader()
        for i, r in enumerate(rows):
            real = str(source_table.parent / r["real"])
            virtual = str(source_table.parent / r["virtual"])
            w.writerow({"case_id": r["case_id"], "real": real, "virtual": virtual, "reference": CATS[i % 4]})
    return out


def test_reference_column_gives_truth_rows_and_accuracy_equal_to_sklearn(
    source_table: Path, tmp_path: Path
) -> None:
    table = table_with_reference(source_table, tmp_path)
    bundle, key_path = tmp_path / "b", tmp_path / "b_key.json"
    assert (
        main(["study", "build", str(table), "--out", str(bundle), "--readers", "r1", "r2", "--min-gap", "4"])
        == 0
    )
    key = load_key(key_path)
    assert key["cases"]["case03"]["reference"] == "3+"
    assert "reference" not in (bundle / "manifest.json").read_text()  # never in what readers get
    rng = np.random.default_rng(0)
    for reader in ("r1", "r2"):
        s = ReaderSession(load_bundle(bundle), reader)
        for _ in range(s.n):
            info = key["images"][s.current.image]
            ref = CATS.index(key["cases"][info["case_id"]]["reference"])
            score = int(np.clip(ref + rng.choice([-1, 0, 0, 1]), 0, 3))
            s.pixels()
            s.answer(CATS[score], 3)
            s.next()
        s.close()
    out = tmp_path / "report"
    assert (
        main(
            [
                "study",
                "analyze",
                "--key",
                str(key_path),
                "--answers",
                str(bundle / "answers"),
                "--out",
                str(out),
                "--bootstrap",
                "40",
            ]
        )
        == 0
    )
    imrmc = pd.read_csv(out / "imrmc.csv")
    truth = imrmc[imrmc.readerID == "truth"]
    assert len(truth) == 16 and set(truth.modalityID) == {"truth"}
    assert set(truth.score) == {0, 1}  # iMRMC: 0 signal-absent, 1 signal-present (3+ here)
    assert truth.set_index("caseID").score.to_dict() == {f"case{i:02d}": int(i % 4 == 3) for i in range(16)}

    ratings = collect_ratings(key, [bundle / "answers"])
    res = analyze(ratings, n_boot=40, seed=0, reference=reference_from_key(key))
    assert len(res.vs_reference) == 4  # 2 readers x (real, virtual)
    reference = pd.Series({c: v["reference"] for c, v in key["cases"].items()})
    for comp in res.vs_reference:
        mine = ratings[(ratings.reader_id == comp.reader_id) & (ratings.modality == comp.modality)]
        got = mine.set_index("case_id").score.reindex(reference.index)
        k = int((got == reference).sum())
        assert comp.accuracy.k == k and comp.accuracy.estimate == pytest.approx(
            accuracy_score(reference, got)
        )
        lo, hi = proportion_confint(k, 16, method="wilson")
        assert (comp.accuracy.low, comp.accuracy.high) == (pytest.approx(lo), pytest.approx(hi))
        assert comp.kappa_quadratic.value == pytest.approx(
            cohen_kappa_score(reference, got, weights="quadratic", labels=CATS)
        )
        assert (comp.confusion == confusion_matrix(reference, got, labels=CATS)).all()
    html = (out / "report.html").read_text()
    assert "Against the reference standard" in html and (out / "reference.png").stat().st_size > 0


def test_binary_reference_sensitivity_specificity_equal_statsmodels(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    cases = [f"k{i}" for i in range(30)]
    fish = {c: ("amplified" if rng.random() < 0.4 else "not amplified") for c in cases}
    ref = parse_reference(fish, threshold="2+")
    assert ref is not None and ref.kind == "binary"
    rows = []
    for c in cases:
        for m in ("real", "virtual"):
            s = CATS[int(rng.integers(0, 4))]
            rows.append(
                {
                    "reader_id": "p",
                    "case_id": c,
                    "modality": m,
                    "score": s,
                    "image_id": None,
                    "confidence": 3,
                    "seconds": 1.0,
                    "comment": "",
                    "source": "t",
                }
            )
    ratings = pd.DataFrame(rows)
    res = analyze(ratings, n_boot=0, reference=ref)
    assert len(res.vs_truth) == 2
    truth = np.array([fish[c] == "amplified" for c in cases])
    for b in res.vs_truth:
        mine = ratings[ratings.modality == b.modality].set_index("case_id").score.reindex(cases)
        called = np.array([CATS.index(s) >= 2 for s in mine])
        (tn, fp), (fn, tp) = confusion_matrix(truth, called)
        assert (b.sensitivity.k, b.sensitivity.n) == (tp, tp + fn)
        assert (b.specificity.k, b.specificity.n) == (tn, tn + fp)
        lo, hi = proportion_confint(tp, tp + fn, method="wilson")
        assert (b.sensitivity.low, b.sensitivity.high) == (pytest.approx(lo), pytest.approx(hi))
        assert b.accuracy.estimate == pytest.approx(accuracy_score(truth, called))
        assert b.kappa.value == pytest.approx(cohen_kappa_score(truth, called))
    assert ref.truth().to_dict() == {c: int(fish[c] == "amplified") for c in sorted(cases)}


def test_mixed_reference_kinds_are_refused(tmp_path: Path, data_dir: Path) -> None:
    ihc = data_dir / "Rat-Kidney_PanCytokeratin.jpg"
    (tmp_path / "t.csv").write_text(
        f"case_id,real,virtual,reference\na,{ihc},{ihc},2+\nb,{ihc},{ihc},amplified\n"
    )
    with pytest.raises(CaseTableError, match="neither a HER2 score nor positive"):
        read_case_table(tmp_path / "t.csv")
