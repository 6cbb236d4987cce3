"""A small Cellpose net trained here on synthetic nuclei (no weights can be downloaded), shared by the tests."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_virtual_ihc.stain import deconvolve

from ._synthetic import synthetic_nuclei


@pytest.fixture(scope="session")
def small_cellpose_path(tmp_path_factory) -> str:
    torch = pytest.importorskip("torch")
    from cellpose import train
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(0)
    np.random.seed(0)
    imgs, labs = [], []
    for s in range(8):
        rgb, lab = synthetic_nuclei((96, 96), n=9, seed=s)
        imgs.append(deconvolve(rgb)["hematoxylin"])
        labs.append(lab)
    net = CPnet([2, 16, 32, 64], 3, sz=3, max_pool=True, diam_mean=17.0)
    out = tmp_path_factory.mktemp("cp")
    t0 = time.perf_counter()
    path, losses, _ = train.train_seg(
        net,
        train_data=imgs,
        train_labels=labs,
        channels=[0, 0],
        n_epochs=60,
        learning_rate=0.05,
        batch_size=8,
        save_path=str(out),
        model_name="small_nuclei",
        min_train_masks=1,
        bsize=96,
        nimg_per_epoch=8,
    )
    print(f"cellpose train_seg: {time.perf_counter() - t0:.1f} s, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return str(path)
