"""A 65,536 x 65,536 JPEG-tiled pyramidal TIFF: opens fast, stays small in memory, reads only asked tiles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .big_pyramid import he_tiles, write_big_pyramid

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def big_tiff(tmp_path_factory, cmu1_path) -> Path:
    path = tmp_path_factory.mktemp("big") / "big_pyramid.tif"
    write_big_pyramid(path, he_tiles(cmu1_path))
    return path


def test_big_pyramid_opens_fast_small_rss_reads_only_needed_tiles(big_tiff):
    out = subprocess.run(
        [sys.executable, str(HERE / "big_pyramid.py"), str(big_tiff)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    m = json.loads(out.stdout.strip().splitlines()[-1])
    print(m)
    assert m["size"] == [65536, 65536] and m["levels"] == 8 and m["mpp"] == pytest.approx([0.25, 0.25])
    assert m["tiles_read_at_open"] == 0  # opening reads the header, no pixels (its time: m["open_s"])
    assert m["rss_open_delta_mb"] < 50
    assert m["rss_peak_delta_mb"] < 200
    for read, touched in m["pan_steps_read_vs_touched"]:
        assert read == touched  # each viewport decodes exactly the tiles under it, nothing more
    assert m["overview_read_vs_touched"] == [4, 4]
    assert m["tiles_read_total"] < 0.02 * m["tiles_in_file"]


def test_big_pyramid_in_napari_reads_only_visible_tiles(make_napari_viewer, qtbot, big_tiff):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(big_tiff), plugin="napari-virtual-ihc")
    layer = viewer.layers[0]
    slide = layer.metadata["slide"]
    qtbot.wait(200)
    start = slide.tiles_read
    assert start < 100, slide.tiles_read_per_level()  # whole-slide view: a coarse level, not level 0
    viewer.camera.zoom = viewer.camera.zoom * 64  # zoom into the middle, down to the full-resolution level
    qtbot.wait(300)
    per_level = slide.tiles_read_per_level()
    print("tiles read per level", start, per_level)
    assert per_level[0] + per_level[1] > 0, per_level  # now reading a fine level ...
    assert slide.tiles_read - start < 200, per_level  # ... but only the tiles on screen
    viewer.layers.remove(layer)
    assert slide.closed
