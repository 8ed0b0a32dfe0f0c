"""A run's directory is its identity, and its files survive kills, torn copies and full disks.

Each test runs the real `dap train` in a subprocess on a tiny model for a few steps.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from train_utils import (
    REPO_ROOT,
    dap_train,
    subprocess_env,
    write_config,
    write_folder_dataset,
)

from dap_core.train.checkpoint import find_checkpoint, load_checkpoint


def _config(tmp_path: Path, name: str = "run", steps: int = 4, output_dir: Path | None = None):
    data = tmp_path / "data"
    if not data.is_dir():
        write_folder_dataset(data, 4)
    extra = {"output_dir": str(output_dir)} if output_dir is not None else {}
    return write_config(
        tmp_path / f"{name}.yaml",
        data={"size": [32, 64], "labeled": [{"type": "dap2m", "root": str(data)}]},
        schedule={"batch_size": 2, "max_steps": steps, "checkpoint_every": 2, "log_every": 1},
        **extra,
    )


def _train(config: Path, *extra: str) -> subprocess.CompletedProcess:
    return dap_train(config, *extra)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_a_new_run_refuses_a_directory_holding_another_run(tmp_path):
    config = _config(tmp_path)
    first = _train(config)
    assert first.returncode == 0, first.stderr
    line = _one_error_line(_train(config))
    assert "holds another run" in line and "--resume" in line and "--move-aside" in line
    # Resuming with another seed is another run: refused, naming what differs.
    line = _one_error_line(_train(config, "--resume", "--set", "seed=5"))
    assert "seed 0 there vs 5" in line
    line = _one_error_line(_train(config, "--resume", "--set", "optim.lr_decoder=1e-3"))
    assert "optim.lr_decoder" in line
    # Extending the same run is not another run.
    more = _train(config, "--resume", "--set", "schedule.max_steps=6")
    assert more.returncode == 0, more.stderr
    assert "resuming from" in more.stdout and "step_00000004.pt at step 4 of 6" in more.stdout
    # An explicit flag moves the old run aside and starts afresh.
    fresh = _train(config, "--move-aside")
    assert fresh.returncode == 0, fresh.stderr
    (aside,) = tmp_path.glob("run.old-*")
    assert load_checkpoint(find_checkpoint(aside / "checkpoints"))["step"] == 6
    assert load_checkpoint(find_checkpoint(tmp_path / "run/checkpoints"))["step"] == 4


def test_resume_removes_orphan_temps_and_falls_back_from_a_torn_checkpoint(tmp_path):
    config = _config(tmp_path)
    assert _train(config).returncode == 0
    ck = tmp_path / "run/checkpoints"
    good = (ck / "step_00000004.pt").read_bytes()
    (ck / ".step_00000006.pt.ab12cd_9.tmp").write_bytes(good[:1000])  # a kill mid-write
    (ck / "step_00000006.pt").write_bytes(good[: len(good) // 2])  # torn by a bad copy
    proc = _train(config, "--resume", "--set", "schedule.max_steps=8")
    assert proc.returncode == 0, proc.stderr
    assert "removed 1 temp file(s)" in proc.stdout
    assert "step_00000006.pt is unreadable or truncated" in proc.stdout
    assert "falling back to the previous checkpoint" in proc.stdout
    assert "resuming from" in proc.stdout and "step_00000004.pt at step 4 of 8" in proc.stdout
    assert not list(ck.glob("*.tmp"))
    assert (ck / "step_00000006.pt.unreadable").is_file()
    assert load_checkpoint(find_checkpoint(ck))["step"] == 8


def _checkpoint_bytes(tmp_path: Path) -> int:
    config = _config(tmp_path, "probe", steps=2)
    assert _train(config).returncode == 0
    return (tmp_path / "probe/checkpoints/step_00000002.pt").stat().st_size


def _mount_tmpfs(where: Path, size: int) -> None:
    where.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")


def test_a_full_disk_ends_in_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    size = _checkpoint_bytes(tmp_path)
    disk = tmp_path / "disk"
    # Room for two checkpoints, not for the temp file of a third.
    _mount_tmpfs(disk, int(2.5 * size) + 200_000)
    try:
        config = _config(tmp_path, steps=20, output_dir=disk / "run")
        line = _one_error_line(_train(config))
        assert "no space left on device" in line and str(disk / "run") in line, line
        ck = disk / "run/checkpoints"
        assert not list(ck.glob(".*.tmp")), "a partial file was left behind"
        newest = load_checkpoint(find_checkpoint(ck))  # the last good state is whole
        assert newest["step"] in (2, 4)
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_an_unwritable_output_dir_ends_in_one_line(tmp_path):
    if shutil.which("chattr") is None:
        pytest.skip("chattr not installed")
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem does not support chattr +i")
    try:
        config = _config(tmp_path, steps=2, output_dir=locked / "run")
        line = _one_error_line(_train(config))
        assert str(locked) in line and "not permitted" in line, line
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=False)


def test_ctrl_c_says_where_training_stopped_and_what_is_saved(tmp_path):
    import re
    import signal
    import time

    config = _config(tmp_path, steps=100_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dap_core.cli", "train", "--config", str(config)],
        env=subprocess_env(),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ck = tmp_path / "run/checkpoints"
    deadline = time.monotonic() + 240
    while find_checkpoint(ck) is None:
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    found = re.search(r"interrupted at step (\d+), checkpoint at step (\d+)", err)
    assert found, err
    step, saved = int(found.group(1)), int(found.group(2))
    assert saved <= step and load_checkpoint(find_checkpoint(ck))["step"] == saved
    assert not list(ck.glob(".*.tmp"))
