"""Training checkpoints never run code: a malicious step file is refused in one line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from train_utils import dap_train, write_config, write_folder_dataset

from dap_core.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class _Shell:
    """Unpickling this runs a shell command (what an attacker would put in a shared run)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_checkpoint_round_trips_through_the_safe_loader(tmp_path):
    import random

    import numpy as np

    state = {"task": "depth", "step": 3, "rng": rng_state(), "module": {"w": torch.ones(2)}}
    path = save_checkpoint(tmp_path, state)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    # weights_only=True is the whole point: the file must load without unpickling objects.
    loaded = torch.load(path, weights_only=True)
    set_rng_state(loaded["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    assert loaded["step"] == 3 and torch.equal(loaded["module"]["w"], torch.ones(2))


def test_malicious_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "step_00000009.pt"
    torch.save({"task": "depth", "step": 9, "x": _Shell(f"touch {marker}")}, path)
    try:
        load_checkpoint(path)
    except RuntimeError as err:
        assert "refused" in str(err) and str(path) in str(err)
    else:
        raise AssertionError("a pickle with a code payload was loaded")
    assert not marker.exists()


def test_dap_train_resume_never_executes_a_planted_checkpoint(tmp_path):
    data = write_folder_dataset(tmp_path / "data", 4)
    config = write_config(
        tmp_path / "run.yaml",
        data={"size": [32, 64], "labeled": [{"type": "dap2m", "root": str(data)}]},
        schedule={"batch_size": 2, "max_steps": 2, "checkpoint_every": 1, "log_every": 1},
    )
    marker = tmp_path / "pwned"
    planted = tmp_path / "run" / "checkpoints" / "step_00000099.pt"
    planted.parent.mkdir(parents=True)
    torch.save({"task": "depth", "step": 99, "x": _Shell(f"touch {marker}")}, planted)
    proc = dap_train(config, "--resume")
    assert not marker.exists(), "the checkpoint's payload ran"
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "step_00000099.pt" in proc.stderr and "refused" in proc.stderr, proc.stderr


def _old_format_checkpoint(path: Path) -> None:
    """A step file as dap train wrote it before the safe loader: numpy's RNG state as an
    array (`np.random.get_state()`), no run identity."""
    import random

    import numpy as np

    rng = {"python": random.getstate(), "numpy": np.random.get_state()}
    rng["torch"] = torch.get_rng_state()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"task": "depth", "step": 2, "rng": rng, "module": {}, "elapsed_s": 1.0}, path)


def test_an_old_format_checkpoint_is_refused_saying_why_and_what_to_do(tmp_path):
    path = tmp_path / "step_00000002.pt"
    _old_format_checkpoint(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    text = str(err.value)
    assert str(path) in text and "older dap train" in text and "numpy" in text
    assert "without --resume" in text and "--move-aside" in text and "\n" not in text


def test_dap_train_resume_of_an_old_run_is_one_line_and_move_aside_starts_afresh(tmp_path):
    data = write_folder_dataset(tmp_path / "data", 4)
    config = write_config(
        tmp_path / "run.yaml",
        data={"size": [32, 64], "labeled": [{"type": "dap2m", "root": str(data)}]},
        schedule={"batch_size": 2, "max_steps": 2, "checkpoint_every": 1, "log_every": 1},
    )
    _old_format_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000002.pt")

    def train(*extra: str) -> subprocess.CompletedProcess:
        return dap_train(config, *extra)

    proc = train("--resume")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "older dap train" in errors[0], proc.stderr
    fresh = train("--move-aside")
    assert fresh.returncode == 0, fresh.stderr
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    assert list(tmp_path.glob("run.old-*/checkpoints/step_00000002.pt"))
