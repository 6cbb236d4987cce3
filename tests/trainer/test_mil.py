"""MIL: the top-scoring tile of each bag is the one trained on the bag's label; a run writes a classifier."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from virtual_ihc_train.cli import main
from virtual_ihc_train.mil import bag_tiles, top_instances

from napari_virtual_ihc.models.classifier import load_classifier, read_classifier_header

from .conftest import he_crops


def test_top_instance_is_the_highest_tumour_probability_of_each_bag():
    scores = [torch.tensor([0.1, 0.7, 0.3]), torch.tensor([0.9]), torch.tensor([0.2, 0.2, 0.6, 0.59])]
    assert top_instances(scores) == [1, 0, 2]


def test_bag_tiles_cover_the_image_in_order():
    img = np.arange(8 * 12 * 3, dtype=np.uint8).reshape(8, 12, 3)
    t = bag_tiles(img, 4)
    assert t.shape == (6, 3, 4, 4)
    assert torch.equal(t[1], torch.from_numpy(img[0:4, 4:8]).permute(2, 0, 1).float() / 127.5 - 1)


def test_mil_cli_trains_and_writes_a_loadable_classifier(tmp_path, data_dir):
    d = tmp_path / "bags"
    d.mkdir()
    for i, crop in enumerate(he_crops(data_dir, 4, 64)):
        Image.fromarray(crop).save(d / f"b{i}.png")
    (tmp_path / "l.csv").write_text("b0,tumour\nb1,non-tumour\nb2,tumour\nb3,normal\n")
    out = tmp_path / "clf.safetensors"
    args = ["mil", str(d), str(tmp_path / "l.csv"), "--out", str(out), "--tile", "32", "--epochs", "2"]
    assert main([*args, "--width", "8"]) == 0
    assert read_classifier_header(out)["bags"] == 4
    assert load_classifier(out).fc.out_features == 2
    (tmp_path / "l.csv").write_text("b0,tumour\nb1,tumour\n")
    assert main([*args, "--width", "8"]) == 2  # one class only: MIL cannot learn
