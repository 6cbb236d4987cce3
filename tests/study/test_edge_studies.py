"""Legal but extreme studies all produce a report: 0 % and 100 %, one case, an unscored modality, all
"not assessable", constant scores (kappa undefined, reported as such), incomplete designs."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.study.analysis import analyze
from napari_virtual_ihc.study.report import write_report

CATS = ["0", "1+", "2+", "3+"]


def rows(readers: dict[str, dict[tuple[str, str], str]]) -> pd.DataFrame:
    out = []
    for reader, scores in readers.items():
        for (case, modality), score in scores.items():
            out.append(
                {
                    "reader_id": reader,
                    "case_id": case,
                    "modality": modality,
                    "image_id": None,
                    "score": score,
                    "confidence": 3,
                    "seconds": 10.0,
                    "comment": "",
                    "source": "test",
                }
            )
    return pd.DataFrame(out)


def pairs(real: list[str], virtual: list[str]) -> dict[tuple[str, str], str]:
    d = {}
    for i, (r, v) in enumerate(zip(real, virtual, strict=True)):
        d[(f"c{i:02d}", "real")] = r
        d[(f"c{i:02d}", "virtual")] = v
    return d


def test_the_failing_study_of_issue_21_gives_a_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """12 cases, two readers imported from CSV, every virtual score within one category of the real one:
    statsmodels' Wilson upper bound is 0.9999999999999999 < 1.0 and the error bar went negative."""
    lines = ["reader_id,case_id,modality,score,confidence"]
    for r, c in itertools.product(("p1", "p2"), range(12)):
        real = CATS[c % 4]
        virtual = CATS[min(3, c % 4 + c % 2)]
        lines += [f"{r},c{c},real,{real},4", f"{r},c{c},virtual,{virtual},3"]
    (tmp_path / "a.csv").write_text("\n".join(lines))
    assert proportion_confint(12, 12, method="wilson")[1] < 1.0  # the rounding that broke the plot
    assert main(["study", "import", str(tmp_path / "a.csv"), "--answers-dir", str(tmp_path / "ans")]) == 0
    out = tmp_path / "rep"
    code = main(
        ["study", "analyze", "--answers", str(tmp_path / "ans"), "--out", str(out), "--bootstrap", "50"]
    )
    assert code == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    (c1, _c2) = res["comparisons"]
    assert c1["within_one"]["k"] == c1["within_one"]["n"] == 12
    assert c1["within_one"]["high"] == 1.0 and c1["within_one"]["low"] < 1.0
    assert (out / "report.html").stat().st_size > 10_000 and (out / "summary.png").stat().st_size > 0


@pytest.mark.parametrize(
    "name, ratings, check",
    [
        (
            "0 % and 100 %",
            {"a": pairs(["0", "1+", "2+", "3+"], ["3+", "3+", "0", "0"]), "b": pairs(CATS, CATS)},
            lambda r: (
                (r["a"].accuracy.estimate, r["b"].accuracy.estimate) == (0.0, 1.0)
                and r["b"].accuracy.high == 1.0
                and r["a"].accuracy.low == 0.0
            ),
        ),
        (
            "a reader with a single case",
            {"a": pairs(["2+"], ["3+"]), "b": pairs(CATS, ["1+", "1+", "2+", "3+"])},
            lambda r: r["a"].n_pairs == 1 and math.isnan(r["a"].kappa_linear.low),
        ),
        (
            "all answers not assessable",
            {"a": pairs(["not_assessable"] * 3, ["not_assessable"] * 3)},
            lambda r: r["a"].n_pairs == 0 and r["a"].n_not_assessable == 3 and r["a"].accuracy.n == 0,
        ),
        (
            "constant score: kappa undefined",
            {"a": pairs(["2+"] * 5, ["2+"] * 5), "b": pairs(["2+"] * 5, ["2+"] * 5)},
            lambda r: (
                math.isnan(r["a"].kappa_quadratic.value)
                and r["a"].kappa_quadratic.note == "undefined: every score was the same"
                and r["a"].accuracy.estimate == 1.0
            ),
        ),
    ],
)
def test_edge_case_studies_write_a_report(name: str, ratings: dict, check, tmp_path: Path) -> None:
    df = rows(ratings)
    res = analyze(df, n_boot=30, seed=0)
    by_reader = {c.reader_id: c for c in res.comparisons}
    assert check(by_reader), name
    report = write_report(res, tmp_path / "report")
    html = report.read_text()
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", html)  # embedded plots may spell "nan" by chance
    assert "Virtual vs real" in html and "nan" not in text.replace("nanoseconds", "")
    json.loads((tmp_path / "report" / "results.json").read_text())  # strict JSON (no NaN)
    for f in ("summary.png", "confusion.png", "accuracy.png", "imrmc.csv"):
        assert (tmp_path / "report" / f).stat().st_size > 0
    if name.startswith("constant"):
        assert "undefined: every score was the same" in html  # said, not a crash or a bare nan
        (ir,) = [x for x in res.inter_reader if x.modality == "real"]
        assert math.isnan(ir.fleiss) and ir.note == "undefined: every score was the same"


def test_a_modality_nobody_scored_is_reported_empty(tmp_path: Path) -> None:
    df = rows({"a": pairs(CATS, CATS)})
    res = analyze(df, n_boot=0, modalities=["virtual", "virtual_asp"])
    asp = [c for c in res.comparisons if c.modality == "virtual_asp"]
    assert len(asp) == 1 and asp[0].n_pairs == 0 and asp[0].accuracy.n == 0
    html = write_report(res, tmp_path / "r").read_text()
    assert "virtual_asp" in html and "n/a (no case)" in html


def test_no_virtual_image_scored_at_all_still_reports(tmp_path: Path) -> None:
    df = rows({"a": {("c0", "real"): "2+", ("c1", "real"): "1+"}, "b": {("c0", "real"): "2+"}})
    res = analyze(df, n_boot=0)
    assert res.comparisons == []
    html = write_report(res, tmp_path / "r").read_text()
    assert "No virtual image was scored" in html


def test_incomplete_design_uses_what_there_is(tmp_path: Path) -> None:
    """Reader b skipped half the cases, c read only virtual images: every statistic uses the cases it can."""
    full = pairs(CATS * 2, ["0", "1+", "2+", "2+", "0", "1+", "3+", "3+"])
    skipped = {k: v for k, v in full.items() if int(k[0][1:]) % 2 == 0}
    only_virtual = {k: v for k, v in full.items() if k[1] == "virtual"}
    res = analyze(rows({"a": full, "b": skipped, "c": only_virtual}), n_boot=20)
    comps = {c.reader_id: c for c in res.comparisons}
    assert comps["a"].n_pairs == 8 and comps["b"].n_pairs == 4 and comps["c"].n_pairs == 0
    (virt,) = [x for x in res.inter_reader if x.modality == "virtual"]
    assert virt.n_cases == 4  # cases all three read
    assert {(p["reader_a"], p["reader_b"]): p["n"] for p in virt.pairwise} == {
        ("a", "b"): 4,
        ("a", "c"): 8,
        ("b", "c"): 4,
    }
    write_report(res, tmp_path / "r")
    imrmc = pd.read_csv(tmp_path / "r" / "imrmc.csv")
    assert len(imrmc) == 16 + 8 + 8  # missing reader x case rows are simply absent


def test_report_into_a_file_or_read_only_folder_is_a_clear_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "afile").write_text("x")
    lines = ["reader_id,case_id,modality,score", "p,c1,real,2+", "p,c1,virtual,2+"]
    (tmp_path / "a.csv").write_text("\n".join(lines))
    assert main(["study", "import", str(tmp_path / "a.csv"), "--answers-dir", str(tmp_path / "ans")]) == 0
    capsys.readouterr()
    assert (
        main(["study", "analyze", "--answers", str(tmp_path / "ans"), "--out", str(tmp_path / "afile")]) == 2
    )
    err = capsys.readouterr().err
    assert "is a file" in err and "Traceback" not in err
