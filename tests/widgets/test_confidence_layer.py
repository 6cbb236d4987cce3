"""The dropout confidence map written by ``dropout="mean:N"`` is shown as a layer aligned with the H&E."""

from __future__ import annotations

import numpy as np
import torch

from napari_virtual_ihc._widgets.stain.confidence import add_confidence_layer
from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.confidence import confidence_store_path
from napari_virtual_ihc.models import ModelSpec, build_generator
from napari_virtual_ihc.models.spec import LoadedGenerator
from napari_virtual_ihc.slides.base import ArraySlide


def test_confidence_store_becomes_an_aligned_layer(make_napari_viewer, he_crop, tmp_path):
    torch.manual_seed(0)
    module = build_generator("resnet", ngf=4, n_blocks=1, norm="instance", use_dropout=True).eval()
    spec = ModelSpec("resnet", {"ngf": 4, "n_blocks": 1, "norm": "instance", "use_dropout": True}, mpp=0.5)
    model = LoadedGenerator(module, spec, "test", "conf-layer")
    img = he_crop[:128, :192]
    store = tmp_path / "c.ome.zarr"
    rep = stain_slide(ArraySlide(img, 0.5), model, store, EngineSettings(tile=64, dropout="mean:2"))
    assert rep.settings["confidence_store"] == str(confidence_store_path(store))
    viewer = make_napari_viewer()
    he = viewer.add_image(img, rgb=True, name="he", scale=(0.5, 0.5))
    layer = add_confidence_layer(viewer, rep.settings["confidence_store"], he, "m")
    assert layer is not None and layer in viewer.layers and layer.multiscale
    assert layer.data[0].shape == (128, 192)
    np.testing.assert_allclose(layer.scale, he.scale)
    assert np.asarray(layer.data[0]).max() > 0  # two dropout samples differ somewhere
