"""The training loop shared by every method, meant to be read top to bottom in one sitting.

One optimizer step = ``grad_accum`` micro-batches. The loop shards the data, keeps the step/epoch schedule,
checkpoints (every net of the method plus its state), resumes bit-exactly, wraps DDP, scales AMP losses,
logs, validates and draws grids. What a micro-batch does to which network is the method's business
(``methods/``: pix2pix family, CycleGAN, ...); the loop has no method-specific branch.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from napari_virtual_ihc.inference.devices import DeviceError, resolve_device
from napari_virtual_ihc.inference.dropout import DropoutMode

from .config import Config, ConfigError
from .data import Pair
from .evaluation import metrics
from .evaluation.protocol import ProtocolForward, resolve_protocol
from .methods import Method, Step, method_class
from .reporting import LearningCurve, MetricLog, save_grid, to_uint8
from .run_state import latest_checkpoint, load_checkpoint, save_checkpoint


class TrainingDivergedError(RuntimeError):
    """A loss or weight became NaN/inf: the run stopped without checkpointing the broken weights."""


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
    try:  # the engine's one device rule: cuda:LOCAL_RANK under torchrun
        device = resolve_device(device_pref, use_mps=False)
    except DeviceError as e:
        raise ConfigError(str(e)) from e
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


def check_config(cfg: Config) -> type[Method]:
    """Values no later code would reject clearly (the loop's, then the method's); returns the method."""
    tc = cfg.train
    if tc.precision not in ("fp32", "fp16", "bf16"):
        raise ConfigError(f"train.precision must be fp32, fp16 or bf16, not {tc.precision!r}")
    for key in ("batch_size", "grad_accum"):
        if getattr(tc, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1")
    if tc.val_bn_stats not in ("", "running", "slide"):
        raise ConfigError(f"train.val_bn_stats must be running, slide or empty, not {tc.val_bn_stats!r}")
    try:
        DropoutMode.parse(tc.val_dropout or None)
    except ValueError as exc:
        raise ConfigError(f"train.val_dropout: {exc}") from None
    method = method_class(cfg)
    method.check_config(cfg)
    return method


def all_finite(values: list[torch.Tensor], world: int) -> bool:
    """True when every value is finite on every rank (one sync; all ranks stop together)."""
    ok = torch.stack([v.detach().float().reshape(()) for v in values]).isfinite().all()
    if world > 1:
        flag = ok.to(torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        ok = flag.bool()
    return bool(ok.item())


def diverged_message(what: str, step: int, epoch: int, last_good: Path | None) -> str:
    keep = (
        f"the last good checkpoint is kept: {last_good}"
        if last_good is not None
        else "no checkpoint was written before it"
    )
    return (
        f"training diverged: {what} is not finite at step {step} (epoch {epoch}); stopped without saving "
        f"the broken weights; {keep}. Lower the learning rate (`virtual-ihc-train resume RUN --set "
        "optim.lr=X` applies X to the restored optimisers and schedulers), use train.precision=fp32, "
        "or check the data"
    )


def apply_lr(method: Method, lr: float) -> float | None:
    """A resume's ``optim.lr``: re-base every restored scheduler and its optimiser's groups on ``lr``, at the
    schedule's current factor, so the value in ``config.yaml`` is the one that trains; returns the learning
    rate the checkpoint was trained with, or None when it is unchanged (the state is then left untouched)."""
    before = None
    for sched in method.schedulers().values():
        groups = sched.optimizer.param_groups
        for i, (base, factor, group) in enumerate(zip(sched.base_lrs, sched.lr_lambdas, groups, strict=True)):
            if base == lr:
                continue
            before = float(base)
            sched.base_lrs[i] = lr
            group["initial_lr"] = lr
            group["lr"] = lr * factor(sched.last_epoch)
    return before


# ---------------------------------------------------------------- validation
@torch.no_grad()
def validate(method: Method, pairs: list[Pair], device: torch.device) -> dict[str, float]:
    """Held-out PSNR/SSIM (BCI convention) of G run as its reference test script runs it (the mode its header
    records: batch norm per image, dropout on, masks seeded with ``train.seed``; ``train.val_bn_stats`` /
    ``val_dropout`` override it), and of the identity map (H&E as is) for scale."""
    from .data import read_rgb, to_tensor

    tc = method.cfg.train
    crop = tc.val_crop
    generator = method.nets["G"]
    was_training = generator.training
    mode = resolve_protocol(
        generator, method.generator_spec(), tc.val_bn_stats or None, tc.val_dropout or None, tc.seed
    )
    forward = ProtocolForward(generator, mode)
    p, s, p_id = [], [], []
    for pair in pairs:
        assert pair.target is not None
        a, b = read_rgb(pair.source), read_rgb(pair.target)
        if crop:
            y, x = (a.shape[0] - crop) // 2, (a.shape[1] - crop) // 2
            a, b = a[y : y + crop, x : x + crop], b[y : y + crop, x : x + crop]
        g_in = method.generator_input(to_tensor(a)[None].to(device), [pair.label or ""])
        fake = to_uint8(forward(g_in)[0])
        p.append(metrics.psnr(b, fake))
        s.append(metrics.ssim(b, fake))
        p_id.append(metrics.psnr(b, a))
    generator.train(was_training)
    n = max(1, len(p))
    return {"psnr": sum(p) / n, "ssim": sum(s) / n, "psnr_identity": sum(p_id) / n}


# ---------------------------------------------------------------- the loop
def fit(cfg: Config, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train (or continue) the run in ``run_dir``; returns a small summary.

    Everything that can refuse the config (its values, the data, the networks, the checkpoint to resume)
    runs before ``config.yaml`` is written, so a failed ``resume --set`` leaves the run as it was.
    """
    run_dir = Path(run_dir)
    tc, oc = cfg.train, cfg.optim
    method_cls = check_config(cfg)
    method_cls.configure_run(cfg, run_dir)
    dataset, val_pairs = method_cls.build_datasets(cfg)  # bad data fails here, before anything is written
    dataset[0]  # one sample read through the augmentation: crop larger than the images, unreadable files
    dd, device = setup_distributed(tc.device)
    barrier = dist.barrier if dd.world > 1 else None
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

    # the method's networks, optimisers, schedulers and losses; DDP broadcasts rank 0's weights
    method = method_cls(cfg, device)
    specs = method.generator_specs()
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and tc.precision == "fp16")
    step, epoch, batches_done = 0, 0, 0
    last_good: Path | None = None
    if resume:
        last_good = latest_checkpoint(run_dir)
        state = load_checkpoint(last_good, method.nets, dd.rank)
        method.load_state_dict(state)  # first: a method may make a late optimiser here
        for key, stateful in (method.optimizers() | method.schedulers()).items():
            stateful.load_state_dict(state[key])
        scaler.load_state_dict(state["scaler"])
        step, epoch, batches_done = state["step"], state["epoch"], state["batches_done"]
        lr_before = apply_lr(method, oc.lr)
        if lr_before is not None and dd.main:
            print(f"optim.lr {lr_before:g} -> {oc.lr:g}: applied to the restored optimisers and schedulers")
    if dd.world > 1:
        method.wrap_ddp(lambda net: DDP(net, device_ids=[device.index] if device.type == "cuda" else None))
    if dd.main:  # validated: now the config may be written
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml")
    if barrier:
        barrier()  # the run folder exists before any rank writes into it

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
        nonlocal last_good
        weights = [p.detach().abs().amax() for net in method.nets.values() for p in net.parameters()]
        if weights and not all_finite(weights, 1):  # every rank holds the same weights
            raise TrainingDivergedError(diverged_message("a weight", step, epoch, last_good))
        state = {"step": step, "epoch": epoch, "batches_done": batches_done, "scaler": scaler.state_dict()}
        state.update({k: v.state_dict() for k, v in (method.optimizers() | method.schedulers()).items()})
        state.update(method.state_dict())
        last_good = save_checkpoint(
            run_dir, step, method.nets, specs, state, dd.rank, dd.world, tc.keep_checkpoints, barrier
        )

    def run_validation() -> None:
        if val_log is not None:
            figures = validate(method, val_pairs, device)
            val_log.write({"step": step, "epoch": epoch, **figures})

    t0, cpu0, samples_seen = time.perf_counter(), time.process_time(), 0
    curve = LearningCurve(run_dir, bool(val_pairs), last_drawn=t0)  # first plot after a minute of training
    stopped = False  # max_steps reached (mid-epoch or at its last batch): the epoch is not closed
    while not stopped and epoch < total_epochs and step < total_steps:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)  # type: ignore[attr-defined]
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
            if index_log is not None:
                index_log.write(f"{epoch},{step}," + " ".join(str(int(i)) for i in batch["index"]) + "\n")
            losses = method.train_step(
                batch, Step(micro, n_micro, last_micro, scaler, device, tc.precision, dd.world)
            )
            batches_done += 1
            samples_seen += batch["A"].shape[0] * dd.world
            if not all_finite(list(losses.values()), dd.world):
                bad = ", ".join(k for k, v in losses.items() if not v.detach().isfinite().all()) or "a loss"
                raise TrainingDivergedError(diverged_message(bad, step + 1, epoch, last_good))
            if not last_micro:
                continue
            scaler.update()
            step += 1
            bar.update(1)

            if log is not None and (step % tc.log_every == 0 or step == 1):
                row: dict[str, Any] = {"step": step, "epoch": epoch, "lr": method.lr()}
                row.update({k: v.item() for k, v in losses.items()})
                row["elapsed_s"] = time.perf_counter() - t0  # this session (a resumed run restarts the clock)
                row["cpu_s"] = time.process_time() - cpu0  # this process's CPU time, robust to a busy machine
                row["samples_per_s"] = samples_seen / max(1e-9, row["elapsed_s"])
                log.write(row)
                bar.set_postfix({k.removeprefix("loss_"): f"{row[k]:.3f}" for k in list(losses)[:2]})
            if tc.val_every and step % tc.val_every == 0:
                run_validation()
            if tc.checkpoint_every and step % tc.checkpoint_every == 0:
                checkpoint()
            if step >= total_steps:
                stopped = True
                break
        if not stopped:  # the epoch ran to its end: decay the lr, write grid + checkpoint
            epoch, batches_done = epoch + 1, 0
            for sched in method.schedulers().values():
                sched.step()
            method.end_epoch(epoch)
            if dd.main:
                end_of_epoch_report(cfg, run_dir, method, dataset, device, epoch, curve)
            if not tc.val_every:
                run_validation()
            if tc.checkpoint_each_epoch:
                checkpoint()

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
        curve.draw()
    if dd.world > 1:
        dist.barrier()
    return {"step": step, "epoch": epoch, "run_dir": str(run_dir)}


def end_of_epoch_report(
    cfg: Config,
    run_dir: Path,
    method: Method,
    dataset: Dataset,
    device: torch.device,
    epoch: int,
    curve: LearningCurve,
) -> None:
    """Image grid (H&E | generated | target) from the first training samples; the learning curve at most
    once a minute (drawing it costs more than a tiny epoch)."""
    if cfg.train.grid_every_epoch:
        n = min(cfg.train.grid_samples, len(dataset))  # type: ignore[arg-type]
        items = [dataset[i] for i in range(n)]
        a = torch.stack([it["A"] for it in items]).to(device)
        b = torch.stack([it["B"] for it in items])
        netG = method.nets["G"]
        netG.eval()
        fake = method.translate(a, [str(it.get("label", "")) for it in items])
        netG.train()
        save_grid(run_dir / "grids" / f"epoch_{epoch:04d}.png", a, fake, b)
    if time.perf_counter() - curve.last_drawn >= 60:
        curve.draw()
