"""torchrun's contract: RANK / LOCAL_RANK / WORLD_SIZE in the environment, one process each.

NCCL on GPUs, gloo on CPU. Without torchrun (plain `dap train`) this is a world of one and
no process group is created.

Runs end, they do not hang: the process group has a stated timeout (`runtime.dist_timeout_s`,
default `DEFAULT_TIMEOUT_S`), so a rank that stops answering (stopped, deadlocked, on a dead
node) makes the others fail after that long instead of waiting torch's default 30 minutes.
Each rank reports the step it reached to torchrun's store (`Heartbeat`), so the rank that
gives up can say which rank is late. Each worker also asks the kernel to send it SIGTERM when
its parent (the torchrun agent) dies, so killing the agent leaves no orphan training on.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 600.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def exit_with_parent() -> bool:
    """Linux: have the kernel send this process SIGTERM when its parent dies (PDEATHSIG), and
    exit now if the parent is already gone. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def init_distributed(device_kind: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistEnv:
    """Join the process group torchrun set up (if any); device_kind "cuda" or "cpu".

    `timeout_s` bounds forming the group and every collective after it.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    env = DistEnv(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        world_size=world,
    )
    exit_with_parent()
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(env.local_rank)
        try:
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        except (RuntimeError, TimeoutError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RuntimeError(
                f"rank {env.rank}: the process group of {world} ranks did not form within "
                f"{timeout_s:g} s (runtime.dist_timeout_s): {first}"
            ) from err
        if env.is_main:
            print(
                f"process group: {backend}, {world} ranks, collective timeout {timeout_s:g} s "
                "(runtime.dist_timeout_s)",
                flush=True,
            )
    return env


class Heartbeat:
    """Each rank's last step in torchrun's key-value store, to name the late rank on a timeout.

    The store is torchrun's (served by the agent), so it answers while a rank is stopped.
    """

    def __init__(self, env: DistEnv) -> None:
        self.env = env
        self.store = None
        if env.distributed and dist.is_initialized():
            try:
                self.store = dist.distributed_c10d._get_default_store()
            except (RuntimeError, AttributeError, ValueError):
                self.store = None

    PHASES = ("starting", "in the forward pass", "in the backward pass", "done with")

    def beat(self, step: int, phase: int = 0) -> None:
        """Report reaching `PHASES[phase]` of `step` (one small store write)."""
        if self.store is not None:
            self.store.set(f"dap/heartbeat/{self.env.rank}", f"{step} {phase} {time.time():.3f}")

    def late_ranks(self, step: int, phase: int, grace_s: float = 3.0) -> str:
        """The other ranks that did not answer, with where each last reported, or ''.

        Called by a rank whose collective failed: it marks itself as failed, waits `grace_s`
        for the healthy ranks (which time out on the same collective) to do the same, and
        names those behind it or silent: a stopped or hung rank never marks itself.
        """
        if self.store is None:
            return ""
        try:
            self.store.set(f"dap/failed/{self.env.rank}", "1")
        except RuntimeError:
            return ""
        time.sleep(grace_s)
        late = []
        now = time.time()
        for rank in range(self.env.world_size):
            if rank == self.env.rank:
                continue
            try:
                self.store.set_timeout(timedelta(seconds=2))
                if self.store.check([f"dap/failed/{rank}"]):
                    continue  # it saw the failure too: not the late one
                seen = self.store.get(f"dap/heartbeat/{rank}").decode().split()
                seen_step, seen_phase, seen_at = int(seen[0]), int(seen[1]), float(seen[2])
            except (RuntimeError, ValueError, IndexError, TimeoutError):
                late.append(f"rank {rank} (never reported)")
                continue
            late.append(
                f"rank {rank} (last {self.PHASES[seen_phase]} step {seen_step}, "
                f"{now - seen_at:.0f} s ago)"
            )
        return ", ".join(late)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def broadcast_flag(value: bool, env: DistEnv, device: torch.device) -> bool:
    """Rank 0's decision, seen by every rank (e.g. 'the time budget is spent')."""
    if not env.distributed:
        return value
    t = torch.tensor([1 if value else 0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def all_reduce_mean(
    values: dict[str, float], env: DistEnv, device: torch.device
) -> dict[str, float]:
    """Mean of scalar logs over ranks (for logging only)."""
    if not env.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / env.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def cleanup(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()
