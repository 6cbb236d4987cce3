"""Training throughput: ``virtual_ihc_train.loop.fit`` vs a reference-style pix2pix loop, in one run.

The reference is written like junyanz/pytorch-CycleGAN-and-pix2pix: an aligned dataset decoding with PIL
and cropping/flipping/normalising per item, a DataLoader, and ``optimize_parameters`` (forward, D step with
``set_requires_grad``, G step with GAN + 100 x L1). Both use the same generator and discriminator
(architecture, width), batch, crop, optimiser and number of loader workers; both are timed from the first
batch to the last step (model construction excluded), alternating runs, median of repeats.

    python benchmarks/bench_train.py [--ngf 32 --blocks 9 --crop 128 --batch 2 --steps 30 --repeats 3]

Prints iterations/s of each and the ratio (>= 1.0 means the project's loop is at least as fast), by wall clock
and per CPU-second of the process (the latter is what to trust on a machine shared with other work).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from virtual_ihc_train.config import set_value  # noqa: E402
from virtual_ihc_train.discriminators import NLayerDiscriminator, init_weights  # noqa: E402
from virtual_ihc_train.loop import fit  # noqa: E402
from virtual_ihc_train.presets import preset_config  # noqa: E402

from napari_virtual_ihc.models import build_generator  # noqa: E402


# ----------------------------------------------------------------- reference-style code (junyanz layout)
class AlignedDataset(Dataset):
    """Like junyanz's AlignedDataset + get_transform(crop, flip): PIL decode, crop, flip, ToTensor, Normalize."""

    def __init__(self, a_paths, b_paths, crop):
        self.a_paths, self.b_paths, self.crop = a_paths, b_paths, crop

    def __len__(self):
        return len(self.a_paths)

    def _transform(self, img, x, y, flip):
        img = img.crop((x, y, x + self.crop, y + self.crop))
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        t = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div(255)  # ToTensor
        return (t - 0.5) / 0.5  # Normalize((0.5,)*3, (0.5,)*3)

    def __getitem__(self, index):
        A = Image.open(self.a_paths[index]).convert("RGB")
        B = Image.open(self.b_paths[index]).convert("RGB")
        w, h = A.size
        x, y = np.random.randint(0, w - self.crop + 1), np.random.randint(0, h - self.crop + 1)
        flip = np.random.random() > 0.5
        return {"A": self._transform(A, x, y, flip), "B": self._transform(B, x, y, flip)}


class GANLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("real_label", torch.tensor(1.0))
        self.register_buffer("fake_label", torch.tensor(0.0))
        self.loss = nn.BCEWithLogitsLoss()

    def __call__(self, prediction, target_is_real):
        target = (self.real_label if target_is_real else self.fake_label).expand_as(prediction)
        return self.loss(prediction, target)


class Pix2PixModel:
    def __init__(self, netG, netD, lambda_L1=100.0, lr=2e-4):
        self.netG, self.netD = netG, netD
        self.criterionGAN, self.criterionL1 = GANLoss(), nn.L1Loss()
        self.lambda_L1 = lambda_L1
        self.optimizer_G = torch.optim.Adam(netG.parameters(), lr=lr, betas=(0.5, 0.999))
        self.optimizer_D = torch.optim.Adam(netD.parameters(), lr=lr, betas=(0.5, 0.999))

    def set_input(self, data):
        self.real_A, self.real_B = data["A"], data["B"]

    def forward(self):
        self.fake_B = self.netG(self.real_A)

    @staticmethod
    def set_requires_grad(net, requires_grad):
        for p in net.parameters():
            p.requires_grad = requires_grad

    def backward_D(self):
        fake_AB = torch.cat((self.real_A, self.fake_B), 1)
        pred_fake = self.netD(fake_AB.detach())
        self.loss_D_fake = self.criterionGAN(pred_fake, False)
        real_AB = torch.cat((self.real_A, self.real_B), 1)
        pred_real = self.netD(real_AB)
        self.loss_D_real = self.criterionGAN(pred_real, True)
        self.loss_D = (self.loss_D_fake + self.loss_D_real) * 0.5
        self.loss_D.backward()

    def backward_G(self):
        fake_AB = torch.cat((self.real_A, self.fake_B), 1)
        pred_fake = self.netD(fake_AB)
        self.loss_G_GAN = self.criterionGAN(pred_fake, True)
        self.loss_G_L1 = self.criterionL1(self.fake_B, self.real_B) * self.lambda_L1
        self.loss_G = self.loss_G_GAN + self.loss_G_L1
        self.loss_G.backward()

    def optimize_parameters(self):
        self.forward()
        self.set_requires_grad(self.netD, True)
        self.optimizer_D.zero_grad()
        self.backward_D()
        self.optimizer_D.step()
        self.set_requires_grad(self.netD, False)
        self.optimizer_G.zero_grad()
        self.backward_G()
        self.optimizer_G.step()


def reference_run(root: Path, args) -> tuple[float, float]:
    torch.manual_seed(0)
    netG = build_generator("resnet", n_blocks=args.blocks, ngf=args.ngf, norm="batch", use_dropout=True)
    netD = NLayerDiscriminator(6, ndf=args.ngf, n_layers=3, norm="batch")
    init_weights(netG)
    init_weights(netD)
    model = Pix2PixModel(netG.train(), netD.train())
    a = sorted((root / "HE" / "train").iterdir())
    b = sorted((root / "IHC" / "train").iterdir())
    loader = DataLoader(
        AlignedDataset(a, b, args.crop),
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        drop_last=False,
    )
    steps, t0, c0 = 0, time.perf_counter(), time.process_time()
    while steps < args.steps:
        for data in loader:
            model.set_input(data)
            model.optimize_parameters()
            steps += 1
            if steps >= args.steps:
                break
    return steps / (time.perf_counter() - t0), steps / (time.process_time() - c0)


# ----------------------------------------------------------------- the project's loop
def project_run(root: Path, run_dir: Path, args) -> tuple[float, float]:
    cfg = preset_config("pix2pix")
    for k, v in {
        "data.root": str(root),
        "data.preprocess": "crop",
        "data.crop_size": args.crop,
        "data.rot90": False,
        "data.num_workers": args.workers,
        "model.arch": "resnet",
        "model.arch_kwargs": {"n_blocks": args.blocks, "ngf": args.ngf, "norm": "batch", "use_dropout": True},
        "model.ndf": args.ngf,
        "train.batch_size": args.batch,
        "train.max_steps": args.steps,
        "train.checkpoint_every": 0,
        "train.checkpoint_each_epoch": False,
        "train.grid_every_epoch": False,
        "train.log_every": args.steps,
        "train.progress": False,
        "train.tensorboard": False,
    }.items():
        set_value(cfg, k, v)
    shutil.rmtree(run_dir, ignore_errors=True)
    fit(cfg, run_dir)
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    last = rows[-1]  # timed from the first batch to the last step, like the reference
    return args.steps / float(last["elapsed_s"]), args.steps / float(last["cpu_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=9)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="0: data loading counted in the CPU time too")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from trainer.conftest import write_bci  # tests/trainer/conftest.py: real H&E crops + a fixed stain remix

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        root = write_bci(tmp / "bci", ROOT / "tests" / "data", n_train=16, n_test=0, size=256)
        ref, ours = [], []
        for r in range(args.repeats):  # alternate so load changes hit both equally
            ref.append(reference_run(root, args))
            ours.append(project_run(root, tmp / f"run{r}", args))
            print(
                f"repeat {r}: reference {ref[-1][0]:.3f} it/s wall, {ref[-1][1]:.3f} it/CPU-s | "
                f"virtual_ihc_train {ours[-1][0]:.3f} it/s wall, {ours[-1][1]:.3f} it/CPU-s",
                flush=True,
            )
        print(
            f"\nresnet-{args.blocks} ngf {args.ngf}, PatchGAN ndf {args.ngf}, batch {args.batch}, crop {args.crop}, "
            f"{args.steps} steps, {args.workers} loader worker(s), {args.threads} torch thread(s); "
            f"medians of {args.repeats}"
        )
        for i, what in ((0, "wall-clock iterations/s"), (1, "iterations per CPU-second (main process)")):
            mr, mo = statistics.median(x[i] for x in ref), statistics.median(x[i] for x in ours)
            print(f"{what}: reference-style {mr:.3f}, virtual_ihc_train {mo:.3f}, ratio {mo / mr:.3f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
