"""The widget's model preloader: the chosen checkpoint is loaded once, before Run, while the file is unchanged."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
import torch

from napari_virtual_ihc._widgets.stain.preload import ModelPreloader
from napari_virtual_ihc.models import CheckpointError


def test_a_prefetched_model_serves_every_run_until_its_file_changes(
    inverting_model: Path, tmp_path: Path
) -> None:
    path = tmp_path / "model.safetensors"
    shutil.copy(inverting_model, path)
    preloader = ModelPreloader()
    preloader.prefetch(path)
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(preloader.get(path)))  # as a run's worker does
    worker.start()
    worker.join()
    again = preloader.get(str(path))
    assert got[0] is again and preloader.loads == 1
    before = {k: v.clone() for k, v in again.module.state_dict().items()}

    preloader.prefetch(path)  # unchanged: nothing new is loaded
    assert preloader.loads == 1

    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # the file was replaced
    fresh = preloader.get(path)
    assert fresh is not again and preloader.loads == 2
    assert all(torch.equal(before[k], v) for k, v in fresh.module.state_dict().items())
    preloader.close()


def test_a_failed_preload_raises_the_loading_error_when_the_run_asks(tmp_path: Path) -> None:
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    preloader = ModelPreloader()
    preloader.prefetch(bad)
    with pytest.raises(CheckpointError):
        preloader.get(bad)
    preloader.prefetch(tmp_path / "missing.safetensors")  # not a file: nothing to load, no error
    assert preloader.loads == 2  # the failed preload, then the run's own attempt
    preloader.close()
