"""CycleGAN: the junyanz terms against direct computations, the image pool, the class plane, and a run that
trains, resumes bit-exactly and exports (real H&E tiles and real DAB IHC sections from tests/data)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from virtual_ihc_train.cli import main
from virtual_ihc_train.config import set_value
from virtual_ihc_train.data import DatasetError
from virtual_ihc_train.loop import fit
from virtual_ihc_train.methods.cyclegan import CycleGAN, ImagePool, class_plane, with_class
from virtual_ihc_train.presets import preset_config
from virtual_ihc_train.run_state import latest_checkpoint

from napari_virtual_ihc.models import WrongDirectionError, load_generator, read_checkpoint

from .conftest import he_crops

IHC_FILES = ("Rat-Kidney_PanCytokeratin.jpg", "Izd2-29-041-w35_proSPC.jpg")


@pytest.fixture(scope="session")
def unpaired_small(tmp_path_factory, data_dir):
    """6 H&E crops of 48 px; 4 IHC crops of 48 px from the two DAB sections (tissue-centred)."""
    root = tmp_path_factory.mktemp("unpaired")
    (root / "HE").mkdir()
    (root / "IHC").mkdir()
    for i, crop in enumerate(he_crops(data_dir, 6, 48)):
        Image.fromarray(crop).save(root / "HE" / f"he{i}.png")
    for i, name in enumerate(IHC_FILES):
        rgb = np.asarray(Image.open(data_dir / name).convert("RGB"))
        h, w = rgb.shape[:2]
        for j, (y, x) in enumerate(((h // 2, w // 2), (h // 3, w // 2))):
            Image.fromarray(rgb[y : y + 48, x : x + 48]).save(root / "IHC" / f"ihc{i}{j}.png")
    (root / "labels_HE.csv").write_text(
        "file,class\n" + "".join(f"he{i},{'tumour' if i % 2 else 'normal'}\n" for i in range(6))
    )
    (root / "labels_IHC.csv").write_text(
        "file,class\n" + "".join(f"ihc{i}{j},{j}\n" for i in range(2) for j in range(2))
    )
    return root


def tiny_cyclegan(root, **overrides):
    cfg = preset_config("cyclegan")
    settings = {
        "data.source": str(root / "HE"),
        "data.target": str(root / "IHC"),
        "data.crop_size": 32,
        "data.num_workers": 0,
        "model.arch_kwargs": {"n_blocks": 1, "ngf": 8, "norm": "instance", "use_dropout": False},
        "model.ndf": 8,
        "model.n_layers_d": 2,
        "cyclegan.pool_size": 3,
        "train.batch_size": 2,
        "train.checkpoint_every": 0,
        "train.checkpoint_each_epoch": False,
        "train.grid_every_epoch": False,
        "train.log_every": 1,
        "train.progress": False,
        "train.tensorboard": False,
    }
    settings.update(overrides)
    for k, v in settings.items():
        set_value(cfg, k, v)
    return cfg


def test_preset_is_junyanz_with_the_papers_lr_and_crop():
    cfg = preset_config("cyclegan")
    assert cfg.method == "cyclegan" and cfg.data.kind == "unpaired"
    assert (
        cfg.loss.gan_mode == "lsgan" and cfg.model.discriminator == "patch" and cfg.model.norm_d == "instance"
    )
    assert cfg.model.arch_kwargs == {"n_blocks": 9, "ngf": 64, "norm": "instance", "use_dropout": False}
    cc = cfg.cyclegan
    assert (cc.lambda_A, cc.lambda_B, cc.lambda_identity, cc.pool_size) == (10.0, 10.0, 0.5, 50)
    assert (cfg.optim.lr, cfg.optim.beta1, cfg.data.crop_size) == (1e-4, 0.5, 224)
    assert cfg.optim.n_epochs + cfg.optim.n_epochs_decay == 100


def test_image_pool_returns_what_junyanz_pool_returns_seeded():
    pool = ImagePool(3, seed=7)
    imgs = [torch.full((1, 1, 1, 1), float(i)) for i in range(10)]
    got = [float(pool.query(im)[0, 0, 0, 0]) for im in imgs]
    # the same draws by hand: fill to 3, then p > 0.5 swaps a random slot
    rng, stored, expected = random.Random(7), [], []
    for i in range(10):
        if len(stored) < 3:
            stored.append(i)
            expected.append(i)
        elif rng.uniform(0, 1) > 0.5:
            j = rng.randint(0, 2)
            expected.append(stored[j])
            stored[j] = i
        else:
            expected.append(i)
    assert got == expected
    assert got[:3] == [0, 1, 2] and got != list(range(10))  # it did return older fakes
    # the state round-trips: a restored pool draws the same next images
    state = pool.state_dict()
    other = ImagePool(3, seed=0)
    other.load_state_dict(state, torch.device("cpu"))
    nxt = torch.full((1, 1, 1, 1), 99.0)
    assert torch.equal(pool.query(nxt), other.query(nxt))
    assert ImagePool(0).query(imgs[4]) is imgs[4]


def test_cycle_and_identity_terms_match_direct_l1(unpaired_small):
    cfg = tiny_cyclegan(unpaired_small)
    torch.manual_seed(0)
    m = CycleGAN(cfg, torch.device("cpu"))
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    G, G_B = m.nets["G"], m.nets["G_B"]
    fake_B, fake_A = G(a), G_B(b)
    rec_A, rec_B = G_B(fake_B), G(fake_A)
    t = m.generator_losses(a, b, fake_A, fake_B, rec_A, rec_B, None, None)
    torch.testing.assert_close(t["loss_cycle_A"], (rec_A - a).abs().mean() * 10)
    torch.testing.assert_close(t["loss_cycle_B"], (rec_B - b).abs().mean() * 10)
    torch.testing.assert_close(t["loss_idt_A"], (G(b) - b).abs().mean() * 10 * 0.5)
    torch.testing.assert_close(t["loss_idt_B"], (G_B(a) - a).abs().mean() * 10 * 0.5)
    torch.testing.assert_close(t["loss_G_A"], ((m.nets["D_A"](fake_B) - 1) ** 2).mean())  # LSGAN
    d = m.discriminator_loss(m.nets["D_A"], b, fake_B)
    torch.testing.assert_close(
        d, 0.5 * (((m.nets["D_A"](b) - 1) ** 2).mean() + (m.nets["D_A"](fake_B) ** 2).mean())
    )


def test_class_plane_is_the_fourth_input_of_both_generators(unpaired_small):
    cfg = tiny_cyclegan(
        unpaired_small,
        **{
            "cyclegan.class_channel": True,
            "cyclegan.labels_A": str(unpaired_small / "labels_HE.csv"),
            "cyclegan.labels_B": str(unpaired_small / "labels_IHC.csv"),
        },
    )
    m = CycleGAN(cfg, torch.device("cpu"))
    for name in ("G", "G_B"):  # the plane bypasses the first conv: it is added after the first InstanceNorm
        assert m.nets[name].model[1].in_channels == 3 and m.nets[name].class_bias.in_channels == 1
    x = torch.zeros(2, 3, 8, 8)
    plane = class_plane(["tumour", "non-tumour"], x.shape, x.device)
    inp = with_class(x, plane)
    assert inp.shape == (2, 4, 8, 8)
    assert torch.equal(inp[0, 3], torch.ones(8, 8)) and torch.equal(inp[1, 3], -torch.ones(8, 8))
    assert torch.equal(inp[:, :3], x)
    with pytest.raises(DatasetError, match="needs a class"):
        class_plane(["tumour", ""], x.shape, x.device)
    # both generators really see the plane: the same image with the other class gives another output (by far
    # more than rounding: fed as a plain input channel, the first InstanceNorm removed it exactly)
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    planes = class_plane(["tumour", "non-tumour"], image.shape, image.device)
    for name in ("G", "G_B"):
        net = m.nets[name].eval()
        with torch.no_grad():
            seen = (net(with_class(image, planes)) - net(with_class(image, -planes))).abs().amax()
        assert seen > 1e-3, name
    spec = m.generator_spec()
    assert spec.class_channel is not None and spec.arch_kwargs["input_nc"] == 4


def test_a_constant_plane_fed_as_an_input_channel_is_removed_by_the_first_instance_norm():
    """Why the class plane goes in after the first norm: as a plain 4th input channel of the reference ResNet
    layout, flipping the class changes the output only by rounding."""
    from napari_virtual_ihc.models import build_generator

    torch.manual_seed(0)
    plain = build_generator("resnet", input_nc=4, ngf=8, n_blocks=2, norm="instance").double().eval()
    image = torch.rand(1, 3, 32, 32, dtype=torch.float64) * 2 - 1
    ones = torch.ones(1, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        flip = (plain(torch.cat([image, ones], 1)) - plain(torch.cat([image, -ones], 1))).abs().amax()
    assert flip < 1e-9


def test_unpaired_bad_input_is_named(tmp_path, unpaired_small):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no images"):
        CycleGAN.build_datasets(tiny_cyclegan(unpaired_small, **{"data.target": str(empty)}))
    with pytest.raises(DatasetError, match=r"smaller than data\.crop_size"):
        CycleGAN.build_datasets(tiny_cyclegan(unpaired_small, **{"data.crop_size": 64}))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_text("not an image")
    with pytest.raises(DatasetError, match=r"x\.png"):
        CycleGAN.build_datasets(tiny_cyclegan(unpaired_small, **{"data.target": str(bad)}))
    csv = tmp_path / "l.csv"
    csv.write_text("he0,tumour\nmissing,tumour\n")
    with pytest.raises(DatasetError, match="missing"):
        CycleGAN.build_datasets(tiny_cyclegan(unpaired_small, **{"cyclegan.labels_A": str(csv)}))
    csv.write_text("he0,maybe\n")
    with pytest.raises(DatasetError, match="unknown class"):
        CycleGAN.build_datasets(tiny_cyclegan(unpaired_small, **{"cyclegan.labels_A": str(csv)}))


CASES = {
    "plain": {},
    "class-channel-accum": {
        "cyclegan.class_channel": True,
        "cyclegan.labels_A": "labels_HE.csv",
        "cyclegan.labels_B": "labels_IHC.csv",
        "train.batch_size": 1,
        "train.grad_accum": 2,
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fit_resume_bit_exact_and_export(tmp_path, unpaired_small, case):
    over = {
        k: (str(unpaired_small / v) if k.startswith("cyclegan.labels") else v) for k, v in CASES[case].items()
    }
    n = 4  # 6 images, batch 2 -> 3 steps per epoch: the stop falls mid-epoch, pools fill and swap
    straight, split = tmp_path / "straight", tmp_path / "split"
    fit(tiny_cyclegan(unpaired_small, **over, **{"train.max_steps": 2 * n}), straight)
    fit(tiny_cyclegan(unpaired_small, **over, **{"train.max_steps": n}), split)
    assert main(["resume", str(split), "--set", f"train.max_steps={2 * n}"]) == 0
    c1, c2 = latest_checkpoint(straight), latest_checkpoint(split)
    for f in ("generator", "G_B", "D_A", "D_B"):
        w1, w2 = load_file(str(c1 / f"{f}.safetensors")), load_file(str(c2 / f"{f}.safetensors"))
        for k in w1:
            assert torch.equal(w1[k], w2[k]), f"{f} {k} differs"
    s1 = torch.load(c1 / "state.pt", weights_only=True)
    s2 = torch.load(c2 / "state.pt", weights_only=True)
    assert torch.equal(s1["pool_B"]["images"], s2["pool_B"]["images"])
    # export: the H&E -> IHC generator by default, the reverse on request; both load in the plugin's loader
    out = tmp_path / "g.safetensors"
    assert main(["export", str(split), "--out", str(out)]) == 0
    loaded = load_generator(out)
    assert loaded.spec.target_stain == "IHC" and loaded.spec.provenance["preset"] == "cyclegan"
    assert (loaded.spec.class_channel is not None) == ("class" in case)
    rev = tmp_path / "rev.safetensors"
    assert main(["export", str(split), "--out", str(rev), "--net", "G_B"]) == 0
    assert read_checkpoint(rev)[0].target_stain == "H&E"  # the header says which way it goes
    with pytest.raises(WrongDirectionError, match="H&E"):  # and the stainer will not run it on H&E
        load_generator(rev)
    # the exported generator stains a slide through `virtual-ihc stain` (one class for the slide if it has one)
    from napari_virtual_ihc.cli import main as plugin_main

    he = next((unpaired_small / "HE").iterdir())
    args = [
        "stain",
        str(he),
        "--model",
        str(out),
        "--out",
        str(tmp_path / "stained"),
        "--quiet",
        "--tile",
        "64",
    ]
    assert plugin_main([*args, "--tumour-class", "tumour"] if "class" in case else args) == 0
    assert (tmp_path / "stained" / f"{he.stem}.ome.zarr").is_dir()


def test_class_from_mil_classifiers_when_no_labels(tmp_path, unpaired_small):
    from virtual_ihc_train.methods import Step

    from napari_virtual_ihc.models.classifier import ResNet34, save_classifier

    for side in ("A", "B"):
        torch.manual_seed(1)
        save_classifier(tmp_path / f"c{side}.safetensors", ResNet34(2, width=8).eval(), {"tile": 32})
    cfg = tiny_cyclegan(
        unpaired_small,
        **{
            "cyclegan.class_channel": True,
            "cyclegan.classifier_A": str(tmp_path / "cA.safetensors"),
            "cyclegan.classifier_B": str(tmp_path / "cB.safetensors"),
        },
    )
    ds, _ = CycleGAN.build_datasets(cfg)
    m = CycleGAN(cfg, torch.device("cpu"))
    batch = {
        k: (torch.stack([ds[i][k] for i in range(2)]) if k in "AB" else [ds[i][k] for i in range(2)])
        for k in ("A", "B", "label", "label_B")
    }
    assert batch["label"] == ["", ""]  # no weak labels: the classifiers decide
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    losses = m.train_step(batch, Step(0, 1, True, scaler, torch.device("cpu")))
    assert all(torch.isfinite(v) for v in losses.values())
    plane = m.domain_plane("A", ["", ""], batch["A"])
    assert set(plane.unique().tolist()) <= {-1.0, 1.0}
    assert m.generator_spec().class_channel["classifier"] == "cA.safetensors"
