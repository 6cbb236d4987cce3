"""`virtual-ihc study build|status|import|analyze` end to end, plus H&E context and slide regions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.study import CaseTableError, ReaderSession, load_bundle, load_key, read_case_table


def test_cli_build_status_import_analyze(
    source_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bundle, key = tmp_path / "bundle", tmp_path / "coordinator" / "key.json"
    assert (
        main(
            [
                "study",
                "build",
                str(source_table),
                "--out",
                str(bundle),
                "--key",
                str(key),
                "--n-readers",
                "2",
                "--seed",
                "9",
                "--min-gap",
                "15",
            ]
        )
        == 0
    )
    assert len(load_bundle(bundle).images) == 80 and load_key(key)["seed"] == 9
    assert main(["study", "status", str(bundle)]) == 0
    assert "reader-1: 0 of 80 answered" in capsys.readouterr().out

    # answers: reader-1 through a session, reader-2 from a CSV keyed by bundle image IDs
    s = ReaderSession(bundle, "reader-1")
    for _ in range(10):
        s.pixels()  # the case is on screen before it is scored
        s.answer("2+", 3)
        s.next()
    s.close()
    images = load_key(key)["images"]
    rows = ["reader_id,image_id,score,confidence,comment"]
    rows += [f"reader-2,{i},{'3+' if v['modality'] == 'real' else '2+'},4,glass" for i, v in images.items()]
    (tmp_path / "r2.csv").write_text("\n".join(rows))
    assert (
        main(
            [
                "study",
                "import",
                str(tmp_path / "r2.csv"),
                "--answers-dir",
                str(bundle / "answers"),
                "--key",
                str(key),
            ]
        )
        == 0
    )
    assert main(["study", "status", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "reader-1: 10 of 80 answered" in out and "reader-2: 80 of 80 answered" in out

    assert (
        main(
            [
                "study",
                "analyze",
                "--key",
                str(key),
                "--answers",
                str(bundle / "answers"),
                "--out",
                str(tmp_path / "report"),
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "reader-2 virtual: accuracy 0/40 = 0.0 %" in out
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert {c["reader_id"] for c in results["comparisons"]} == {"reader-1", "reader-2"}
    assert (tmp_path / "report" / "report.html").stat().st_size > 10_000


def test_cli_reports_bad_input_cleanly(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "t.csv").write_text("case_id,real\nc1,missing.png\n")
    assert (
        main(["study", "build", str(tmp_path / "t.csv"), "--out", str(tmp_path / "b"), "--readers", "a"]) == 2
    )
    assert "virtual" in capsys.readouterr().err
    assert (
        main(["study", "analyze", "--answers", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    )
    assert "neither an answer store" in capsys.readouterr().err


def test_tsv_with_he_context_and_region(data_dir: Path, tmp_path: Path) -> None:
    ihc, he = data_dir / "Rat-Kidney_PanCytokeratin.jpg", data_dir / "Rat-Kidney_HE.jpg"
    lines = ["case_id\treal\tvirtual_modelA\tvirtual_modelB\the\tx\ty\tw\th"]
    lines += [f"k{i}\t{ihc}\t{ihc}\t{ihc}\t{he}\t{40 * i}\t30\t48\t32" for i in range(4)]
    (tmp_path / "cases.tsv").write_text("\n".join(lines))
    cases = read_case_table(tmp_path / "cases.tsv")
    assert cases[1].versions["virtual_modelB"].region == (40, 30, 48, 32)
    assert cases[0].context is not None
    assert (
        main(
            [
                "study",
                "build",
                str(tmp_path / "cases.tsv"),
                "--out",
                str(tmp_path / "b"),
                "--readers",
                "r",
                "--min-gap",
                "4",
            ]
        )
        == 0
    )
    bundle = load_bundle(tmp_path / "b")
    assert len(bundle.images) == 4 * 3 * 2  # 3 versions, each with its own H&E copy
    s = ReaderSession(bundle, "r", answers_dir=tmp_path / "a")
    assert s.n == 12 and s.pixels().shape == (32, 48, 3) and s.context_pixels().shape == (32, 48, 3)
    mods = {v["modality"] for v in load_key(tmp_path / "b_key.json")["images"].values()}
    assert mods == {"real", "virtual_modelA", "virtual_modelB", "he"}
    (tmp_path / "bad.tsv").write_text("case_id\treal\tvirtual\tx\ty\nk\ta\tb\t1\t2\n")
    with pytest.raises(CaseTableError, match="x, y, w, h"):
        read_case_table(tmp_path / "bad.tsv")
