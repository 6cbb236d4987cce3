"""Building a study: 80 blinded images from 40 pairs, no trace of sources or modality anywhere."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
from PIL import Image

from napari_virtual_ihc.study import BuildOptions, BundleError, StudyError, build_study, load_bundle, load_key
from napari_virtual_ihc.study.encode import png_chunks

MODALITY_WORDS = ("real", "virtual", "generated", "synthetic", "fake", "pix2pix")


def forbidden_strings(source_table: Path) -> list[str]:
    """Everything that would identify a source: file names, stems, case IDs, folder name, modality words."""
    words = set(MODALITY_WORDS)
    for line in source_table.read_text().splitlines()[1:]:
        case_id, real, virtual = line.split(",")
        words |= {case_id, real, virtual, Path(real).stem, Path(virtual).stem}
    words |= {"Rat-Kidney", "PanCytokeratin", "proSPC", "Izd2", source_table.parent.name, "cases.csv"}
    return sorted(words)


def find_leaks(haystack: bytes, words: list[str]) -> list[str]:
    low = haystack.lower()
    return [w for w in words if w.lower().encode() in low]


def test_forty_pairs_give_eighty_cases(built_study: tuple[Path, Path]) -> None:
    bundle_dir, key_path = built_study
    bundle = load_bundle(bundle_dir)
    assert len(bundle.images) == 80
    for reader in ("alice", "bob"):
        (session,) = bundle.sessions_for(reader)
        assert len(session.items) == 80
        assert len({it.image for it in session.items}) == 80
    key = load_key(key_path)
    modalities = [v["modality"] for v in key["images"].values()]
    assert modalities.count("real") == 40 and modalities.count("virtual") == 40
    assert len({v["case_id"] for v in key["images"].values()}) == 40
    # each reader's order keeps the two versions of every case >= 10 apart, and the orders differ
    orders = {r: [it.image for it in bundle.sessions_for(r)[0].items] for r in ("alice", "bob")}
    assert orders["alice"] != orders["bob"]
    for order in orders.values():
        where: dict[str, list[int]] = {}
        for pos, image in enumerate(order):
            where.setdefault(key["images"][image]["case_id"], []).append(pos)
        assert all(len(p) == 2 and abs(p[0] - p[1]) >= 10 for p in where.values())


def test_key_is_outside_the_bundle(built_study: tuple[Path, Path]) -> None:
    bundle_dir, key_path = built_study
    assert not key_path.resolve().is_relative_to(bundle_dir.resolve())
    assert not any(p.suffix == ".json" and p.name != "manifest.json" for p in bundle_dir.rglob("*"))


def test_no_file_name_or_byte_or_manifest_entry_leaks(
    built_study: tuple[Path, Path], source_table: Path
) -> None:
    bundle_dir, key_path = built_study
    words = forbidden_strings(source_table)
    assert "case07" in words and "real" in words  # the search really looks for these
    # the key does contain them: proves the search would find them if they were there
    assert find_leaks(key_path.read_bytes(), words)
    files = [p for p in bundle_dir.rglob("*")]
    assert len([p for p in files if p.suffix == ".png"]) == 80
    for p in files:
        rel = str(p.relative_to(bundle_dir))
        assert not find_leaks(rel.encode(), words), rel
        assert re.fullmatch(r"manifest\.json|images|images/[0-9a-f]{12}\.png", rel), rel
        if p.is_file():
            assert not find_leaks(p.read_bytes(), words), rel
    manifest = json.loads((bundle_dir / "manifest.json").read_text())

    def walk(obj: object) -> list[str]:
        if isinstance(obj, dict):
            return [s for k, v in obj.items() for s in (str(k), *walk(v))]
        if isinstance(obj, list):
            return [s for v in obj for s in walk(v)]
        return [str(obj)]

    entries = walk(manifest)
    assert len(entries) > 400
    for entry in entries:
        if entry in ("alice", "bob"):
            continue
        assert not find_leaks(entry.encode(), words), entry


def test_real_and_virtual_are_indistinguishable_as_files(built_study: tuple[Path, Path]) -> None:
    bundle_dir, key_path = built_study
    key = load_key(key_path)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    signature: dict[str, set] = {"real": set(), "virtual": set()}
    sizes_by_case: dict[str, set] = {}
    for image_id, entry in manifest["images"].items():
        path = bundle_dir / entry["file"]
        data = path.read_bytes()
        chunks = png_chunks(data)
        kinds = tuple(sorted({c for c, _ in chunks}))
        ihdr = chunks[0][1]
        st = os.stat(path)
        with Image.open(path) as im:
            info_keys = tuple(sorted(im.info))
            mode = im.mode
        modality = key["images"][image_id]["modality"]
        signature[modality].add((kinds, ihdr[8:], mode, info_keys, st.st_mtime, stat.S_IMODE(st.st_mode)))
        sizes_by_case.setdefault(key["images"][image_id]["case_id"], set()).add((ihdr[:8], st.st_size))
        assert kinds == (b"IDAT", b"IEND", b"IHDR")  # no text, time, ICC, gamma or pHYs chunk
        assert info_keys == ()
    # one identical signature (bit depth, colour type, compression, filter, interlace, mtime, mode bits)
    assert signature["real"] == signature["virtual"]
    assert len(signature["real"]) == 1
    # real and virtual of each case have the same width, height and file byte size (the sources did not)
    assert all(len(s) == 1 for s in sizes_by_case.values())


def test_manifest_pointing_outside_is_refused(built_study: tuple[Path, Path], tmp_path: Path) -> None:
    bundle_dir, _ = built_study
    import shutil

    for bad in ("../outside.png", "/etc/passwd", "images/../../x.png", "C:\\x.png"):
        copy = tmp_path / f"b{abs(hash(bad))}"
        shutil.copytree(bundle_dir, copy)
        doc = json.loads((copy / "manifest.json").read_text())
        first = next(iter(doc["images"]))
        doc["images"][first]["file"] = bad
        (copy / "manifest.json").write_text(json.dumps(doc))
        with pytest.raises(BundleError, match="outside the bundle"):
            load_bundle(copy)


def test_tampered_image_is_refused(built_study: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(built_study[0], copy)
    victim = next((copy / "images").iterdir())
    victim.write_bytes(victim.read_bytes()[:-20])
    with pytest.raises(BundleError, match="modified"):
        load_bundle(copy)


def test_builder_refuses_key_inside_bundle_and_non_empty_folder(source_table: Path, tmp_path: Path) -> None:
    opts = BuildOptions(readers=("a",), min_gap=2)
    with pytest.raises(StudyError, match="outside the bundle"):
        build_study(source_table, tmp_path / "b", opts, key_path=tmp_path / "b" / "key.json")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(StudyError, match="not empty"):
        build_study(source_table, tmp_path / "full", opts)


def test_sessions_design_puts_one_version_per_case_in_each_session(
    source_table: Path, tmp_path: Path
) -> None:
    import datetime as dt

    bundle_dir, key_path = build_study(
        source_table,
        tmp_path / "b",
        BuildOptions(readers=("r1",), sessions=True, second_session_opens=dt.date(2030, 1, 1), size=(48, 40)),
    )
    key = load_key(key_path)
    s1, s2 = load_bundle(bundle_dir).sessions_for("r1")
    assert len(s1.items) == len(s2.items) == 40 and s2.opens_on == dt.date(2030, 1, 1)
    for s in (s1, s2):
        cases = [key["images"][it.image]["case_id"] for it in s.items]
        assert len(set(cases)) == 40
        mods = [key["images"][it.image]["modality"] for it in s.items]
        assert 5 < mods.count("real") < 35  # which version comes first is random per case
    assert {(e["width"], e["height"]) for e in load_bundle(bundle_dir).images.values()} == {(48, 40)}
