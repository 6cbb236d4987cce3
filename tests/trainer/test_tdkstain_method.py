"""The tdkstain method on real public H&E / IHC sections: update order, each loss term against a direct
computation, fit + exact resume, the knowledge cache across runs, export and seam-free staining."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from virtual_ihc_train.cli import main
from virtual_ihc_train.config import ConfigError, set_value
from virtual_ihc_train.loop import fit
from virtual_ihc_train.methods import Step, method_class
from virtual_ihc_train.methods.tdkstain.nets import encoder_features
from virtual_ihc_train.presets import preset_config
from virtual_ihc_train.run_state import latest_checkpoint

SECTIONS = (  # serial sections (not pixel-aligned; enough to exercise the training mechanics)
    ("Rat-Kidney_HE.jpg", "Rat-Kidney_PanCytokeratin.jpg"),
    ("Izd2-29-041-w35_HE.jpg", "Izd2-29-041-w35_proSPC.jpg"),
)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory, data_dir) -> Path:
    """4 pairs of 128 px cut at the same place from each H&E / IHC section."""
    root = tmp_path_factory.mktemp("tdk_pairs")
    for sub in ("he", "ihc"):
        (root / sub).mkdir()
    i = 0
    for he_name, ihc_name in SECTIONS:
        he = np.asarray(Image.open(data_dir / he_name).convert("RGB"))
        ihc = np.asarray(Image.open(data_dir / ihc_name).convert("RGB"))
        for y, x in ((250, 350), (420, 560)):
            Image.fromarray(he[y : y + 128, x : x + 128]).save(root / "he" / f"{i}.png")
            Image.fromarray(ihc[y : y + 128, x : x + 128]).save(root / "ihc" / f"{i}.png")
            i += 1
    return root


def tiny_tdkstain(pairs: Path, **overrides):
    """The tdkstain preset shrunk for the CPU (ngf 8, 1 block, nef 8, ndf 8), 96 px crops, classical nuclei."""
    cfg = preset_config("tdkstain")
    settings = {
        "data.kind": "paired",
        "data.source": str(pairs / "he"),
        "data.target": str(pairs / "ihc"),
        "data.preprocess": "crop",
        "data.crop_size": 96,
        "data.num_workers": 0,
        "model.arch_kwargs": {
            "n_blocks": 1,
            "ngf": 8,
            "norm": "instance",
            "use_dropout": False,
            "n_downsampling": 3,
        },
        "model.ndf": 8,
        "tdkstain.nef": 8,
        "tdkstain.n_estimator_blocks": 1,
        "tdkstain.nuclei_method": "classical",
        "optim.n_epochs": 1,
        "optim.n_epochs_decay": 2,
        "train.checkpoint_every": 0,
        "train.checkpoint_each_epoch": True,
        "train.grid_every_epoch": False,
        "train.log_every": 1,
        "train.progress": False,
        "train.tensorboard": False,
    }
    settings.update(overrides)
    for k, v in settings.items():
        set_value(cfg, k, v)
    return cfg


def _params(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def method_and_batch(pairs_dir, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_tdkstain(pairs_dir, **{"tdkstain.cache_dir": str(tmp_path / "cache")})
    cls = method_class(cfg)
    cls.check_config(cfg)
    dataset, _ = cls.build_datasets(cfg)
    method = cls(cfg, torch.device("cpu"))
    item = dataset[0]
    batch = {k: (v[None] if isinstance(v, torch.Tensor) else [v]) for k, v in item.items()}
    step = Step(0, 1, True, torch.amp.GradScaler("cuda", enabled=False), torch.device("cpu"))
    return method, batch, step


def test_update_order_e_leaves_g_and_g_leaves_d_and_e(method_and_batch):
    method, batch, step = method_and_batch
    nets = method.nets
    seen: dict[str, dict[str, dict[str, torch.Tensor]]] = {}

    def snapshot(name):
        def hook(opt, args, kwargs):
            seen[name] = {n: _params(net) for n, net in nets.items()}

        return hook

    before = {n: _params(net) for n, net in nets.items()}
    handles = [
        method.opt_E.register_step_post_hook(snapshot("after_E")),
        method.opt_D.register_step_post_hook(snapshot("after_D")),
        method.opt_G.register_step_post_hook(snapshot("after_G")),
    ]
    method.train_step(batch, step)
    for h in handles:
        h.remove()
    assert list(seen) == ["after_E", "after_D", "after_G"]  # E, then D, then G
    e, d, g = seen["after_E"], seen["after_D"], seen["after_G"]
    assert not _same(e["E"], before["E"])  # E learned ...
    assert _same(e["G"], before["G"]) and _same(e["D"], before["D"])  # ... and changed neither G nor D
    assert not _same(d["D"], before["D"]) and _same(d["G"], before["G"]) and _same(d["E"], e["E"])
    assert not _same(g["G"], before["G"])  # G learned ...
    assert _same(g["D"], d["D"]) and _same(g["E"], e["E"])  # ... with D and E frozen


def test_every_loss_term_equals_its_direct_computation(method_and_batch):
    method, batch, step = method_and_batch
    cfg = method.cfg
    G0, D0, E0 = (copy.deepcopy(method.nets[k]) for k in ("G", "D", "E"))
    losses = method.train_step(batch, step)
    D1, E1 = method.nets["D"], method.nets["E"]  # G's step leaves them as their own steps left them
    a, b, dab, m, k = (batch[x] for x in ("A", "B", "dab", "mask", "density"))
    with torch.no_grad():
        fake, fake_masked = G0(a), G0(a * m)
        enc = lambda g, x: encoder_features(g, x, [6, 9, 12])  # noqa: E731
        expect = {
            "loss_E": 10 * F.mse_loss(E0(enc(G0, b), k.shape[-2:]), k),
            "loss_D_fake": sum(((p - 0) ** 2).mean() for p in D0(torch.cat((a, fake), 1))),
            "loss_D_real": sum(((p - 1) ** 2).mean() for p in D0(torch.cat((a, b), 1))),
            "loss_G_GAN": sum(((p - 1) ** 2).mean() for p in D1(torch.cat((a, fake), 1))),
            "loss_G_L1": 10 * (fake - b).abs().mean(),
            "loss_G_mask": 10 * (fake_masked - dab).abs().mean(),
            "loss_G_nuclei": 10 * ((E1(enc(G0, fake), k.shape[-2:]) - k) ** 2).mean(),
        }
    expect["loss_D"] = 0.5 * (expect["loss_D_fake"] + expect["loss_D_real"])
    expect["loss_G"] = sum(expect[t] for t in ("loss_G_GAN", "loss_G_L1", "loss_G_mask", "loss_G_nuclei"))
    assert cfg.tdkstain.lambda_l1 == cfg.tdkstain.lambda_mask == cfg.tdkstain.lambda_nuclei == 10.0
    for name, value in expect.items():
        assert float(losses[name]) == pytest.approx(float(value), rel=1e-4), name
    # the maps the batch carries: K_M in [-1, 1] (3 ch), M and K_N in [0, 1] (1 ch), same size as B
    assert (
        dab.shape == b.shape and m.shape[1] == k.shape[1] == 1 and 0 <= float(m.min()) <= float(m.max()) <= 1
    )


def _all_weights(run: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    ckpt = latest_checkpoint(run)
    nets = {p.stem: load_file(str(p)) for p in ckpt.glob("*.safetensors")}
    return nets, torch.load(ckpt / "state.pt", weights_only=True)


def test_fit_resume_bit_exact_cache_reused_export_and_seam_free_stain(pairs_dir, tmp_path, data_dir, capsys):
    n = 3  # 4 images, batch 1: 4 steps per epoch; the stop falls mid-epoch and 2n crosses an lr decay
    straight, split = tmp_path / "straight", tmp_path / "split"
    fit(tiny_tdkstain(pairs_dir, **{"train.max_steps": 2 * n}), straight)
    fit(tiny_tdkstain(pairs_dir, **{"train.max_steps": n}), split)
    first = json.loads((split / "knowledge" / "knowledge.json").read_text())
    assert first["last_run"] == {"computed": 4, "loaded": 0, "rejected": 0}
    assert main(["resume", str(split), "--set", f"train.max_steps={2 * n}"]) == 0
    second = json.loads((split / "knowledge" / "knowledge.json").read_text())
    assert second["last_run"] == {
        "computed": 0,
        "loaded": 4,
        "rejected": 0,
    }  # the resumed run recomputed none
    assert second["methods"] == "classical + classical"

    w1, s1 = _all_weights(straight)
    w2, s2 = _all_weights(split)
    assert set(w1) == {"generator", "discriminator", "E"} and s1["step"] == s2["step"] == 2 * n
    for net in w1:
        for key in w1[net]:
            assert torch.equal(w1[net][key], w2[net][key]), f"{net} {key} differs"
    for opt in ("opt_G", "opt_D", "opt_E"):
        for k, v in s1[opt]["state"].items():
            assert torch.equal(v["exp_avg"], s2[opt]["state"][k]["exp_avg"]), opt
    assert s1["sched_E"] == s2["sched_E"] and s1["sched_G"]["last_epoch"] == 1

    # the run's config records what segmented the nuclei
    cfg_text = (split / "config.yaml").read_text()
    assert "nuclei_method_used: classical + classical" in cfg_text and "method: tdkstain" in cfg_text

    # a resume with other knowledge parameters is refused unless asked for, and then recomputes every map
    other = ["--set", "train.max_steps=7", "--set", "tdkstain.nuclei_sigma=5"]
    assert main(["resume", str(split), *other]) == 2
    assert "other parameters" in capsys.readouterr().err
    assert json.loads((split / "knowledge" / "knowledge.json").read_text())["last_run"]["computed"] == 4
    assert "nuclei_sigma: 11.0" in (split / "config.yaml").read_text()  # the refused resume changed nothing
    assert main(["resume", str(split), *other, "--set", "tdkstain.allow_knowledge_change=true"]) == 0
    assert json.loads((split / "knowledge" / "knowledge.json").read_text())["last_run"]["loaded"] == 4

    # export, then stain a slide region through the plugin's CLI: tiles must join without seams
    model = tmp_path / "tdk.safetensors"
    assert main(["export", str(split), "--out", str(model), "--mpp", "0.5"]) == 0
    from napari_virtual_ihc.cli import main as vihc_main
    from napari_virtual_ihc.models import load_generator, read_checkpoint

    prov = read_checkpoint(model)[0].provenance
    assert prov["method"] == "tdkstain" and prov["nuclei_method"] == "classical + classical"
    assert prov["tdkstain_losses"]["lambda_mask"] == 10.0 and prov["steps"] == 7

    he = np.asarray(Image.open(data_dir / "Rat-Kidney_HE.jpg").convert("RGB"))[100:420, 200:600]
    slide = tmp_path / "slide.png"
    Image.fromarray(he).save(slide)
    out = tmp_path / "stained"
    code = vihc_main(
        ["stain", str(slide), "--model", str(model), "--out", str(out), "--tile", "128", "--quiet"]
    )
    assert code == 0
    import zarr

    tiled = np.asarray(zarr.open_group(str(out / "slide.ome.zarr"), mode="r")["0"]).transpose(1, 2, 0)
    loaded = load_generator(model)
    with torch.no_grad():
        x = torch.from_numpy(he.copy()).permute(2, 0, 1).float()[None] / 127.5 - 1
        whole = ((loaded.module(x)[0].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255)
    mse = float(((tiled.astype(np.float64) - whole) ** 2).mean())
    psnr = 10 * np.log10(255**2 / max(mse, 1e-12))
    print(f"tiled vs whole-image PSNR: {psnr:.1f} dB")
    assert psnr >= 35.0


def test_lr_is_stepped_at_the_start_of_each_epoch_as_the_reference(pairs_dir):
    """balball/TDKstain's train.py calls update_learning_rate() first thing in every epoch: 1-based epoch E runs
    at lambda_rule(E) = 1 - max(0, E + 1 - n_epochs) / (n_epochs_decay + 1); the last epoch at 0."""
    cfg = tiny_tdkstain(pairs_dir, **{"optim.n_epochs": 1, "optim.n_epochs_decay": 2, "optim.lr": 0.3})
    method = method_class(cfg)(cfg, torch.device("cpu"))
    seen = []
    for _ in range(3):  # the loop steps every scheduler at each epoch's end
        seen.append([opt.param_groups[0]["lr"] for opt in method.optimizers().values()])
        for sched in method.schedulers().values():
            sched.step()
    expected = [0.3 * (1 - max(0, e + 1 - 1) / 3) for e in (1, 2, 3)]
    assert [row[0] for row in seen] == pytest.approx(expected) and expected[-1] == 0
    assert all(len(set(row)) == 1 for row in seen)  # G, D and E alike


def test_bad_configs_are_refused(pairs_dir, tmp_path):
    cls = method_class(tiny_tdkstain(pairs_dir))
    for key, value in (
        ("data.kind", "unpaired"),
        ("model.arch", "unet_256"),
        ("loss.gan_mode", "vanilla"),
        ("data.crop_size", 100),  # not a multiple of 8
        ("data.crop_size", 64),  # below the coarsest discriminator scale
        ("tdkstain.nuclei_method", "guess"),
    ):
        cfg = tiny_tdkstain(pairs_dir, **{key: value})
        with pytest.raises(ConfigError):
            cls.check_config(cfg)


@pytest.mark.slow
def test_torchrun_two_processes_train_tdkstain(pairs_dir, tmp_path):
    """DDP (gloo, CPU) wraps G, D and E; E is frozen and G's encoder is used outside its DDP forward in
    G's step: two ranks train two steps without a reduction error and rank 0 writes every net."""
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "virtual_ihc_train.cli", "fit", "--preset", "tdkstain", "--run-dir", str(run)]
    cmd += ["--paired", str(pairs_dir / "he"), str(pairs_dir / "ihc")]
    for kv in (
        "data.preprocess=crop",
        "data.crop_size=96",
        "data.num_workers=0",
        "model.ndf=8",
        "model.arch_kwargs={n_blocks: 1, ngf: 8, norm: instance, use_dropout: false, n_downsampling: 3}",
        "tdkstain.nef=8",
        "tdkstain.n_estimator_blocks=1",
        "tdkstain.nuclei_method=classical",
        "train.max_steps=2",
        "train.progress=false",
        "train.tensorboard=false",
        "train.grid_every_epoch=false",
    ):
        cmd += ["--set", kv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = latest_checkpoint(run)
    assert {p.name for p in ckpt.glob("*.safetensors")} == {
        "generator.safetensors",
        "discriminator.safetensors",
        "E.safetensors",
    }
    assert torch.load(ckpt / "state.pt", weights_only=True)["step"] == 2
