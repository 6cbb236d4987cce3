"""Issue 29 items 7 and 8 (and the transform.json minors): `register`, `compare` and `pairs` refuse bad
requests with a message before any work or allocation, never with a traceback. Each test failed before
its fix."""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.registration import RegistrationError, SlideTransform
from napari_virtual_ihc.registration.transform import SlideRecord
from napari_virtual_ihc.slides import open_slide

from .read_only import read_only_tmpfs

FIXED, MOVING = "Rat-Kidney_HE.jpg", "Rat-Kidney_PanCytokeratin.jpg"


@pytest.fixture
def pair(tmp_path: Path, data_dir: Path) -> tuple[Path, Path, Path]:
    """(H&E, IHC, transform.json): an identity transform recorded for the real kidney pair (no optimiser)."""
    he, ihc = tmp_path / FIXED, tmp_path / MOVING
    shutil.copy(data_dir / FIXED, he)
    shutil.copy(data_dir / MOVING, ihc)
    with open_slide(he) as f, open_slide(ihc) as m:
        t = SlideTransform(np.eye(3), SlideRecord.of(f, (1.0, 1.0)), SlideRecord.of(m, (1.0, 1.0)))
    return he, ihc, t.save(tmp_path / "t" / "transform.json")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- item 7: pairs checks the memory a tile needs before allocating it --------------------------------
@pytest.mark.parametrize("size", [16000, 100000])
def test_7_pairs_refuses_a_tile_larger_than_memory_before_allocating(
    pair: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], size: int
) -> None:
    he, ihc, t = pair
    before = peak_rss_mb()
    code, err = run(
        ["pairs", he, ihc, "--transform", t, "--out", tmp_path / "p", "--size", size, "--downsample", 1],
        capsys,
    )
    assert code == 2
    assert "--size" in err and str(size) in err and "GiB" in err, err
    assert peak_rss_mb() - before < 200  # nothing of the 3-80 GiB was allocated
    assert not (tmp_path / "p" / "HE").exists()


# --- item 8: messages instead of tracebacks -------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (2, 500)])
def test_8_register_refuses_too_small_images_up_front(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str], shape: tuple[int, int]
) -> None:
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.full((*shape, 3), 128, np.uint8)).save(tiny)
    code, err = run(["register", data_dir / FIXED, tiny, "--out", tmp_path / "r"], capsys)
    assert code == 2 and "tiny.png" in err and "too small" in err, err
    code, err = run(["register", tiny, data_dir / MOVING, "--out", tmp_path / "r"], capsys)
    assert code == 2 and "tiny.png" in err and "too small" in err, err
    assert not (tmp_path / "r").exists()


def _fake_work(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record calls to the registration, comparison and pair cutting (any call is work done too early)."""
    import napari_virtual_ihc.registration as registration
    import napari_virtual_ihc.registration.compare as compare
    import napari_virtual_ihc.registration.pairs as pairs

    calls: list[Any] = []
    for module, name in ((registration, "register"), (compare, "compare"), (pairs, "iter_pairs")):
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: calls.append(_n))
    return calls


def _commands(he: Path, ihc: Path, t: Path, out: Path) -> list[list[Any]]:
    return [
        ["register", he, ihc, "--out", out],
        ["compare", he, ihc, "--transform", t, "--out", out],
        ["pairs", he, ihc, "--transform", t, "--out", out],
    ]


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_8_out_that_cannot_be_a_folder_is_refused_before_any_work(
    pair: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    he, ihc, t = pair
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    out = afile if where == "file" else afile / "x"
    calls = _fake_work(monkeypatch)
    for argv in _commands(he, ihc, t, out):
        code, err = run(argv, capsys)
        assert code == 2 and "afile" in err and "output folder" in err, (argv[0], err)
    assert calls == []
    assert afile.read_text() == "keep me\n"


def test_8_read_only_out_is_refused_before_any_work(
    pair: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    he, ihc, t = pair
    mnt = tmp_path / "ro"
    with read_only_tmpfs(mnt) as mounted:
        if not mounted:
            pytest.skip("needs permission to mount a read-only tmpfs (root ignores file modes)")
        calls = _fake_work(monkeypatch)
        for argv in _commands(he, ihc, t, mnt):
            code, err = run(argv, capsys)
            assert code == 2 and "Read-only" in err and "output folder" in err, (argv[0], err)
    assert calls == []


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["compare", "{he}", "{ihc}", "--out", "{out}", "--max-side", "0"], "--max-side"),
        (["compare", "{he}", "{ihc}", "--out", "{out}", "--mpp", "0"], "--mpp"),
        (["compare", "{he}", "{ihc}", "--out", "{out}", "--tile", "0"], "--tile"),
        (
            ["pairs", "{he}", "{ihc}", "--transform", "{t}", "--out", "{out}", "--downsample", "nan"],
            "--downsample",
        ),
        (
            ["pairs", "{he}", "{ihc}", "--transform", "{t}", "--out", "{out}", "--downsample", "0"],
            "--downsample",
        ),
        (["pairs", "{he}", "{ihc}", "--transform", "{t}", "--out", "{out}", "--mpp", "-1"], "--mpp"),
        (["pairs", "{he}", "{ihc}", "--transform", "{t}", "--out", "{out}", "--stride", "0"], "--stride"),
        (["register", "{he}", "{ihc}", "--out", "{out}", "--working-side", "3"], "--working-side"),
    ],
)
def test_8_out_of_range_numbers_are_argparse_errors(
    pair: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    option: str,
) -> None:
    he, ihc, t = pair
    filled = [a.format(he=he, ihc=ihc, t=t, out=tmp_path / "o") for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(filled)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and option in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def _edited(t: Path, edit: Any) -> Path:
    d = json.loads(t.read_text())
    edit(d)
    t.write_text(json.dumps(d))
    return t


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: d.pop("matrix"), "matrix"),
        (lambda d: d.pop("fixed"), "fixed"),
        (lambda d: d["moving"].pop("dimensions"), "moving"),
        (lambda d: d.update(matrix=[[1, 0, 0], [0, 1, 0], [0.1, 0, 1]]), "last row"),
        (lambda d: d.update(units="furlongs"), "furlongs"),
        (lambda d: d.update(converged="false"), "converged"),
        (lambda d: d.update(quality={"correlation": "high"}), "quality"),
        (lambda d: d.update(displacement={"file": "d.npy", "origin": [0, 0], "spacing": [1, 1]}), "shape"),
    ],
)
def test_8_malformed_transform_json_is_a_clear_message(
    pair: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, words: str
) -> None:
    he, ihc, t = pair
    _edited(t, edit)
    with pytest.raises(RegistrationError, match=words):
        SlideTransform.load(t)
    code, err = run(["pairs", he, ihc, "--transform", t, "--out", tmp_path / "p"], capsys)
    assert code == 2 and "transform.json" in err and words in err, err


def test_8_npy_header_claiming_149_gib_is_refused_without_allocating(
    pair: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    he, ihc, t = pair
    bomb = t.parent / "transform.displacement.npy"
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 2), }"
    magic = b"\x93NUMPY\x01\x00"
    pad = 64 - (len(magic) + 2 + len(header) + 1) % 64
    text = (header + " " * pad + "\n").encode()
    bomb.write_bytes(magic + len(text).to_bytes(2, "little") + text + b"\0" * 64)
    assert bomb.stat().st_size < 300
    _edited(
        t,
        lambda d: d.update(
            displacement={
                "file": bomb.name,
                "shape": [100000, 100000, 2],
                "origin": [0, 0],
                "spacing": [1, 1],
            }
        ),
    )
    before = peak_rss_mb()
    with pytest.raises(RegistrationError, match="displacement"):
        SlideTransform.load(t)
    code, err = run(["pairs", he, ihc, "--transform", t, "--out", tmp_path / "p"], capsys)
    assert code == 2 and "displacement" in err, err
    assert peak_rss_mb() - before < 200
