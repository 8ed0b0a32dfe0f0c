"""Checkpoints: atomic writes, and SIGKILL + --resume reproducing an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
from train_utils import REPO_ROOT, run_train, subprocess_env, write_config, write_folder_dataset

from dap_core.model import load_model
from dap_core.train.checkpoint import atomic_save, find_checkpoint, load_checkpoint, save_checkpoint

STEPS = 8


def test_atomic_save_leaves_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "ck.pt"
    atomic_save({"step": 1}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"step": 2, "bad": Unpicklable()}, target)
    assert load_checkpoint(target)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind


def test_save_checkpoint_keeps_the_newest(tmp_path):
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, {"step": step}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == [
        "step_00000004.pt",
        "step_00000006.pt",
    ]
    assert load_checkpoint(find_checkpoint(tmp_path))["step"] == 6
    (tmp_path / "step_00000008.pt").write_bytes(b"torn")
    with pytest.raises(RuntimeError, match="unreadable"):
        load_checkpoint(find_checkpoint(tmp_path))


def _config(tmp_path, name, max_steps):
    data = write_folder_dataset(tmp_path / "data", 6)
    return write_config(
        tmp_path / f"{name}.yaml",
        data={"size": [32, 64], "labeled": [{"type": "dap2m", "root": str(data)}]},
        schedule={"batch_size": 2, "max_steps": max_steps, "checkpoint_every": 2, "log_every": 1},
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    straight = _config(tmp_path, "straight", STEPS)
    run_train(straight)
    reference = load_checkpoint(find_checkpoint(tmp_path / "straight/checkpoints"))
    assert reference["step"] == STEPS

    # Same run, but with no end in sight: kill it hard once a mid-run checkpoint exists.
    killed = _config(tmp_path, "killed", 10_000)
    cmd = [sys.executable, "-m", "dap_core.train", "--config", str(killed)]
    proc = subprocess.Popen(
        cmd,
        env=subprocess_env(),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ck_dir = tmp_path / "killed/checkpoints"
    deadline = time.monotonic() + 300
    while not (ck_dir / "step_00000004.pt").exists():
        assert proc.poll() is None, "training exited before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint at step 4 within 300 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    saved = load_checkpoint(find_checkpoint(ck_dir))  # never torn, whenever the kill landed
    assert 4 <= saved["step"] < STEPS

    run_train(killed, "--resume", "--set", f"schedule.max_steps={STEPS}")
    resumed = load_checkpoint(find_checkpoint(tmp_path / "killed/checkpoints"))
    assert resumed["step"] == STEPS
    assert resumed["data_position"]["samples"] == STEPS * 2
    for key, value in reference["module"].items():
        assert torch.equal(value, resumed["module"][key]), f"{key} differs after resume"
    ref_opt = reference["optimizer"]["state"]
    res_opt = resumed["optimizer"]["state"]
    assert all(torch.equal(ref_opt[k]["exp_avg"], res_opt[k]["exp_avg"]) for k in ref_opt)
    # The exported model is the trained one.

    model = load_model(tmp_path / "killed/model")
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference["module"][key])
