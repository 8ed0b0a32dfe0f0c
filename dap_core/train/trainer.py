"""The one training loop: any task, one process or many (torchrun), resumable exactly.

Per step: next batch from the resumable stream -> task.step under autocast (bf16 on GPU) ->
backward -> gradient clipping -> Adam. Rank 0 shows tqdm, writes TensorBoard scalars and
preview images (RGB | prediction | ground truth), and writes atomic checkpoints holding
module, optimizer, scaler, step, data position, elapsed time and RNG states. Stops at
`max_steps` or when the time budget is spent, whichever comes first (rank 0 decides, every
rank follows). Samples the data could not give are named once each, counted in TensorBoard
("data/skipped_samples") and the result, and stop the run past `data.max_skip_fraction`
(`dap_core.train.skips`); a step whose batch lost every sample (on any rank) makes no update.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dap_core.train import checkpoint as ckpt
from dap_core.train.config import TrainConfig
from dap_core.train.data import make_loader
from dap_core.train.distributed import (
    DistEnv,
    Heartbeat,
    all_reduce_mean,
    barrier,
    broadcast_flag,
)
from dap_core.train.run_identity import describe_mismatch, run_identity
from dap_core.train.skips import SkipLedger, TooManySkippedError, built_without, exchange


@dataclass
class TrainResult:
    steps: int
    elapsed_s: float
    last_logs: dict[str, float]
    stopped_by: str  # "max_steps" or "time_budget"
    skipped: tuple[str, ...] = ()  # reasons ("file: cause") of the samples that were left out
    samples: int = 0  # the training set's size, the skipped ones included
    empty_steps: int = 0  # steps whose whole batch was skipped (no update)

    def skip_summary(self) -> str:
        """'skipped K of N samples (p%)', with the empty steps when there were any."""
        share = len(self.skipped) / max(self.samples, 1)
        text = f"skipped {len(self.skipped)} of {self.samples} samples ({share:.1%})"
        if self.empty_steps:
            text += f", {self.empty_steps} step(s) without update (every sample skipped)"
        return text


class TrainingInterruptedError(Exception):
    """Ctrl-C (SIGINT) during training: where the run was and what is safe on disk."""

    def __init__(self, step: int, checkpoint_step: int | None) -> None:
        self.step = step
        self.checkpoint_step = checkpoint_step
        saved = "none yet" if checkpoint_step is None else f"step {checkpoint_step}"
        super().__init__(f"interrupted at step {step}, checkpoint at {saved}")


def resolve_device(cfg: TrainConfig, env: DistEnv) -> torch.device:
    name = cfg.runtime.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", env.local_rank)
    return torch.device(name)


def autocast_context(cfg: TrainConfig, device: torch.device):
    """bf16 autocast on GPU for amp "auto"/"bf16"; fp32 elsewhere (CPU bf16 is slow)."""
    amp = cfg.runtime.amp
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class Trainer:
    """Runs `task` for `steps` steps on `dataset`; state lives in `run_dir/checkpoints`."""

    def __init__(
        self,
        cfg: TrainConfig,
        task,
        dataset,
        *,
        env: DistEnv,
        run_dir: str | Path,
        steps: int,
        batch_size: int,
    ) -> None:
        self.cfg = cfg
        self.task = task
        self.dataset = dataset
        self.env = env
        self.run_dir = Path(run_dir)
        self.steps = steps
        self.batch_size = batch_size
        self.device = resolve_device(cfg, env)
        self.module = task.module.to(self.device)
        self.optimizer = torch.optim.Adam(
            task.param_groups(), betas=task.betas(), weight_decay=cfg.optim.weight_decay
        )
        for group in self.optimizer.param_groups:
            group["base_lr"] = group["lr"]
        # bf16 needs no loss scaling; the scaler is kept (disabled) so checkpoints have one slot.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)
        self.step = 0
        self.elapsed_s = 0.0
        self.saved_step: int | None = None  # step of the newest checkpoint on disk
        self.identity = run_identity(cfg.to_dict(), env.world_size)
        before = built_without(dataset)
        self.skips = SkipLedger(len(dataset) + len(before), cfg.data.max_skip_fraction)
        self._built_without = before
        self.empty_steps = 0

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "step": self.step,
            "data_position": {
                "step": self.step,
                "samples": self.step * self.batch_size * self.env.world_size,
                "world_size": self.env.world_size,
            },
            "elapsed_s": self.elapsed_s,
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": ckpt.rng_state(),
            "config": self.cfg.to_dict(),
            "identity": self.identity,
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        """Continue from `state`; refuse a state of another task or another run."""
        if state.get("task") != self.task.name:
            raise ckpt.CheckpointError(
                f"{source} is for task {state.get('task')!r}, not {self.task.name!r}"
            )
        mismatch = describe_mismatch(
            state.get("identity", {}), state.get("config"), self.identity, self.cfg.to_dict()
        )
        if mismatch:
            raise ckpt.CheckpointError(
                f"{source} (step {state.get('step')}) belongs to another run: {mismatch}"
            )
        world = state["data_position"]["world_size"]
        if world != self.env.world_size:
            raise ValueError(
                f"checkpoint was written with {world} process(es); resume with the same number "
                f"(this run has {self.env.world_size}) so the data position stays exact"
            )
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.elapsed_s = float(state["elapsed_s"])
        ckpt.set_rng_state(state["rng"])

    def save(self) -> None:
        if self.env.is_main:
            ckpt.save_checkpoint(
                self.checkpoint_dir, self.state_dict(), keep=self.cfg.schedule.keep_checkpoints
            )
        barrier(self.env)
        self.saved_step = self.step

    def _say(self, message: str) -> None:
        if self.env.is_main:
            print(f"[{self.cfg.name}:{self.task.name}] {message}", flush=True)

    def resume(self) -> bool:
        """Load the newest readable checkpoint of this run if there is one; True when resumed.

        Rank 0 looks first (it moves a torn newest file aside and says so), then the others
        read the same file.
        """
        found = None
        if self.env.is_main:
            found = ckpt.load_latest(self.checkpoint_dir, self.device, log=self._say)
        barrier(self.env)
        if not self.env.is_main:
            found = ckpt.load_latest(self.checkpoint_dir, self.device, log=lambda _: None)
        if found is None:
            self._say(f"no checkpoint in {self.checkpoint_dir}: starting at step 0")
            return False
        path, state = found
        self.load_state_dict(state, source=f"checkpoint {path}")
        self.saved_step = self.step
        self._say(f"resuming from {path} at step {self.step} of {self.steps}")
        return True

    def _remove_orphan_temps(self) -> None:
        """Temp files of checkpoint writes a kill interrupted (rank 0 alone writes there)."""
        if self.env.is_main:
            removed = ckpt.remove_orphan_temps(self.checkpoint_dir)
            if removed:
                mb = sum(size for _, size in removed) / 1e6
                self._say(
                    f"removed {len(removed)} temp file(s) of interrupted checkpoint writes "
                    f"({mb:.1f} MB) from {self.checkpoint_dir}"
                )
        barrier(self.env)

    # ------------------------------------------------------------------ loop
    def fit(self, *, resume: bool = False) -> TrainResult:
        """Train to `steps`; Ctrl-C raises `TrainingInterruptedError` (no traceback wall)."""
        try:
            return self._fit(resume=resume)
        except KeyboardInterrupt:
            raise TrainingInterruptedError(self.step, self.saved_step) from None

    def _fit(self, *, resume: bool) -> TrainResult:
        cfg = self.cfg
        self._remove_orphan_temps()
        if resume:
            self.resume()
        if self.step >= self.steps:
            return self._result({}, "max_steps")
        for reason in self.skips.add(self._built_without):
            self._say(f"skipped sample {reason}")
        self.skips.check()
        from dap_core.train.tasks import build_augment

        loader = make_loader(
            self.dataset,
            batch_size=self.batch_size,
            env=self.env,
            seed=cfg.seed,
            start_step=self.step,
            augment=build_augment(cfg),
            num_workers=cfg.data.num_workers,
        )
        model = self.module
        if self.env.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # DPT's deepest fusion block never uses its first residual unit (as in the
            # official heads), so some parameters get no gradient by design.
            model = DistributedDataParallel(
                self.module, device_ids=ids, find_unused_parameters=True
            )
        model.train()
        writer = self._writer()
        if writer is not None and self.skips.count:
            self._log_skips(writer)
        bar = self._progress()
        logs: dict[str, float] = {}
        stopped_by = "max_steps"
        started = time.monotonic() - self.elapsed_s
        sched = cfg.schedule
        batches = iter(loader)
        heartbeat = Heartbeat(self.env)
        phase = 0
        try:
            while self.step < self.steps:
                heartbeat.beat(self.step, phase := 0)
                budget_spent = (
                    sched.time_budget_s is not None
                    and time.monotonic() - started >= sched.time_budget_s
                )
                if broadcast_flag(budget_spent, self.env, self.device):
                    stopped_by = "time_budget"
                    break
                batch = _to_device(next(batches), self.device)
                new, empty = exchange(
                    batch["skipped"], batch["batch_size"] == 0, self.skips, self.env, self.device
                )
                if new:
                    for reason in new:
                        self._say(f"skipped sample {reason}")
                    if writer is not None:
                        self._log_skips(writer)
                    self.skips.check()
                if empty:
                    self._say(f"step {self.step}: every sample of a batch was skipped: no update")
                    self.empty_steps += 1
                else:
                    self._set_lr()
                    heartbeat.beat(self.step, phase := 1)
                    with autocast_context(cfg, self.device):
                        loss, logs, pred = self.task.step(model, batch)
                    if not torch.isfinite(loss):
                        raise RuntimeError(f"non-finite loss at step {self.step}: {logs}")
                    self.optimizer.zero_grad(set_to_none=True)
                    heartbeat.beat(self.step, phase := 2)
                    loss.backward()
                    grad_norm = torch.nn.utils.clip_grad_norm_(
                        self.module.parameters(), cfg.optim.grad_clip or float("inf")
                    )
                    self.optimizer.step()
                heartbeat.beat(self.step, phase := 3)
                self.step += 1
                self.elapsed_s = time.monotonic() - started
                if not empty:
                    logs = {**logs, "grad_norm": float(grad_norm)}
                if not empty and (self.step % sched.log_every == 0 or self.step == self.steps):
                    logs = all_reduce_mean(logs, self.env, self.device)
                    self._log(writer, bar, logs)
                if (
                    writer is not None
                    and not empty
                    and sched.preview_every
                    and self.step % sched.preview_every == 0
                ):
                    self._preview(writer, batch, pred)
                if sched.checkpoint_every and self.step % sched.checkpoint_every == 0:
                    self.save()
                if bar is not None:
                    bar.update(1)
        except TooManySkippedError:
            if writer is not None:  # keep the skip counts it was given
                writer.close()
            raise  # every rank holds the same ledger and stops at the same step
        except RuntimeError as err:
            late = heartbeat.late_ranks(self.step, phase) if self.env.distributed else ""
            if not late:
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise RuntimeError(
                f"rank {self.env.rank}: step {self.step}: a collective failed or timed out "
                f"(runtime.dist_timeout_s {self.cfg.runtime.dist_timeout_s:g} s); late: {late} "
                f"({first[:200]})"
            ) from err
        self.elapsed_s = time.monotonic() - started
        self.save()
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        return self._result(logs, stopped_by)

    def _result(self, logs: dict[str, float], stopped_by: str) -> TrainResult:
        return TrainResult(
            self.step,
            self.elapsed_s,
            logs,
            stopped_by,
            skipped=tuple(self.skips.reasons),
            samples=self.skips.total,
            empty_steps=self.empty_steps,
        )

    def _log_skips(self, writer) -> None:
        writer.add_scalar("data/skipped_samples", self.skips.count, self.step)
        writer.add_scalar("data/skipped_fraction", self.skips.fraction, self.step)

    def _set_lr(self) -> None:
        factor = lr_factor(self.cfg.optim, self.step, self.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def _writer(self):
        if not (self.env.is_main and self.cfg.runtime.tensorboard):
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def _progress(self):
        if not (self.env.is_main and self.cfg.runtime.progress):
            return None
        from tqdm import tqdm

        return tqdm(
            total=self.steps,
            initial=self.step,
            desc=f"{self.cfg.name}:{self.task.name}",
            dynamic_ncols=True,
        )

    def _log(self, writer, bar, logs: dict[str, float]) -> None:
        if writer is not None:
            for key, value in logs.items():
                writer.add_scalar(f"{self.task.name}/{key}", value, self.step)
            for group in self.optimizer.param_groups:
                writer.add_scalar(f"lr/{group.get('name', 'group')}", group["lr"], self.step)
        if bar is not None:
            shown = {k: f"{v:.4g}" for k, v in logs.items() if k in ("total", "d_loss", "silog")}
            bar.set_postfix(shown)
        else:  # no bar (runtime.progress false, a log file): one line says where the run is
            losses = "  ".join(f"{k} {v:.4g}" for k, v in logs.items() if k != "grad_norm")
            pace = self.elapsed_s / max(self.step, 1)
            left = (self.steps - self.step) * pace
            self._say(
                f"step {self.step}/{self.steps}  {losses}  {pace:.3g} s/step, "
                f"{left / 60:.1f} min left"
            )

    def _preview(self, writer, batch: dict[str, Any], pred: torch.Tensor) -> None:
        writer.add_image(
            f"{self.task.name}/preview", preview_image(batch, pred), self.step, dataformats="HWC"
        )


def preview_image(batch: dict[str, Any], pred: torch.Tensor, max_range_m: float = 100.0):
    """uint8 [H, 3W, 3]: RGB | predicted range | ground truth of the batch's first sample."""
    from dap_core.visualize import colorize_range, side_by_side

    rgb = (batch["rgb"][0].detach().float().cpu().permute(1, 2, 0).numpy() * 255).round()
    pred_m = pred[0, 0].detach().float().cpu().numpy()
    gt_m = batch["range_m"][0, 0].detach().float().cpu().numpy()
    # A log-like view of 0..100 m would hide indoor detail; scale to the scene's own range.
    finite = gt_m[np.isfinite(gt_m)]
    scale = float(np.percentile(finite, 98)) if finite.size else max_range_m
    scale = max(scale, 1.0)
    return side_by_side(
        [rgb.astype(np.uint8), colorize_range(pred_m, scale), colorize_range(gt_m, scale)]
    )


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lr_factor(optim, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rates for 0-based `step` of a `total_steps` run:
    linear warm-up, then constant or a cosine decay that reaches min_lr_ratio at the last step."""
    warmup = optim.warmup_steps
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if optim.decay == "none" or total_steps <= warmup + 1:
        return 1.0
    progress = min(1.0, (step - warmup) / (total_steps - 1 - warmup))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * cosine
