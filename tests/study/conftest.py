"""A 40-pair study built from small crops of the real IHC images in tests/data.

"Real" images are JPEG crops of the two IHC photographs (with a JPEG comment and EXIF-like DPI); "virtual"
ones are colour-jittered crops saved as PNG with text and pHYs chunks and a different size, so the
builder has real differences in format, size and metadata to erase. File names carry the words the leak
test looks for.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_virtual_ihc.study import BuildOptions, build_study

from ._sources import make_sources


@pytest.fixture(scope="session")
def source_table(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sources(data_dir, tmp_path_factory.mktemp("sources"))


@pytest.fixture(scope="session")
def built_study(source_table: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(bundle_dir, key_path) for 2 readers, min gap 10."""
    root = tmp_path_factory.mktemp("study")
    return build_study(
        source_table, root / "bundle", BuildOptions(readers=("alice", "bob"), seed=7, min_gap=10)
    )
