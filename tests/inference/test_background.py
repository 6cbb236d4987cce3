"""Blank glass on a real slide (CMU-1-Small-Region.svs) is skipped, counted, and filled cleanly."""

from __future__ import annotations

import numpy as np
import torch
import zarr
from engine_helpers import OpenSlideSlide, assert_same_up_to_rounding, small_generator

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.runner import to_input, to_uint8


def test_background_tiles_skipped_counted_and_clean(cmu1_path, tmp_path):
    model = small_generator("batch", ngf=4, n_blocks=1)
    slide = OpenSlideSlide(cmu1_path)
    reports = []
    rep = stain_slide(
        slide, model, tmp_path / "cmu.ome.zarr", EngineSettings(tile=512, batch=2), progress=reports.append
    )
    print(
        f"CMU-1-Small-Region: {rep.tiles_total} tiles, {rep.tiles_skipped} background skipped, {rep.tiles_done} stained"
    )
    assert rep.tiles_total == 5 * 6
    assert rep.tiles_skipped >= 5 and rep.tiles_done >= 10
    assert rep.tiles_skipped + rep.tiles_done == rep.tiles_total
    assert reports[-1].skipped == rep.tiles_skipped

    store = zarr.open_group(str(tmp_path / "cmu.ome.zarr"), mode="r")
    out = np.asarray(store["0"][:]).transpose(1, 2, 0)
    # The fill is what the model makes of blank glass (constant up to the generator's 4 px stride pattern).
    white = np.full((1, 512, 512, 3), 255, np.uint8)
    with torch.inference_mode():
        glass = to_uint8(model.module(to_input(white, "minus_one_one")), "minus_one_one")[0, 128:384, 128:384]

    src = slide.read_region((0, 0), 0, slide.dimensions)
    kinds = dict(line.split() for line in (tmp_path / "cmu.ome.zarr" / "tiles_done").read_text().splitlines())
    assert sum(k == "s" for k in kinds.values()) == rep.tiles_skipped
    for index, kind in kinds.items():
        row, col = divmod(int(index), 5)
        s = src[row * 512 : row * 512 + 512, col * 512 : col * 512 + 512]
        o = out[row * 512 : row * 512 + 512, col * 512 : col * 512 + 512]
        sat = (s.max(axis=2).astype(int) - s.min(axis=2)) / np.maximum(s.max(axis=2), 1)
        if (sat > 0.15).mean() > 0.05:  # clearly tissue: must have been stained, not filled
            assert kind == "d"
        if kind == "s":
            assert s.min(axis=2).mean() > 200  # only bright glass was filled
            assert len(np.unique(o.reshape(-1, 3), axis=0)) <= 16  # clean: no noise, just the model's period
            h, w = min(256, o.shape[0]), min(256, o.shape[1])
            assert np.abs(o[:h, :w].astype(int) - glass[:h, :w]).max() <= 1
    slide.close()


def _float_reference_mask(rgb, min_saturation=0.07, min_optical_density=0.25):
    """The tissue rule written the plain way (float HSV saturation and optical density)."""
    from scipy import ndimage

    f = rgb.astype(np.float32) / 255.0
    mx, mn = f.max(axis=2), f.min(axis=2)
    saturation = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    od = -np.log10(np.clip(f, 1 / 255.0, 1.0)).sum(axis=2)
    mask = ((saturation > min_saturation) & (mx < 0.98)) | (od > min_optical_density * 3)
    mask = ndimage.binary_opening(mask, structure=np.ones((3, 3), bool))
    labels, n = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= 8
    keep[0] = False
    return ndimage.binary_dilation(keep[labels] if n else mask, structure=np.ones((3, 3), bool), iterations=2)


def test_tissue_mask_matches_the_plain_float_rule_on_real_slides(cmu1_path):
    """The integer / lookup-table mask (fast, on the way to the first tile) decides exactly as the rule."""
    from napari_virtual_ihc.inference.resample import low_resolution_view
    from napari_virtual_ihc.inference.tissue import tissue_mask

    view, _ = low_resolution_view(OpenSlideSlide(cmu1_path))
    rng = np.random.default_rng(0)
    for rgb in (
        view,
        rng.integers(0, 256, (300, 300, 3), dtype=np.uint8),
        np.full((50, 50, 3), 249, np.uint8),
    ):
        expected = _float_reference_mask(rgb)
        np.testing.assert_array_equal(tissue_mask(rgb), expected)
    assert 0.05 < tissue_mask(view).mean() < 0.95  # CMU-1 has both tissue and glass


def test_separable_3x3_morphology_equals_ndimage_at_every_border():
    """The vectorised erosion/dilation the tissue mask uses are ndimage's, including images 1-3 px wide."""
    from scipy import ndimage

    from napari_virtual_ihc.inference.tissue import dilate_3x3, erode_3x3

    square = np.ones((3, 3), bool)
    rng = np.random.default_rng(1)
    for shape, p in [
        ((1, 1), 1.0),
        ((1, 7), 0.8),
        ((3, 3), 1.0),
        ((2, 40), 0.7),
        ((61, 33), 0.5),
        ((200, 150), 0.9),
    ]:
        m = rng.random(shape) < p
        np.testing.assert_array_equal(erode_3x3(m), ndimage.binary_erosion(m, structure=square))
        np.testing.assert_array_equal(dilate_3x3(m), ndimage.binary_dilation(m, structure=square))


def test_interactive_run_overlapping_the_tissue_mask_writes_the_same_store(cmu1_path, tmp_path):
    """With a priority region the first batch runs before the tissue mask is known; a blank-glass tile in
    it is filled like any other background tile, so the store equals a run that knew the mask first."""
    model = small_generator("batch", ngf=4, n_blocks=1)
    slide = OpenSlideSlide(cmu1_path)
    settings = EngineSettings(tile=512, batch=2)
    plain = stain_slide(slide, model, tmp_path / "plain.ome.zarr", settings)
    kinds = dict(
        line.split() for line in (tmp_path / "plain.ome.zarr" / "tiles_done").read_text().splitlines()
    )
    glass = sorted(int(i) for i, k in kinds.items() if k == "s")
    tissue = sorted(int(i) for i, k in kinds.items() if k == "d")
    for name, index in (("glass-first", glass[0]), ("tissue-first", tissue[len(tissue) // 2])):
        row, col = divmod(index, 5)
        box = (col * 512 + 100, row * 512 + 100, 50, 50)  # level-0 box inside that tile
        reports = []
        rep = stain_slide(
            slide,
            model,
            tmp_path / f"{name}.ome.zarr",
            settings,
            priority=lambda b=box: b,
            progress=reports.append,
        )
        assert (rep.tiles_skipped, rep.tiles_done) == (plain.tiles_skipped, plain.tiles_done)
        again = dict(
            line.split() for line in (tmp_path / f"{name}.ome.zarr" / "tiles_done").read_text().splitlines()
        )
        assert again == kinds
        a = zarr.open_group(str(tmp_path / "plain.ome.zarr"), mode="r")
        b = zarr.open_group(str(tmp_path / f"{name}.ome.zarr"), mode="r")
        for level in ("0", "1"):
            if level in a:  # the field of view's tiles ran beside other partners
                assert_same_up_to_rounding(np.asarray(b[level][:]), np.asarray(a[level][:]))
        first_written = next(r.new_boxes for r in reports if r.new_boxes)
        if name == "tissue-first":  # the field of view came first
            assert first_written[0][:2] == (col * 512, row * 512), first_written
    slide.close()
