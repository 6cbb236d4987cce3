"""The algorithm as a reader: the overlays' HER2 estimate of every real and virtual image, as reader
``algorithm``, in the statistics and imrmc.csv only when asked for."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.slides import open_slide
from napari_virtual_ihc.stain import AnalysisSettings, analyze_slide
from napari_virtual_ihc.study import AnswerStore, ReaderSession, load_key

pytestmark = pytest.mark.slow  # the HER2 estimate of 4 + 2 crops takes ~20 s on the shared 2-core machine


def test_algorithm_reader_scores_every_image_and_joins_the_analysis_when_asked(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    real, virtual = data_dir / "Rat-Kidney_PanCytokeratin.jpg", data_dir / "Izd2-29-041-w35_proSPC.jpg"
    lines = ["case_id,real,virtual,x,y,w,h"] + [
        f"k{i},{real},{virtual},{150 * i},100,192,192" for i in range(2)
    ]
    (tmp_path / "cases.csv").write_text("\n".join(lines))
    bundle, key_path = tmp_path / "b", tmp_path / "b_key.json"
    assert (
        main(
            [
                "study",
                "build",
                str(tmp_path / "cases.csv"),
                "--out",
                str(bundle),
                "--readers",
                "p",
                "--min-gap",
                "2",
            ]
        )
        == 0
    )
    answers = bundle / "answers"
    s = ReaderSession(bundle, "p")
    for _ in range(s.n):
        s.pixels()
        s.answer("1+", 3)
        s.next()
    s.close()
    args = [
        "study",
        "algorithm",
        "--key",
        str(key_path),
        "--nuclei",
        "classical",
    ]  # into algorithm/ beside the key
    assert main(args) == 0
    assert "4 images scored" in capsys.readouterr().out
    assert main(args) == 0  # a re-run continues: nothing left to score
    assert "0 images scored" in capsys.readouterr().out

    key = load_key(key_path)
    assert not (answers / "algorithm.sqlite").exists()  # never among the readers' answers
    algorithm = tmp_path / "algorithm"
    with AnswerStore.open_existing(algorithm / "algorithm.sqlite") as store:
        got = store.current_answers()
    assert len(got) == 4
    for image_id, answer in sorted(got.items())[:2]:  # two checked against a direct call (each takes s)
        info = key["images"][image_id]
        with open_slide(info["source"]) as slide:
            est = analyze_slide(
                slide, AnalysisSettings(nuclei_method="classical"), region=tuple(info["region"])
            ).her2()
        expected = est.category if est.n_cells else "not_assessable"
        assert answer.score == expected and answer.source == "algorithm:stain.her2"
        assert json.loads(answer.comment)["n_cells"] == est.n_cells

    base = ["study", "analyze", "--key", str(key_path), "--answers", str(answers), str(algorithm)]
    base += ["--bootstrap", "0"]
    assert main([*base, "--out", str(tmp_path / "without")]) == 0
    assert set(pd.read_csv(tmp_path / "without" / "imrmc.csv").readerID) == {"p"}
    assert main([*base, "--out", str(tmp_path / "with"), "--include-algorithm"]) == 0
    imrmc = pd.read_csv(tmp_path / "with" / "imrmc.csv")
    scored = {k for k, a in got.items() if a.score != "not_assessable"}
    assert set(imrmc.readerID) == ({"p", "algorithm"} if scored else {"p"})
    assert (imrmc.readerID == "algorithm").sum() == len(scored)
    results = json.loads((tmp_path / "with" / "results.json").read_text())
    assert {c["reader_id"] for c in results["comparisons"]} == {"p", "algorithm"}


def test_a_nuclear_marker_is_refused_on_the_her2_scale(tmp_path):
    """Issue 32: `study algorithm --marker`: the study's scale is HER2's, a nuclear marker is refused clearly."""
    import pytest

    from napari_virtual_ihc.study import StudyError
    from napari_virtual_ihc.study.algorithm import score_study_images

    with pytest.raises(StudyError, match="'ki67' is not read on that scale"):
        score_study_images({"study_id": "s", "images": {}}, tmp_path, marker="ki67")
