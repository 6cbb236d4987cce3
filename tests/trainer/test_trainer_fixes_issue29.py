"""Issue 29's trainer defects, each first seen failing: a resumed ``--set optim.lr`` that the restored
optimisers ignored (item 3), an unusable TDKstain knowledge cache ending in a traceback (item 10), a bad
``--slide-pattern`` ending in a traceback (item 11), and ``mist-resplit --out`` inside its own input (minor)."""

from __future__ import annotations

import csv

import pytest
import torch
from virtual_ihc_train.cli import main
from virtual_ihc_train.loop import diverged_message, fit
from virtual_ihc_train.run_state import latest_checkpoint

from .conftest import tiny_config
from .test_mist_split import mist_leaky  # noqa: F401  (fixture)
from .test_tdkstain_method import pairs_dir, tiny_tdkstain  # noqa: F401  (fixture)

SMALL = {"data.preprocess": "crop", "data.crop_size": 32}


def _lr_rows(run) -> dict[int, float]:
    with (run / "metrics.csv").open() as f:
        return {int(r["step"]): float(r["lr"]) for r in csv.DictReader(f)}


def test_resume_set_lr_reaches_the_restored_optimisers_and_the_log(tmp_path, bci_small, capsys):
    run = tmp_path / "run"
    fit(tiny_config(bci_small, **SMALL, **{"train.max_steps": 2}), run)  # 8 images, batch 4: one epoch
    assert _lr_rows(run)[2] == pytest.approx(2e-4)
    assert main(["resume", str(run), "--set", "optim.lr=0.05", "--set", "train.max_steps=4"]) == 0
    assert "optim.lr 0.0002 -> 0.05" in capsys.readouterr().out
    state = torch.load(latest_checkpoint(run) / "state.pt", weights_only=True)
    cfg = tiny_config(bci_small)
    factor = 1.0 - max(0, 1 + 1 - cfg.optim.n_epochs) / float(cfg.optim.n_epochs_decay + 1)  # after epoch 1
    for opt, sched in (("opt_G", "sched_G"), ("opt_D", "sched_D")):
        assert state[sched]["base_lrs"] == [0.05], sched
        assert state[opt]["param_groups"][0]["initial_lr"] == 0.05
        assert state[opt]["param_groups"][0]["lr"] == pytest.approx(0.05 * factor)
    rows = _lr_rows(run)
    assert rows[2] == pytest.approx(2e-4) and rows[3] == rows[4] == pytest.approx(0.05 * factor)
    # an unchanged lr on resume leaves the restored state alone (the bit-exact resume tests cover the rest)
    assert main(["resume", str(run), "--set", "train.max_steps=5"]) == 0
    assert "optim.lr" not in capsys.readouterr().out


def test_divergence_hint_names_the_resume_that_applies_it():
    msg = diverged_message("loss_G", 3, 0, None)
    assert "resume RUN --set optim.lr=" in msg and "restored optimisers" in msg


def test_unusable_knowledge_cache_is_a_message_not_a_traceback(pairs_dir, tmp_path, capsys):  # noqa: F811
    cfg = tiny_tdkstain(pairs_dir, **{"train.max_steps": 1})
    cfg.save(tmp_path / "cfg.yaml")
    base = ["fit", "--preset", "tdkstain", "--config", str(tmp_path / "cfg.yaml")]
    # a cache folder that cannot be made, and one that exists but cannot be written
    for i, cache in enumerate(("/proc/no-such-dir/k", "/sys")):
        run = tmp_path / f"run{i}"
        code = main([*base, "--run-dir", str(run), "--set", f"tdkstain.cache_dir={cache}"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "Traceback" not in err and "tdkstain.cache_dir" in err and cache in err, err
        assert ".tmp" not in err, err  # names the folder, not our temporary file
        assert not run.exists()
    # an entry path that is a folder
    from virtual_ihc_train.methods.tdkstain.knowledge_maps import KnowledgeCache, file_sha256, load_segmenters
    from virtual_ihc_train.methods.tdkstain.method import knowledge_params

    cache_dir = tmp_path / "cache"
    params = knowledge_params(cfg)
    label = load_segmenters(params).label
    entry = KnowledgeCache(cache_dir, params, label).entry_path(
        file_sha256(sorted((pairs_dir / "ihc").iterdir())[0])
    )
    entry.mkdir(parents=True)
    run = tmp_path / "run_dir_entry"
    code = main([*base, "--run-dir", str(run), "--set", f"tdkstain.cache_dir={cache_dir}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "is a folder" in err and entry.name in err, err
    assert entry.is_dir() and not any(entry.iterdir())  # left as it was


def test_mist_resplit_bad_pattern_and_out_inside_input(tmp_path, mist_leaky, capsys):  # noqa: F811
    code = main(["mist-resplit", str(mist_leaky), "--out", str(tmp_path / "o"), "--slide-pattern", "("])
    err = capsys.readouterr().err
    assert code == 2 and "--slide-pattern" in err and "not a valid regular expression" in err, err
    assert not (tmp_path / "o").exists()
    before = sorted(p.relative_to(mist_leaky) for p in mist_leaky.rglob("*"))
    for inside in (mist_leaky / "trainA" / "sub", mist_leaky):
        code = main(["mist-resplit", str(mist_leaky), "--out", str(inside)])
        err = capsys.readouterr().err
        assert code == 2 and "inside the MIST folder" in err, err
    assert sorted(p.relative_to(mist_leaky) for p in mist_leaky.rglob("*")) == before
