"""The MIL tumour classifier's map as the tumour region (issue 32 item 3): made on the H&E the IHC came from
(the same pixels, a registered pair, a virtual IHC's source slide), only the cells inside it are counted."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data
from skimage.io import imread, imsave

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.models.classifier import load_classifier, tumour_probability
from napari_virtual_ihc.registration.transform import SlideRecord, SlideTransform
from napari_virtual_ihc.slides import open_slide
from napari_virtual_ihc.slides.base import ArraySlide
from napari_virtual_ihc.stain import AnalysisSettings, analyze_image
from napari_virtual_ihc.stain.regions import RegionError
from napari_virtual_ihc.stain.tumour_map import mil_region, tumour_map

from ._mil import darkness_classifier

T = 32  # the classifier's tile


def _he_canvas(data_dir: Path, width: int, height: int, tumour_right_edge: int) -> np.ndarray:
    """Real H&E pixels (TIAToolbox's carcinoma patch): dark (hyperchromatic, 'tumour' for the darkness
    classifier) left of ``tumour_right_edge``, pale pink (stroma-like) right of it."""
    he = imread(data_dir / "tiatoolbox-target-image.png")[..., :3]
    field = he[:height, :width].astype(np.float64)
    out = np.where(
        (np.arange(width) < tumour_right_edge)[None, :, None], field * 0.35, 0.7 * field + 0.3 * 255
    )
    return np.round(out).astype(np.uint8)


@pytest.fixture(scope="module")
def ihc_cells():
    """A 256 px field of scikit-image's real IHC, analysed once; regions are applied to its cells afterwards."""
    rgb = np.ascontiguousarray(data.immunohistochemistry()[128:384, 128:384])
    return rgb, analyze_image(rgb, AnalysisSettings(nuclei_method="classical", marker="her2", mpp=0.5))


def test_the_map_counts_only_the_cells_under_tumour_tiles_of_the_same_pixels(tmp_path, data_dir, ihc_cells):
    rgb, res = ihc_cells
    he_png, ihc_png = tmp_path / "he.png", tmp_path / "ihc.png"
    imsave(he_png, _he_canvas(data_dir, 256, 256, 128), check_contrast=False)
    imsave(ihc_png, rgb, check_contrast=False)
    clf = darkness_classifier(tmp_path / "clf.safetensors", tile=T)
    region = mil_region(ihc_png, (256, 256), clf, he=he_png)
    rec = region.record
    assert rec is not None and rec["threshold"] == 0.5 and rec["mapping"].startswith("same pixels")
    assert rec["tiles_scored"] == 64 and rec["tiles_tumour"] == 32  # the left half, 8 x 4 tiles
    assert any("no µm/px" in n for n in rec["notes"])  # read at the H&E's level 0, said so
    inside = res.cells.x < 128
    s = res.summary(region)
    assert 0 < s["tumour_cells"] == int(inside.sum()) < len(res.cells)
    assert s["cells_counted"].startswith("tumour map from MIL model clf.safetensors at threshold 0.5")
    assert s["her2"]["n_cells"] == s["tumour_cells"] and s["tumour_region"]["model"] == "clf.safetensors"
    np.testing.assert_array_equal(region.contains(res.cells.y, res.cells.x), inside)
    # a stricter threshold is recorded and moves the region (no tile reaches 0.9999 here)
    strict = mil_region(ihc_png, (256, 256), clf, he=he_png, threshold=0.9999)
    assert strict.record["threshold"] == 0.9999 and res.summary(strict)["tumour_cells"] < s["tumour_cells"]


def test_the_registration_transform_maps_the_map_onto_a_shifted_ihc(tmp_path, data_dir, ihc_cells, capsys):
    """The IHC shows the H&E's field from (64, 32) on: tumour (H&E x < 192) is IHC x < 128 only through the
    transform; `analyze --region-mil` reads it, records it and marks the cells in cells.csv."""
    rgb, res = ihc_cells
    he_png, ihc_png = tmp_path / "he.png", tmp_path / "ihc.png"
    imsave(he_png, _he_canvas(data_dir, 320, 288, 192), check_contrast=False)
    imsave(ihc_png, rgb, check_contrast=False)
    with open_slide(he_png) as he, open_slide(ihc_png) as ihc:
        shift = np.array([[1.0, 0, -64], [0, 1, -32], [0, 0, 1]])  # fixed (H&E) -> moving (IHC), px
        t = SlideTransform(shift, SlideRecord.of(he, (1.0, 1.0)), SlideRecord.of(ihc, (1.0, 1.0)))
    t.save(tmp_path / "t" / "transform.json")
    clf = darkness_classifier(tmp_path / "clf.safetensors", tile=T)
    region = mil_region(ihc_png, (256, 256), clf, he=he_png, transform=tmp_path / "t" / "transform.json")
    assert region.record["tiles_scored"] == 8 * 8  # only the H&E under the IHC is scored
    np.testing.assert_array_equal(region.contains(res.cells.y, res.cells.x), res.cells.x < 128)

    out = tmp_path / "out"
    args = ["analyze", str(ihc_png), "--out", str(out), "--nuclei", "classical", "--marker", "her2"]
    args += ["--mpp", "0.5", "--cells-csv", "--region-mil", str(clf), "--mil-he", str(he_png)]
    assert main([*args, "--mil-transform", str(tmp_path / "t" / "transform.json")]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["tumour_region"]["mapping"].startswith("registration transform")
    assert s["tumour_region"]["threshold"] == 0.5 and s["region_model"] == str(clf.resolve())
    assert s["her2"]["scope"].startswith("tumour map from MIL model clf.safetensors at threshold 0.5")
    rows = list(csv.DictReader((out / "cells.csv").open()))
    assert rows and all(r["in_tumour_region"] == str(int(float(r["x_px"]) < 128)) for r in rows)
    assert s["tumour_cells"] == sum(r["in_tumour_region"] == "1" for r in rows) < len(rows)
    drawn = imread(out / s["maps"]["tumour_region"])  # the region the estimate used, on the IHC's grid
    assert drawn.shape == (256, 256) and (drawn[:, :128] == 255).all() and (drawn[:, 128:] == 0).all()
    # without the transform the two sizes differ: refused, told what to give, nothing written
    capsys.readouterr()
    assert main([*args[:-2], "--out", str(tmp_path / "o2"), "--mil-he", str(he_png)]) == 2
    assert "--mil-transform" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "summary.json").exists()


def _near_identity_generator():
    """A real ResNet generator set so that output = tanh(input): the H&E, a little flatter (a virtual IHC
    whose pixels are known)."""
    from napari_virtual_ihc.models import ModelSpec, build_generator
    from napari_virtual_ihc.models.spec import LoadedGenerator

    module = build_generator("resnet", ngf=4, n_blocks=1, n_downsampling=0, norm="batch")
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
        first, first_norm, last = module.model[1], module.model[2], module.model[-2]
        first_norm.weight.fill_(1.0)
        first_norm.bias.fill_(1.0)
        for c in range(3):
            first.weight[c, c, 3, 3] = 1.0
            last.weight[c, c, 3, 3] = 1.0
            last.bias[c] = -1.0
    spec = ModelSpec("resnet", {"ngf": 4, "n_blocks": 1, "n_downsampling": 0, "norm": "batch"}, name="flat")
    return LoadedGenerator(module=module.eval(), spec=spec, source="test", sha256="near-identity")


def test_a_virtual_ihc_finds_its_source_slide_in_the_store(tmp_path):
    from napari_virtual_ihc.inference import EngineSettings, stain_slide

    src = tmp_path / "source.png"
    imsave(src, data.immunohistochemistry()[:192, :192], check_contrast=False)
    store = tmp_path / "source.ome.zarr"
    with open_slide(src) as slide:
        stain_slide(slide, _near_identity_generator(), store, EngineSettings(tile=192, batch=1))
    clf = darkness_classifier(tmp_path / "clf.safetensors", tile=T)
    with open_slide(store) as vihc:
        dims = vihc.dimensions
        res = analyze_image(
            vihc.read_region((0, 0), 0, dims), AnalysisSettings(nuclei_method="classical", marker="her2")
        )
    region = mil_region(store, dims, clf)  # no H&E given: the store names it
    assert region.record["he"] == str(src.resolve()) and region.record["mapping"].startswith("virtual IHC")
    # independently: each cell is in iff the classifier calls its source tile tumour
    model, src_rgb = load_classifier(clf), imread(src)[..., :3]
    tiles = torch.from_numpy(
        np.stack([src_rgb[r : r + T, c : c + T] for r in range(0, 192, T) for c in range(0, 192, T)])
    )
    p = tumour_probability(model, tiles.permute(0, 3, 1, 2).float() / 127.5 - 1).detach().numpy()
    tumour = (p >= 0.5).reshape(6, 6)
    expect = tumour[(res.cells.y // T).astype(int), (res.cells.x // T).astype(int)]
    assert 0 < expect.sum() < len(res.cells)
    np.testing.assert_array_equal(region.contains(res.cells.y, res.cells.x), expect)
    # another slide given as its H&E is refused
    other = tmp_path / "other.png"
    imsave(other, data.immunohistochemistry()[256:, 256:], check_contrast=False)
    with pytest.raises(RegionError, match="not the slide the virtual IHC"):
        mil_region(store, dims, clf, he=other)


def test_the_classifier_reads_the_he_at_its_recorded_scale(tmp_path, data_dir):
    """A classifier trained at 0.5 µm/px on an H&E scanned at 0.25: each tile covers 64 level-0 px, and the
    map equals the map of the H&E downsampled x 2."""
    fine = _he_canvas(data_dir, 256, 256, 128)
    coarse = fine.reshape(128, 2, 128, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    clf = darkness_classifier(tmp_path / "clf.safetensors", tile=T, mpp=0.5)
    m_fine = tumour_map(ArraySlide(fine, mpp=0.25), clf)
    m_coarse = tumour_map(ArraySlide(coarse, mpp=0.5), clf)
    assert m_fine.tile_level0 == 64 and m_fine.read_mpp == 0.5 and not m_fine.notes
    assert m_fine.probability.shape == (4, 4)
    np.testing.assert_array_equal(m_fine.mask, m_coarse.mask)
    assert m_fine.mask[:, :2].all() and not m_fine.mask[:, 2:].any()


def test_bad_mil_inputs_are_refused_with_a_message(tmp_path, capsys):
    ihc = tmp_path / "ihc.png"
    imsave(ihc, data.immunohistochemistry()[:128, :128], check_contrast=False)
    out = tmp_path / "out"
    base = ["analyze", str(ihc), "--out", str(out), "--nuclei", "classical"]
    not_a_model = tmp_path / "x.safetensors"
    not_a_model.write_bytes(b"nothing")
    cases = [
        ([*base, "--region-mil", str(tmp_path / "missing.safetensors"), "--mil-he", str(ihc)], "not found"),
        ([*base, "--region-mil", str(not_a_model), "--mil-he", str(ihc)], "safetensors"),
        ([*base, "--region-mil", str(not_a_model)], "--mil-he"),  # a real IHC without its H&E
        ([*base, "--mil-he", str(ihc)], "go with --region-mil"),
        ([*base, "--region-mil", str(not_a_model), "--region", str(ihc)], "not both"),
    ]
    for argv, said in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, (argv, err)
    assert not (out / "summary.json").exists()
    with pytest.raises(SystemExit):
        main([*base, "--region-mil", str(not_a_model), "--mil-threshold", "1.5"])


def test_the_trainers_mil_file_records_its_scale_and_the_core_reads_it(tmp_path, data_dir):
    """`virtual-ihc-train mil --mpp 0.5` writes the file the core loads (the trainer depends on the core, never
    the other way): the map reads a 0.25 µm/px H&E at 64 level-0 px per 32 px tile."""
    from PIL import Image
    from virtual_ihc_train.cli import main as train_main

    bags = tmp_path / "bags"
    bags.mkdir()
    canvas = _he_canvas(data_dir, 128, 64, 64)
    Image.fromarray(np.ascontiguousarray(canvas[:, :64])).save(bags / "t.png")
    Image.fromarray(np.ascontiguousarray(canvas[:, 64:])).save(bags / "n.png")
    (tmp_path / "labels.csv").write_text("t,tumour\nn,non-tumour\n")
    clf = tmp_path / "clf.safetensors"
    argv = ["mil", str(bags), str(tmp_path / "labels.csv"), "--out", str(clf), "--tile", "32"]
    assert train_main([*argv, "--epochs", "1", "--width", "4", "--mpp", "0.5"]) == 0
    m = tumour_map(ArraySlide(_he_canvas(data_dir, 256, 128, 128), mpp=0.25), clf)
    assert m.read_mpp == 0.5 and m.tile_level0 == 64 and m.probability.shape == (2, 4) and not m.notes
    assert m.as_dict()["model_sha256"] and m.threshold == 0.5
