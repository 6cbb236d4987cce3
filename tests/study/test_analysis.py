"""Statistics equal the reference libraries' values; a scripted study reproduces the BCI paper's Table 5."""

from __future__ import annotations

import base64
import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import bootstrap
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.contingency_tables import SquareTable, mcnemar
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa
from statsmodels.stats.proportion import proportion_confint

from napari_virtual_ihc.study import AnswerImportError, ReaderSession, load_key
from napari_virtual_ihc.study.analysis import analyze, compare, imrmc_table
from napari_virtual_ihc.study.importer import import_answers_csv
from napari_virtual_ihc.study.ratings import collect_ratings
from napari_virtual_ihc.study.report import write_report

CATS = ["0", "1+", "2+", "3+"]


def random_ratings(
    seed: int = 3, n_cases: int = 50, readers: tuple[str, ...] = ("r1", "r2", "r3")
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, n_cases)
    rows = []
    for r in readers:
        for c in range(n_cases):
            real = int(np.clip(truth[c] + rng.choice([-1, 0, 0, 0, 1]), 0, 3))
            virt = int(np.clip(truth[c] + rng.choice([-2, -1, 0, 0, 1]), 0, 3))
            for modality, s in (("real", real), ("virtual", virt)):
                rows.append(
                    {
                        "reader_id": r,
                        "case_id": f"c{c:03d}",
                        "modality": modality,
                        "score": CATS[s],
                        "confidence": 3,
                        "seconds": float(rng.uniform(5, 60)),
                        "comment": "",
                        "source": "test",
                        "image_id": None,
                    }
                )
    rows[4]["score"] = "not_assessable"  # r1 could not assess the real image of c002
    return pd.DataFrame(rows)


def test_every_statistic_equals_the_reference_library() -> None:
    ratings = random_ratings()
    res = analyze(ratings, n_boot=150, seed=11)
    assert len(res.comparisons) == 3
    for comp in res.comparisons:
        mine = ratings[ratings.reader_id == comp.reader_id]
        wide = mine.pivot(index="case_id", columns="modality", values="score")
        wide = wide[(wide != "not_assessable").all(axis=1)]
        real, virt = wide["real"].to_numpy(), wide["virtual"].to_numpy()
        n = len(real)
        assert comp.n_pairs == n
        k = int((real == virt).sum())
        lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert (comp.accuracy.k, comp.accuracy.low, comp.accuracy.high) == (
            k,
            pytest.approx(lo),
            pytest.approx(hi),
        )
        ri = np.array([CATS.index(s) for s in real])
        vi = np.array([CATS.index(s) for s in virt])
        w1 = int((np.abs(ri - vi) <= 1).sum())
        lo1, hi1 = proportion_confint(w1, n, method="wilson")
        assert comp.within_one.high == pytest.approx(hi1)
        assert comp.within_one.k == w1 and comp.within_one.low == pytest.approx(lo1)
        for weights, est in (("linear", comp.kappa_linear), ("quadratic", comp.kappa_quadratic)):
            ref = cohen_kappa_score(real, virt, weights=weights, labels=CATS)
            assert est.value == pytest.approx(ref, abs=1e-12)
            boot = bootstrap(
                (ri, vi),
                lambda a, b, w=weights: cohen_kappa_score(a, b, weights=w, labels=[0, 1, 2, 3]),
                paired=True,
                vectorized=False,
                n_resamples=150,
                method="percentile",
                rng=np.random.default_rng(11),
            )
            assert (est.low, est.high) == (
                pytest.approx(boot.confidence_interval.low),
                pytest.approx(boot.confidence_interval.high),
            )
            assert est.low < est.value < est.high
        table = pd.crosstab(pd.Categorical(real, CATS), pd.Categorical(virt, CATS), dropna=False).to_numpy()
        assert (comp.confusion == table).all()
        for cut, test in (("3+", comp.mcnemar_3plus), ("1+", comp.mcnemar_0)):
            a, b = ri >= CATS.index(cut), vi >= CATS.index(cut)
            t2 = np.array([[np.sum(~a & ~b), np.sum(~a & b)], [np.sum(a & ~b), np.sum(a & b)]])
            ref = mcnemar(t2, exact=True)
            assert test.pvalue == pytest.approx(ref.pvalue) and test.statistic == pytest.approx(ref.statistic)
        sm = SquareTable(table, shift_zeros=False).homogeneity(method="stuart_maxwell")
        assert comp.stuart_maxwell.statistic == pytest.approx(sm.statistic)
        assert comp.stuart_maxwell.pvalue == pytest.approx(sm.pvalue)
    # inter-reader agreement on the real images
    (real_ir,) = [x for x in res.inter_reader if x.modality == "real"]
    rr = ratings[(ratings.modality == "real") & (ratings.score != "not_assessable")]
    wide = rr.pivot(index="case_id", columns="reader_id", values="score").dropna()
    idx = wide.map(CATS.index).to_numpy()
    assert real_ir.fleiss == pytest.approx(fleiss_kappa(aggregate_raters(idx, n_cat=4)[0]))
    assert real_ir.n_cases == len(wide) == 49
    # pairwise kappas use every case both readers of the pair scored (incomplete designs lose less)
    all_wide = rr.pivot(index="case_id", columns="reader_id", values="score")
    for pair, (i, j) in zip(real_ir.pairwise, itertools.combinations(range(3), 2), strict=True):
        both = all_wide.iloc[:, [i, j]].dropna()
        assert pair["n"] == len(both) == (49 if i == 0 else 50)
        assert pair["kappa_quadratic"] == pytest.approx(
            cohen_kappa_score(both.iloc[:, 0], both.iloc[:, 1], weights="quadratic", labels=CATS)
        )
    # seeded: the same seed gives the same CI, another seed another one
    again = compare(ratings, CATS, "r1", "virtual", n_boot=150, seed=11).kappa_linear
    other = compare(ratings, CATS, "r1", "virtual", n_boot=150, seed=12).kappa_linear
    assert again == res.comparisons[0].kappa_linear and other != again
    # time per case
    t = res.timing.set_index(["reader_id", "modality"])
    ref_median = ratings.groupby(["reader_id", "modality"]).seconds.median()
    assert np.allclose(t.median_s.sort_index(), ref_median.sort_index())


def scripted_answers(bundle_dir: Path, key_path: Path, answers: Path, matches: dict[str, int]) -> None:
    """Readers score every case of the bundle through ReaderSession; the virtual version of the first
    ``matches[reader]`` cases gets the real one's score, the others a different one."""
    key = load_key(key_path)
    for reader, n_same in matches.items():
        s = ReaderSession(bundle_dir, reader, answers_dir=answers)
        for _ in range(s.n):
            info = key["images"][s.current.image]
            case = int(info["case_id"][4:])
            real = CATS[case % 4]
            score = real if info["modality"] == "real" or case < n_same else CATS[(case + 1 + case // 8) % 4]
            if score == real and info["modality"] != "real" and case >= n_same:
                score = CATS[(case + 2) % 4]
            s.add_active_time(10.0 + case % 7 + (5 if info["modality"] != "real" else 0))
            s.pixels()  # the case is on screen before it is scored
            s.answer(score, 1 + case % 5)
            s.next()
        s.close()


def test_scripted_study_reproduces_bci_table_5_and_writes_the_report(
    built_study: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle_dir, key_path = built_study
    answers = tmp_path / "answers"
    scripted_answers(bundle_dir, key_path, answers, {"alice": 15, "bob": 16})
    ratings = collect_ratings(load_key(key_path), [answers])
    assert len(ratings) == 160
    res = analyze(ratings, n_boot=200, seed=0)
    acc = {c.reader_id: c.accuracy for c in res.comparisons}
    assert (acc["alice"].k, acc["alice"].n) == (15, 40) and acc["alice"].estimate == 0.375
    assert (acc["bob"].k, acc["bob"].n) == (16, 40) and acc["bob"].estimate == 0.40
    assert (acc["alice"].low, acc["alice"].high) == (
        pytest.approx(0.2422, abs=1e-4),
        pytest.approx(0.5297, abs=1e-4),
    )
    assert (acc["bob"].low, acc["bob"].high) == (
        pytest.approx(0.2635, abs=1e-4),
        pytest.approx(0.5540, abs=1e-4),
    )
    # both readers scored the real images identically: perfect inter-reader agreement on real
    (real_ir,) = [x for x in res.inter_reader if x.modality == "real"]
    assert real_ir.fleiss == pytest.approx(1.0)
    # active time per case came from the store (virtual took 5 s longer in this script)
    t = res.timing.set_index(["reader_id", "modality"]).mean_s
    assert t[("alice", "virtual")] - t[("alice", "real")] == pytest.approx(5.0)

    report = write_report(res, tmp_path / "report")
    html = report.read_text()
    assert "15/40 = 37.5 % (24.2–53.0)" in html and "16/40 = 40.0 % (26.3–55.4)" in html
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(pngs) == 4 and all(base64.b64decode(p).startswith(b"\x89PNG") for p in pngs)
    assert "src='http" not in html and "<script" not in html  # self-contained
    for f in ("summary.png", "confusion.png", "accuracy.png", "timing.png", "ratings.csv", "results.json"):
        assert (tmp_path / "report" / f).stat().st_size > 0
    imrmc = pd.read_csv(tmp_path / "report" / "imrmc.csv")
    assert list(imrmc.columns) == ["readerID", "caseID", "modalityID", "score"]
    assert len(imrmc) == 160 and set(imrmc.modalityID) == {"real", "virtual"}
    assert imrmc_table(ratings).score.isin([0, 1, 2, 3]).all()


def test_import_from_glass_csv(tmp_path: Path) -> None:
    rows = ["reader_id,case_id,modality,score,confidence,seconds"]
    for r, c in itertools.product(("p1", "p2"), range(40)):
        real = CATS[c % 4]
        same = c < (15 if r == "p1" else 16)
        rows.append(f"{r},c{c},real,{real},4,30")
        rows.append(f"{r},c{c},virtual,{real if same else CATS[(c + 1) % 4]},3,42.5")
    (tmp_path / "glass.csv").write_text("\n".join(rows))
    assert import_answers_csv(tmp_path / "glass.csv", tmp_path / "answers") == 160
    ratings = collect_ratings(None, [tmp_path / "answers"])
    res = analyze(ratings, n_boot=0)
    assert sorted((c.reader_id, c.accuracy.k) for c in res.comparisons) == [("p1", 15), ("p2", 16)]
    assert ratings.seconds.max() == 42.5
    # a bad row refuses the whole file and writes nothing
    (tmp_path / "bad.csv").write_text("reader_id,case_id,modality,score\nq,c1,real,2+\nq,c2,real,7+\n")
    with pytest.raises(AnswerImportError, match=r"bad\.csv:3"):
        import_answers_csv(tmp_path / "bad.csv", tmp_path / "answers2")
    assert not (tmp_path / "answers2").exists()
