"""torchrun --nproc_per_node 2 (gloo, CPU): a DistributedSampler gives each sample to exactly one rank per epoch."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict

from virtual_ihc_train.run_state import latest_checkpoint


def test_torchrun_two_processes_see_each_sample_once_per_epoch(tmp_path, bci_small):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "virtual_ihc_train.cli",
        "fit",
        "--preset",
        "pyramid-pix2pix",
        "--bci",
        str(bci_small),
        "--run-dir",
        str(run),
    ]
    for kv in (
        "data.preprocess=crop",
        "data.crop_size=32",
        "data.num_workers=0",
        "model.ndf=8",
        "model.arch_kwargs={n_blocks: 1, ngf: 8, norm: batch, use_dropout: false}",
        "train.batch_size=2",
        "optim.n_epochs=2",
        "optim.n_epochs_decay=0",
        "train.log_sample_indices=true",
        "train.progress=false",
        "train.tensorboard=false",
        "train.grid_every_epoch=false",
    ):
        cmd += ["--set", kv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]

    seen: dict[tuple[int, int], list[int]] = defaultdict(list)  # (epoch, rank) -> indices
    for rank in (0, 1):
        for line in (run / f"indices_rank{rank}.csv").read_text().splitlines():
            epoch, _step, idx = line.split(",")
            seen[(int(epoch), rank)] += [int(i) for i in idx.split()]
    for epoch in (0, 1):
        r0, r1 = seen[(epoch, 0)], seen[(epoch, 1)]
        assert len(r0) == len(r1) == 4  # 8 training pairs split over 2 ranks
        assert sorted(r0 + r1) == list(range(8)), f"epoch {epoch}: {r0} + {r1}"
    assert seen[(0, 0)] != seen[(1, 0)]  # reshuffled per epoch
    state_dir = latest_checkpoint(run)
    assert (state_dir / "rng_rank0.pt").is_file() and (state_dir / "rng_rank1.pt").is_file()
    assert (state_dir / "world_size.txt").read_text() == "2"
