"""The MIL tumour map as the overlay widget's Tumour region (issue 32 item 3), in a real viewer: a real IHC
registered to its H&E (the transform found where the Register action saves it) and a virtual IHC (its
store names its source slide). Analyze counts only the cells under tumour tiles, as the core does."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from skimage import data
from skimage.io import imread, imsave

from napari_virtual_ihc._widgets.overlay import StainOverlayWidget
from napari_virtual_ihc._widgets.overlay.form import MIL_LABEL
from napari_virtual_ihc.ihc_store import PROVENANCE_KEY, read_store_provenance
from napari_virtual_ihc.ihc_store.provenance import layer_provenance
from napari_virtual_ihc.registration import transform_path_for
from napari_virtual_ihc.registration.transform import SlideRecord, SlideTransform
from napari_virtual_ihc.slides import open_slide
from napari_virtual_ihc.stain.tumour_map import mil_region

sys.path.insert(0, str(Path(__file__).parents[1]))
from stain._mil import darkness_classifier
from stain.test_tumour_map import _he_canvas, _near_identity_generator

T = 32  # the classifier's tile


def _analyze(w: StainOverlayWidget, qtbot) -> None:
    w.result, w.error = None, None
    w.start()
    qtbot.waitUntil(lambda: w.result is not None or w.error is not None, timeout=60000)


def test_a_registered_ihc_counts_only_the_cells_under_tumour_tiles(
    make_napari_viewer, qtbot, tmp_path, data_dir
):
    """The IHC shows the H&E's field from (64, 32) on; tumour (H&E x < 192) is IHC x < 128 only through the
    transform, which the widget finds at ``transform_path_for(he, ihc)`` by itself."""
    he_png, ihc_png = tmp_path / "he.png", tmp_path / "ihc.png"
    imsave(he_png, _he_canvas(data_dir, 320, 288, 192), check_contrast=False)
    imsave(ihc_png, np.ascontiguousarray(data.immunohistochemistry()[128:384, 128:384]), check_contrast=False)
    clf = darkness_classifier(tmp_path / "clf.safetensors", tile=T)
    viewer = make_napari_viewer()
    for name, path in (("ihc", ihc_png), ("he", he_png)):
        slide = open_slide(path)
        viewer.add_image(
            slide.read_region((0, 0), 0, slide.dimensions), rgb=True, name=name, metadata={"slide": slide}
        )
    w = StainOverlayWidget(viewer)
    w.source.setCurrentText("ihc")
    w.scope.setCurrentText("whole image")
    w.nuclei.setCurrentText("classical")
    w.marker.setCurrentIndex(w.marker.findData("her2"))
    w.mpp.setValue(0.5)
    assert not w.mil_box.isVisibleTo(w)
    w.region_shapes.setCurrentText(MIL_LABEL)
    assert w.mil_box.isVisibleTo(w) and w.mil_threshold.value() == 0.5

    # refused, with what to give, before anything runs: no classifier, no H&E, no transform for other sizes
    w.start()
    assert w.error is not None and "classifier" in w.error and w.task is None
    w.mil_classifier.setText(str(clf))
    w.start()
    assert "choose the H&E" in w.error
    w.mil_he.setCurrentText("he")
    _analyze(w, qtbot)
    assert w.error is not None and "transform" in w.error

    with open_slide(he_png) as he, open_slide(ihc_png) as ihc:
        shift = np.array([[1.0, 0, -64], [0, 1, -32], [0, 0, 1]])  # fixed (H&E) -> moving (IHC), px
        t = SlideTransform(shift, SlideRecord.of(he, (1.0, 1.0)), SlideRecord.of(ihc, (1.0, 1.0)))
    t.save(transform_path_for(he_png, ihc_png))
    viewer.add_shapes(name="a drawn region")  # a layer added meanwhile keeps the MIL choice
    assert w.region_shapes.currentText() == MIL_LABEL
    _analyze(w, qtbot)
    assert w.error is None, w.error
    cells = w.result.cells
    inside = cells.x < 128
    assert 0 < w.summary["tumour_cells"] == int(inside.sum()) < len(cells)
    assert w.summary["her2"]["n_cells"] == w.summary["tumour_cells"]
    region = mil_region(ihc_png, (256, 256), clf, he=he_png, transform=transform_path_for(he_png, ihc_png))
    core = w.result.summary(region)
    assert (
        w.summary["tumour_cells"] == core["tumour_cells"]
        and w.summary["cells_counted"] == core["cells_counted"]
    )
    assert w.summary["cells_counted"].startswith("tumour map from MIL model clf.safetensors at threshold 0.5")
    assert w.summary["tumour_region"]["mapping"].startswith("registration transform")
    assert "tumour map from MIL model" in w.status.text()


def test_a_virtual_ihc_needs_no_he(make_napari_viewer, qtbot, tmp_path):
    from napari_virtual_ihc.inference import EngineSettings, stain_slide

    src = tmp_path / "source.png"
    imsave(src, data.immunohistochemistry()[:192, :192], check_contrast=False)
    store = tmp_path / "source.ome.zarr"
    with open_slide(src) as slide:
        stain_slide(slide, _near_identity_generator(), store, EngineSettings(tile=192, batch=1))
    clf = darkness_classifier(tmp_path / "clf.safetensors", tile=T)
    viewer = make_napari_viewer()
    with open_slide(store) as vihc:
        dims = vihc.dimensions
        rgb = vihc.read_region((0, 0), 0, dims)
    meta = {PROVENANCE_KEY: layer_provenance(read_store_provenance(store), store)}
    viewer.add_image(rgb, rgb=True, name="vIHC", metadata=meta)
    w = StainOverlayWidget(viewer)
    w.source.setCurrentText("vIHC")
    w.scope.setCurrentText("whole image")
    w.nuclei.setCurrentText("classical")
    w.marker.setCurrentIndex(w.marker.findData("her2"))
    w.region_shapes.setCurrentText(MIL_LABEL)
    assert not w.mil_he.isEnabled()  # the store names its source
    w.mil_classifier.setText(str(clf))
    w.mil_threshold.setValue(0.6)
    _analyze(w, qtbot)
    assert w.error is None, w.error
    region = mil_region(store, dims, clf, threshold=0.6)
    core = w.result.summary(region)
    assert 0 < w.summary["tumour_cells"] == core["tumour_cells"] < w.result.n_nuclei
    assert w.summary["cells_counted"] == core["cells_counted"]
    assert "threshold 0.6" in w.summary["cells_counted"]
    assert w.summary["tumour_region"]["mapping"].startswith("virtual IHC")
    assert w.summary["tumour_region"]["he"] == str(src.resolve())
    assert imread(src).shape[:2] == (192, 192)
