"""The training loop of the pix2pix family, meant to be read top to bottom in one sitting.

One optimizer step = ``grad_accum`` micro-batches. Per micro-batch, as junyanz's ``optimize_parameters``:
fake = G(A); D learns real-vs-fake on (A, B) / (A, fake.detach()) and, on the step's last micro-batch,
steps; then G learns from D's verdict on (A, fake) plus the pyramid L1 / variance / feature-matching terms.
With ``grad_accum=1`` this is exactly the reference order (D updated before G's loss is taken).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from napari_virtual_ihc.models import ModelSpec, build_generator

from . import metrics
from .config import Config, ConfigError
from .data import Augment, DatasetError, ImagePairDataset, Pair, find_pairs, image_size
from .discriminators import build_discriminator, init_weights
from .losses import GANLoss, PyramidL1, feature_matching_loss, variance_penalty
from .reporting import MetricLog, plot_learning_curve, save_grid, to_uint8
from .run_state import latest_checkpoint, load_checkpoint, save_checkpoint


# ---------------------------------------------------------------- setup helpers
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str) -> tuple[Dist, torch.device]:
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; NCCL on CUDA, gloo on CPU."""
    d = Dist()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        d = Dist(
            int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
        )
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    device = torch.device(
        f"cuda:{d.local_rank}" if use_cuda else ("cpu" if device_pref == "auto" else device_pref)
    )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if d.world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return d, device


class ListSampler(Sampler[int]):
    """Yields a fixed list of indices (this epoch's shard, minus the batches a resumed run already did)."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def lr_factor(epoch: int, n_epochs: int, n_epochs_decay: int) -> float:
    """junyanz ``lambda_rule``: 1 for ``n_epochs`` epochs, then linear to 0 over ``n_epochs_decay``."""
    return 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)


def make_adam(net: nn.Module, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam, fused (one kernel for all parameters, CPU and CUDA) when this torch has it: same update rule."""
    try:
        return torch.optim.Adam(net.parameters(), lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(net.parameters(), lr=lr, betas=betas)


def generator_spec(cfg: Config) -> ModelSpec:
    return ModelSpec(
        arch=cfg.model.arch,
        arch_kwargs=dict(cfg.model.arch_kwargs),
        mpp=cfg.data.mpp,
        name=f"{cfg.preset} ({cfg.data.kind})",
        provenance={"preset": cfg.preset},
    )


def build_datasets(cfg: Config) -> tuple[ImagePairDataset, list[Pair]]:
    dc = cfg.data
    augment = Augment(dc.preprocess, dc.load_size, dc.crop_size, dc.flip, dc.rot90, dc.color_jitter)
    pairs = find_pairs(dc.kind, dc.root, dc.split, dc.source, dc.target)
    if dc.preprocess == "none" and cfg.train.batch_size > 1:
        sizes = sorted({image_size(p.source) for p in pairs})
        if len(sizes) > 1:
            raise DatasetError(
                f"data.preprocess=none batches whole images, but they come in {len(sizes)} sizes "
                f"({', '.join(f'{w}x{h}' for w, h in sizes[:4])}{'...' if len(sizes) > 4 else ''}); "
                "use data.preprocess=crop or train.batch_size=1"
            )
    train = ImagePairDataset(pairs, augment, cfg.train.seed)
    val: list[Pair] = []
    if dc.val_source and dc.val_target:
        val = find_pairs("paired", None, "", dc.val_source, dc.val_target)
    elif dc.val_split and dc.kind in ("bci", "mist"):
        val = find_pairs(dc.kind, dc.root, dc.val_split)
    return train, val[: cfg.train.val_samples]


def check_config(cfg: Config) -> None:
    """Values no later code would reject clearly."""
    tc = cfg.train
    if tc.precision not in ("fp32", "fp16", "bf16"):
        raise ConfigError(f"train.precision must be fp32, fp16 or bf16, not {tc.precision!r}")
    for key in ("batch_size", "grad_accum"):
        if getattr(tc, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1")
    if cfg.model.discriminator not in ("patch", "multiscale"):
        raise ConfigError(f"model.discriminator must be patch or multiscale, not {cfg.model.discriminator!r}")
    if cfg.loss.gan_mode not in ("vanilla", "lsgan"):
        raise ConfigError(f"loss.gan_mode must be vanilla or lsgan, not {cfg.loss.gan_mode!r}")
    if cfg.data.kind == "unpaired":
        raise ConfigError(
            "the pix2pix family learns from registered pairs; unpaired folders are for unpaired methods "
            "(CycleGAN-style), which these presets are not"
        )
    if not cfg.loss.pyramid_weights:
        raise ConfigError("loss.pyramid_weights needs at least the full-resolution L1 weight")


def autocast_for(device: torch.device, precision: str):
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if precision == "fp16" else torch.bfloat16)


# ---------------------------------------------------------------- validation
@torch.no_grad()
def validate(generator: nn.Module, pairs: list[Pair], device: torch.device, crop: int) -> dict[str, float]:
    """Held-out PSNR/SSIM (BCI convention) of G, and of the identity map (H&E returned as is) for scale."""
    from .data import read_rgb, to_tensor

    was_training = generator.training
    generator.eval()
    p, s, p_id = [], [], []
    for pair in pairs:
        assert pair.target is not None
        a, b = read_rgb(pair.source), read_rgb(pair.target)
        if crop:
            y, x = (a.shape[0] - crop) // 2, (a.shape[1] - crop) // 2
            a, b = a[y : y + crop, x : x + crop], b[y : y + crop, x : x + crop]
        fake = to_uint8(generator(to_tensor(a)[None].to(device))[0])
        p.append(metrics.psnr(b, fake))
        s.append(metrics.ssim(b, fake))
        p_id.append(metrics.psnr(b, a))
    generator.train(was_training)
    n = max(1, len(p))
    return {"psnr": sum(p) / n, "ssim": sum(s) / n, "psnr_identity": sum(p_id) / n}


# ---------------------------------------------------------------- the loop
def fit(cfg: Config, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train (or continue) the run in ``run_dir``; returns a small summary."""
    run_dir = Path(run_dir)
    tc, oc, lc = cfg.train, cfg.optim, cfg.loss
    check_config(cfg)
    dataset, val_pairs = build_datasets(cfg)  # bad data fails here, before anything is written
    dd, device = setup_distributed(tc.device)
    barrier = dist.barrier if dd.world > 1 else None
    if dd.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml")
    torch.manual_seed(tc.seed + dd.rank)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True)

    # data: every rank sees a disjoint shard per epoch (DistributedSampler, also with one process)
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=dd.world, rank=dd.rank, shuffle=True, seed=tc.seed
    )
    batches_per_epoch = math.ceil(len(sampler) / tc.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / tc.grad_accum)
    total_epochs = oc.n_epochs + oc.n_epochs_decay
    total_steps = tc.max_steps or steps_per_epoch * total_epochs

    # models, initialised N(0, 0.02) as pix2pix; DDP broadcasts rank 0's weights
    spec = generator_spec(cfg)
    netG = build_generator(cfg.model.arch, **cfg.model.arch_kwargs)
    netD = build_discriminator(
        cfg.model.discriminator, 6, cfg.model.ndf, cfg.model.n_layers_d, cfg.model.norm_d, cfg.model.num_d
    )
    init_weights(netG, cfg.model.init_gain)
    init_weights(netD, cfg.model.init_gain)
    netG.to(device).train()
    netD.to(device).train()
    opt_G = make_adam(netG, oc.lr, (oc.beta1, oc.beta2))
    opt_D = make_adam(netD, oc.lr, (oc.beta1, oc.beta2))
    rule = lambda e: lr_factor(e, oc.n_epochs, oc.n_epochs_decay)  # noqa: E731
    sched_G = torch.optim.lr_scheduler.LambdaLR(opt_G, rule)
    sched_D = torch.optim.lr_scheduler.LambdaLR(opt_D, rule)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and tc.precision == "fp16")
    gan_loss, pyramid = (
        GANLoss(lc.gan_mode),
        PyramidL1(lc.pyramid_weights, lc.pyramid_blurs, lc.pyramid_sigma),
    )

    step, epoch, batches_done = 0, 0, 0
    if resume:
        state = load_checkpoint(latest_checkpoint(run_dir), netG, netD, dd.rank)
        for obj, key in (
            (opt_G, "opt_G"),
            (opt_D, "opt_D"),
            (sched_G, "sched_G"),
            (sched_D, "sched_D"),
            (scaler, "scaler"),
        ):
            obj.load_state_dict(state[key])
        step, epoch, batches_done = state["step"], state["epoch"], state["batches_done"]
    G: Any = DDP(netG, device_ids=[device.index] if device.type == "cuda" else None) if dd.world > 1 else netG
    D: Any = DDP(netD, device_ids=[device.index] if device.type == "cuda" else None) if dd.world > 1 else netD

    log = (
        MetricLog(
            run_dir / "metrics.csv", run_dir / "tensorboard" if tc.tensorboard else None, resume_step=step
        )
        if dd.main
        else None
    )
    val_log = MetricLog(run_dir / "val.csv", resume_step=step) if dd.main and val_pairs else None
    index_log = (run_dir / f"indices_rank{dd.rank}.csv").open("a") if tc.log_sample_indices else None
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc="train",
        unit="step",
        dynamic_ncols=True,
        disable=not (dd.main and tc.progress),
    )

    def checkpoint() -> None:
        state = {
            "step": step,
            "epoch": epoch,
            "batches_done": batches_done,
            "opt_G": opt_G.state_dict(),
            "opt_D": opt_D.state_dict(),
            "sched_G": sched_G.state_dict(),
            "sched_D": sched_D.state_dict(),
            "scaler": scaler.state_dict(),
        }
        save_checkpoint(
            run_dir, step, netG, spec, netD, state, dd.rank, dd.world, tc.keep_checkpoints, barrier
        )

    def run_validation() -> None:
        if val_log is not None:
            val_log.write({"step": step, "epoch": epoch, **validate(netG, val_pairs, device, tc.val_crop)})

    t0, cpu0, samples_seen = time.perf_counter(), time.process_time(), 0
    _last_plot[0] = t0  # first learning-curve plot after a minute of training
    while epoch < total_epochs and step < total_steps:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        indices = list(sampler)[batches_done * tc.batch_size :]
        loader = DataLoader(
            dataset,
            batch_size=tc.batch_size,
            sampler=ListSampler(indices),
            num_workers=cfg.data.num_workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator(),
            drop_last=False,
            persistent_workers=False,
        )
        for batch in loader:
            micro = batches_done % tc.grad_accum  # position of this micro-batch inside the step
            n_micro = min(tc.grad_accum, batches_per_epoch - (batches_done - micro))
            last_micro = micro == n_micro - 1
            real_A = batch["A"].to(device, non_blocking=True)
            real_B = batch["B"].to(device, non_blocking=True)
            if index_log is not None:
                index_log.write(f"{epoch},{step}," + " ".join(str(int(i)) for i in batch["index"]) + "\n")
            sync = contextlib.nullcontext() if last_micro or dd.world == 1 else None

            # ---- forward G
            with sync or G.no_sync(), autocast_for(device, tc.precision):
                fake_B = G(real_A)

            # ---- update D: real pairs -> 1, generated pairs -> 0
            for p in netD.parameters():
                p.requires_grad_(True)
            if micro == 0:
                opt_D.zero_grad(set_to_none=True)
            with sync or D.no_sync(), autocast_for(device, tc.precision):
                pred_fake = D(torch.cat((real_A, fake_B.detach()), 1))
                pred_real = D(torch.cat((real_A, real_B), 1))
                loss_D_fake, loss_D_real = gan_loss(pred_fake, False), gan_loss(pred_real, True)
                loss_D = (loss_D_fake + loss_D_real) * 0.5
            with sync or D.no_sync():
                scaler.scale(loss_D / n_micro).backward()
            if last_micro:
                scaler.step(opt_D)

            # ---- update G: fool D, match the target at every pyramid scale (+ variance, feature matching)
            for p in netD.parameters():
                p.requires_grad_(False)
            if micro == 0:
                opt_G.zero_grad(set_to_none=True)
            with sync or G.no_sync(), autocast_for(device, tc.precision):
                pred_fake = netD(torch.cat((real_A, fake_B), 1))
                loss_G_GAN = gan_loss(pred_fake, True) * lc.lambda_gan
                loss_G_pyr, pyr_terms = pyramid(fake_B.float(), real_B)
                loss_G = loss_G_GAN + loss_G_pyr
                loss_G_var = variance_penalty(fake_B.float(), real_B) if lc.lambda_variance else None
                if loss_G_var is not None:
                    loss_G = loss_G + loss_G_var * lc.lambda_variance
                loss_G_feat = None
                if lc.lambda_feat and cfg.model.discriminator == "multiscale":
                    pred_real_feats = [[f.detach() for f in scale] for scale in pred_real]
                    loss_G_feat = feature_matching_loss(pred_fake, pred_real_feats) * lc.lambda_feat
                    loss_G = loss_G + loss_G_feat
            with sync or G.no_sync():
                scaler.scale(loss_G / n_micro).backward()
            batches_done += 1
            samples_seen += real_A.shape[0] * dd.world
            if not last_micro:
                continue
            scaler.step(opt_G)
            scaler.update()
            step += 1
            bar.update(1)

            if log is not None and (step % tc.log_every == 0 or step == 1):
                row = {
                    "step": step,
                    "epoch": epoch,
                    "lr": opt_G.param_groups[0]["lr"],
                    "loss_D": loss_D.item(),
                    "loss_D_real": loss_D_real.item(),
                    "loss_D_fake": loss_D_fake.item(),
                    "loss_G": loss_G.item(),
                    "loss_G_GAN": loss_G_GAN.item(),
                }
                row.update({f"loss_G_L1_scale{i}": t.item() for i, t in enumerate(pyr_terms)})
                if loss_G_var is not None:
                    row["loss_G_variance"] = loss_G_var.item()
                if loss_G_feat is not None:
                    row["loss_G_feat"] = loss_G_feat.item()
                row["elapsed_s"] = time.perf_counter() - t0  # this session (a resumed run restarts the clock)
                row["cpu_s"] = time.process_time() - cpu0  # this process's CPU time, robust to a busy machine
                row["samples_per_s"] = samples_seen / max(1e-9, row["elapsed_s"])
                log.write(row)
                bar.set_postfix(G=f"{loss_G.item():.3f}", D=f"{loss_D.item():.3f}")
            if tc.val_every and step % tc.val_every == 0:
                run_validation()
            if tc.checkpoint_every and step % tc.checkpoint_every == 0:
                checkpoint()
            if step >= total_steps:
                break
        else:  # the epoch ran to its end: decay the lr, write grid + checkpoint
            epoch, batches_done = epoch + 1, 0
            sched_G.step()
            sched_D.step()
            if dd.main:
                end_of_epoch_report(cfg, run_dir, netG, dataset, val_pairs, device, epoch)
            if not tc.val_every:
                run_validation()
            if tc.checkpoint_each_epoch:
                checkpoint()
            continue
        break

    if not (tc.checkpoint_every and step % tc.checkpoint_every == 0) and (
        batches_done or not tc.checkpoint_each_epoch
    ):
        checkpoint()  # stopped mid-epoch (max_steps): make it resumable from exactly here
    if batches_done and not (tc.val_every and step % tc.val_every == 0):
        run_validation()  # the final model's held-out figures
    bar.close()
    if index_log is not None:
        index_log.close()
    if log is not None:
        log.close()
        plot_learning_curve(
            run_dir / "metrics.csv",
            run_dir / "learning_curve.png",
            run_dir / "val.csv" if val_pairs else None,
        )
    if dd.world > 1:
        dist.barrier()
    return {"step": step, "epoch": epoch, "run_dir": str(run_dir)}


_last_plot = [0.0]


def end_of_epoch_report(
    cfg: Config,
    run_dir: Path,
    netG: nn.Module,
    dataset: ImagePairDataset,
    val_pairs: list[Pair],
    device: torch.device,
    epoch: int,
) -> None:
    """Image grid (H&E | generated | real) from the first training samples; the learning curve at most
    once a minute (drawing it costs more than a tiny epoch)."""
    if cfg.train.grid_every_epoch:
        n = min(cfg.train.grid_samples, len(dataset))
        items = [dataset[i] for i in range(n)]
        a = torch.stack([it["A"] for it in items]).to(device)
        b = torch.stack([it["B"] for it in items])
        netG.eval()
        with torch.no_grad():
            fake = netG(a)
        netG.train()
        save_grid(run_dir / "grids" / f"epoch_{epoch:04d}.png", a, fake, b)
    if time.perf_counter() - _last_plot[0] < 60:
        return
    _last_plot[0] = time.perf_counter()
    plot_learning_curve(
        run_dir / "metrics.csv", run_dir / "learning_curve.png", run_dir / "val.csv" if val_pairs else None
    )
