"""Two-process DDP on CPU (gloo) under torchrun: both ranks end with identical weights."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from train_utils import REPO_ROOT, subprocess_env, write_config, write_folder_dataset

# Each rank trains through the real Trainer and saves what it ends with, plus the samples it saw.
RANK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from dap_core.data.datasets import build_dataset
    from dap_core.train.config import load_config
    from dap_core.train.distributed import cleanup, init_distributed
    from dap_core.train.tasks import DepthTask, build_model
    from dap_core.train.trainer import Trainer

    cfg = load_config(sys.argv[1])
    torch.set_num_threads(1)
    env = init_distributed("cpu")
    dataset = build_dataset({**cfg.data.labeled[0], "size": list(cfg.data.size)})
    model = build_model(cfg)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(cfg, DepthTask(cfg, model), dataset, env=env, run_dir=cfg.output_dir,
                      steps=cfg.schedule.max_steps, batch_size=cfg.schedule.batch_size)
    seen = []
    original = trainer.task.step
    def step(module, batch):
        seen.extend(batch["name"])
        return original(module, batch)
    trainer.task.step = step
    result = trainer.fit()
    torch.save({"start": start, "end": model.state_dict(), "seen": seen,
                "world": env.world_size, "backend": torch.distributed.get_backend()},
               os.path.join(cfg.output_dir, f"rank{env.rank}.pt"))
    cleanup(env)
    """
)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    data = write_folder_dataset(tmp_path / "data", 8)
    config = write_config(
        tmp_path / "ddp.yaml",
        data={"size": [32, 64], "labeled": [{"type": "dap2m", "root": str(data)}]},
        schedule={"batch_size": 2, "max_steps": 3, "checkpoint_every": 0, "log_every": 1},
    )
    (tmp_path / "ddp").mkdir()
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(config),
    ]
    proc = subprocess.run(
        cmd, env=subprocess_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=500
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r0 = torch.load(tmp_path / "ddp/rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp/rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2 and r0["backend"] == "gloo"
    # The ranks read different samples (the stream is sharded) ...
    assert len(r0["seen"]) == len(r1["seen"]) == 6
    assert r0["seen"] != r1["seen"]
    # ... started from the same weights, and end with the same, changed, weights.
    changed = 0
    for key, value in r0["end"].items():
        assert torch.equal(r0["start"][key], r1["start"][key]), key
        assert torch.equal(value, r1["end"][key]), f"{key} differs between ranks"
        changed += not torch.equal(value, r0["start"][key])
    assert changed > len(r0["end"]) // 2
    # Rank 0 alone wrote the checkpoint.
    assert sorted(p.name for p in (tmp_path / "ddp/checkpoints").iterdir()) == ["step_00000003.pt"]


STOP_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from dap_core.data.datasets import build_dataset
    from dap_core.train.config import load_config
    from dap_core.train.distributed import cleanup, init_distributed
    from dap_core.train.tasks import DepthTask, build_model
    from dap_core.train.trainer import Trainer

    cfg = load_config(sys.argv[1])
    torch.set_num_threads(1)
    env = init_distributed("cpu", timeout_s=cfg.runtime.dist_timeout_s)
    dataset = build_dataset({**cfg.data.labeled[0], "size": list(cfg.data.size)})
    trainer = Trainer(cfg, DepthTask(cfg, build_model(cfg)), dataset, env=env,
                      run_dir=cfg.output_dir, steps=cfg.schedule.max_steps,
                      batch_size=cfg.schedule.batch_size)
    original = trainer.task.step
    def step(module, batch):
        if env.rank == 1 and trainer.step == int(os.environ.get("STOP_AT", "-1")):
            os.kill(os.getpid(), signal.SIGSTOP)  # a rank that stops answering
        return original(module, batch)
    trainer.task.step = step
    try:
        trainer.fit()
    except RuntimeError as err:
        print(f"FAILED: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    cleanup(env)
    """
)


def _torchrun(tmp_path, steps, timeout_s, **env_extra):
    data = write_folder_dataset(tmp_path / "data", 8)
    config = write_config(
        tmp_path / "ddp.yaml",
        data={"size": [32, 64], "labeled": [{"type": "dap2m", "root": str(data)}]},
        schedule={"batch_size": 2, "max_steps": steps, "checkpoint_every": 0, "log_every": 1},
        runtime={
            "threads": 1,
            "progress": False,
            "tensorboard": False,
            "dist_timeout_s": timeout_s,
        },
    )
    script = tmp_path / "stop.py"
    script.write_text(STOP_SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(config),
    ]
    env = {**subprocess_env(), **env_extra}
    return subprocess.Popen(
        cmd,
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_stopped_rank_ends_the_run_after_the_timeout_naming_it(tmp_path):
    import os
    import signal
    import time

    started = time.monotonic()
    proc = _torchrun(tmp_path, steps=50, timeout_s=5, STOP_AT="2")
    try:
        out, _ = proc.communicate(timeout=200)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "collective timeout 5 s (runtime.dist_timeout_s)" in out
    assert "late: rank 1 (last in the forward pass step 2" in out, out[-3000:]
    assert time.monotonic() - started < 150  # not torch's default 30 minutes


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killing_the_torchrun_agent_leaves_no_orphan_workers(tmp_path):
    import os
    import signal
    import time

    proc = _torchrun(tmp_path, steps=1_000_000, timeout_s=60)
    try:
        deadline = time.monotonic() + 200
        workers: list[int] = []
        while len(workers) < 2 or (not (tmp_path / "ddp" / "run.json").exists() and False):
            assert time.monotonic() < deadline and proc.poll() is None
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            workers = [int(c) for c in children]
            time.sleep(0.2)
        time.sleep(8)  # let the workers start training
        proc.send_signal(signal.SIGKILL)  # the agent only
        proc.wait(timeout=30)
        gone_by = time.monotonic() + 30
        alive = workers
        while alive and time.monotonic() < gone_by:
            alive = [
                w
                for w in workers
                if Path(f"/proc/{w}").exists()
                and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]
            ]
            time.sleep(0.2)
        assert not alive, f"workers {alive} kept running after the agent died"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
