"""MIL as the Ki-67 paper trains it (issue 30 item 3): each round scores every tissue tile of every bag, trains one
mini-batch epoch on the top-k of each bag; background skipped; slide-level accuracy/AUC logged; exact resume."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from virtual_ihc_train.cli import main
from virtual_ihc_train.mil import bag_tiles, select_top_k, slide_auc, top_instances, train_mil

from napari_virtual_ihc.models.classifier import load_classifier, normalise, read_classifier_header

from .conftest import he_crops


def test_top_instance_is_the_highest_tumour_probability_of_each_bag():
    scores = [torch.tensor([0.1, 0.7, 0.3]), torch.tensor([0.9]), torch.tensor([0.2, 0.2, 0.6, 0.59])]
    assert top_instances(scores) == [1, 0, 2]


def test_bag_tiles_cover_the_image_in_order():
    img = np.arange(8 * 12 * 3, dtype=np.uint8).reshape(8, 12, 3)
    t, where = bag_tiles(img, 4)
    assert t.shape == (6, 3, 4, 4) and where[1] == (4, 0)
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


def test_top_k_selection_and_auc_equal_direct_computations():
    rng = np.random.default_rng(0)
    scores = [torch.from_numpy(rng.random(n)) for n in (5, 1, 3, 7)]
    for k in (1, 2, 3, 10):
        direct = [list(np.argsort(-s.numpy(), kind="stable")[: min(k, len(s))]) for s in scores]
        assert select_top_k(scores, k) == direct
    assert select_top_k([torch.tensor([0.5, 0.9, 0.9])], 2) == [[1, 2]]  # ties: the earlier tile first
    labels, probs = [1, 0, 1, 0, 1], [0.9, 0.3, 0.3, 0.1, 0.8]
    pairs = [
        (p, q)
        for p, lp in zip(probs, labels, strict=True)
        if lp
        for q, lq in zip(probs, labels, strict=True)
        if not lq
    ]
    assert slide_auc(labels, probs) == sum((p > q) + 0.5 * (p == q) for p, q in pairs) / len(pairs)


T = 32
GLASS = (2 * T, T)  # (x, y) of the tile left blank in every bag


def planted_bags(root: Path, data_dir, n: int) -> tuple[Path, Path]:
    """``n`` bags of 2 x 3 tiles of 32 px: five real H&E crops and one tile of glass; every other bag is
    'tumour', three of its tissue tiles replaced by a planted pattern (a purple 4 px checkerboard)."""
    bags = root / "bags"
    bags.mkdir(parents=True)
    crops = he_crops(data_dir, 5 * n, T, seed=1)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:T, 0:T]
    checker = ((yy // 4 + xx // 4) % 2 == 0)[..., None]
    pattern = np.where(checker, np.array([70, 20, 110]), np.array([230, 200, 230])).astype(np.uint8)
    slots = [(0, 0), (T, 0), (2 * T, 0), (0, T), (T, T)]
    lines = []
    for b in range(n):
        tumour = b % 2 == 0
        planted = set(rng.choice(5, 3, replace=False).tolist()) if tumour else set()
        img = np.full((2 * T, 3 * T, 3), 245, np.uint8)
        for s, (x, y) in enumerate(slots):
            img[y : y + T, x : x + T] = pattern if s in planted else crops[5 * b + s]
        Image.fromarray(img).save(bags / f"bag{b:02d}.png")
        lines.append(f"bag{b:02d},{'tumour' if tumour else 'non-tumour'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return bags, root / "labels.csv"


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_mil_rounds_raise_slide_accuracy_skip_glass_and_log_selection(tmp_path, data_dir):
    bags, labels = planted_bags(tmp_path, data_dir, 16)
    out = tmp_path / "clf.safetensors"
    kw = {"tile": T, "lr": 3e-3, "width": 8, "batch_size": 4, "k": 1}
    rounds = 20
    train_mil(bags, labels, out, epochs=rounds, **kw)
    log = _rows(tmp_path / "clf.safetensors.mil.csv")
    acc = [float(r["slide_accuracy"]) for r in log]
    print("slide accuracy per round:", acc, "AUC:", [r["slide_auc"] for r in log])
    assert len(log) == rounds and all(int(r["selected"]) == 16 for r in log)
    # It learns: every bag right in some round. Rounds are noisy (four SGD steps each; BatchNorm's running
    # statistics lag), so which round, and whether it stays there, depends on the CPU's rounding: on an AVX2 EPYC
    # the first six rounds all read 0.5 and the 1.0 came in round 7; with other thread counts and seeds in rounds 4-7.
    assert max(acc) == 1.0 > acc[0] + 0.2
    sel = _rows(tmp_path / "clf.safetensors.selection.csv")
    assert len(sel) == rounds * 16
    assert all((int(r["x"]), int(r["y"])) != GLASS for r in sel)  # the glass tile is never a candidate
    assert {int(r["tile"]) for r in sel} <= set(range(5))  # five tissue tiles per bag


def test_mil_resume_is_bit_exact_and_selects_the_direct_top_k(tmp_path, data_dir):
    from safetensors.torch import load_file

    bags, labels = planted_bags(tmp_path, data_dir, 8)
    kw = {"tile": T, "lr": 3e-3, "width": 8, "batch_size": 4, "k": 2}
    straight, split = tmp_path / "straight.safetensors", tmp_path / "split.safetensors"
    train_mil(bags, labels, straight, epochs=4, **kw)
    train_mil(bags, labels, split, epochs=2, **kw)
    # round 2's selection, computed directly from the classifier the first two rounds wrote
    model = load_classifier(split)
    direct = {}
    for f in sorted(bags.iterdir()):
        tiles, where = bag_tiles(np.asarray(Image.open(f).convert("RGB")), T, 0.25)
        with torch.no_grad():
            p = torch.softmax(model(normalise(tiles)), 1)[:, 1]
        direct[f.stem] = sorted(where[i] for i in select_top_k([p], 2)[0])
    train_mil(bags, labels, split, epochs=4, resume=True, **kw)
    a, b = load_file(str(straight)), load_file(str(split))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(tmp_path / "straight.safetensors.mil.csv") == _rows(tmp_path / "split.safetensors.mil.csv")
    logged = {}
    for r in _rows(tmp_path / "split.safetensors.selection.csv"):
        if r["round"] == "2":
            logged.setdefault(r["bag"], []).append((int(r["x"]), int(r["y"])))
    assert {k: sorted(v) for k, v in logged.items()} == direct
