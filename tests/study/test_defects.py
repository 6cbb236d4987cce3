"""Issue 20, study items: each test failed on the code before its fix (item numbers in the names)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.study import (
    BuildOptions,
    ReaderError,
    ReaderSession,
    StoreError,
    StudyError,
    build_study,
    load_key,
)


def test_7_build_refuses_to_overwrite_an_existing_key(
    source_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    first_bundle, key = build_study(source_table, tmp_path / "one", BuildOptions(readers=("a",), min_gap=2))
    before = key.read_bytes()
    code = main(
        [
            "study",
            "build",
            str(source_table),
            "--out",
            str(tmp_path / "two"),
            "--key",
            str(key),
            "--readers",
            "a",
            "--min-gap",
            "2",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err
    assert key.read_bytes() == before  # the first study can still be unblinded
    assert not (tmp_path / "two").exists()
    with pytest.raises(StudyError, match="already exists"):  # the default key path too
        build_study(
            source_table,
            tmp_path / "one_again",
            BuildOptions(readers=("a",)),
            key_path=tmp_path / "one_key.json",
        )
    assert load_key(key)["bundle"] == str(first_bundle)


def test_13_build_out_existing_file_is_a_clear_message(
    source_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "afile").write_text("precious")
    assert (
        main(["study", "build", str(source_table), "--out", str(tmp_path / "afile"), "--readers", "a"]) == 2
    )
    err = capsys.readouterr().err
    assert "is a file" in err and "Traceback" not in err
    assert (tmp_path / "afile").read_text() == "precious"


def test_13_status_goes_on_when_one_readers_store_is_corrupt(
    source_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bundle, _ = build_study(
        source_table, tmp_path / "b", BuildOptions(readers=("ann", "bob", "cy"), min_gap=2)
    )
    for reader, n in (("ann", 3), ("cy", 5)):
        s = ReaderSession(bundle, reader)
        for _ in range(n):
            s.pixels()
            s.answer("1+", 2)
            s.next()
        s.close()
    (bundle / "answers" / "bob.sqlite").write_bytes(b"this is not a database" * 100)
    capsys.readouterr()
    assert main(["study", "status", str(bundle)]) == 1
    captured = capsys.readouterr()
    assert "ann: 3 of 80 answered" in captured.out and "cy: 5 of 80 answered" in captured.out
    assert "bob: answer store unreadable" in captured.out and "Traceback" not in captured.err


def test_17_zero_byte_reader_store_is_refused_not_reinitialised(
    source_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Decision: an existing 0-byte store is always refused. SQLite writes a header with its first
    statement, so a store is never 0 bytes once made; an empty file means its answers were lost (a sync
    tool, a failed copy). Starting again silently would put the reader back at case 1 and hide the loss."""
    bundle, _ = build_study(source_table, tmp_path / "b", BuildOptions(readers=("ann", "bob"), min_gap=2))
    s = ReaderSession(bundle, "ann")
    for _ in range(4):
        s.pixels()
        s.answer("2+", 3)
        s.next()
    s.close()
    store = bundle / "answers" / "ann.sqlite"
    store.write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        Path(str(store) + suffix).unlink(missing_ok=True)
    with pytest.raises(StoreError, match=r"empty \(0 bytes\).*delete the file"):
        ReaderSession(bundle, "ann")
    assert store.stat().st_size == 0  # left as found, for the coordinator to look at
    assert main(["study", "status", str(bundle)]) == 1
    assert "ann: answer store unreadable" in capsys.readouterr().out
    ReaderSession(bundle, "bob").close()  # a reader without a store starts normally


def test_6_answers_folder_can_be_chosen_for_a_read_only_bundle(source_table: Path, tmp_path: Path) -> None:
    bundle, _ = build_study(source_table, tmp_path / "b", BuildOptions(readers=("ann",), min_gap=2))
    ro = tmp_path / "ro"
    shutil.copytree(bundle, ro)
    with read_only(ro):
        with pytest.raises(StoreError, match="choose another answers folder"):
            ReaderSession(ro, "ann")
        s = ReaderSession(ro, "ann", answers_dir=tmp_path / "my_answers")
        s.pixels()
        s.answer("3+", 5)
        s.close()
    assert (tmp_path / "my_answers" / "ann.sqlite").is_file()


def test_6_a_score_is_only_stored_for_the_image_on_screen(source_table: Path, tmp_path: Path) -> None:
    bundle, _ = build_study(source_table, tmp_path / "b", BuildOptions(readers=("ann",), min_gap=2))
    s = ReaderSession(bundle, "ann", answers_dir=tmp_path / "a")
    first = s.current.image
    with pytest.raises(ReaderError, match="not on screen"):
        s.answer("2+", 3)  # nothing shown yet
    s.pixels()
    s.next()
    with pytest.raises(ReaderError, match="not on screen"):
        s.answer("2+", 3)  # the previous case was shown, not this one
    (bundle / s.bundle.images[s.current.image]["file"]).unlink()  # its image disappears mid-study
    with pytest.raises(StudyError, match="missing"):
        s.pixels()
    with pytest.raises(ReaderError, match="not on screen"):
        s.answer("2+", 3)
    assert set(s.store.current_answers()) == set()
    s.go_to(0)
    s.pixels()
    s.answer("1+", 2)
    assert set(s.store.current_answers()) == {first}
    s.close()


class read_only:
    """Make a folder really read-only: a read-only bind mount as root (chmod does not stop root)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> None:
        import os
        import subprocess

        if os.geteuid() != 0:
            for p in [self.folder, *self.folder.rglob("*")]:
                p.chmod(0o555 if p.is_dir() else 0o444)
            self.mounted = False
            return
        r = subprocess.run(
            ["mount", "--bind", "-o", "ro", str(self.folder), str(self.folder)], capture_output=True
        )
        if r.returncode != 0:
            pytest.skip(f"cannot make a read-only folder here: {r.stderr.decode().strip()}")
        self.mounted = True

    def __exit__(self, *exc: object) -> None:
        import subprocess

        if self.mounted:
            subprocess.run(["umount", str(self.folder)], check=True)
        else:
            for p in [self.folder, *self.folder.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
