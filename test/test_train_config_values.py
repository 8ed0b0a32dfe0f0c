"""Config values that make no sense are refused with one line naming the key, never a
traceback from deep inside training."""

from __future__ import annotations

import subprocess
import sys

import pytest
from train_utils import REPO_ROOT, subprocess_env, write_config

from dap_core.train.config import config_from_dict

BAD_VALUES = [
    ({"optim": {"lr_backbone": -1e-4}}, r"optim\.lr_backbone.*>= 0"),
    ({"optim": {"lr_decoder": -5e-5}}, r"optim\.lr_decoder.*>= 0"),
    ({"discriminator": {"lr": -2e-4}}, r"discriminator\.lr.*>= 0"),
    ({"schedule": {"checkpoint_every": -1}}, r"schedule\.checkpoint_every.*>= 0"),
    ({"optim": {"grad_clip": -1}}, r"optim\.grad_clip.*>= 0"),
    ({"schedule": {"time_budget_s": -5}}, r"schedule\.time_budget_s.*> 0"),
    ({"data": {"size": 64}}, r"data\.size.*\[height, width\]"),
    ({"data": {"size": [64, 0]}}, r"data\.size.*\[height, width\]"),
    ({"schedule": {"batch_size": 2.5}}, r"schedule\.batch_size.*integer"),
    ({"model": {"overrides": {"embed_dimm": 64}}}, r"model\.overrides.*embed_dimm"),
    ({"schedule": {"log_every": 0}}, r"schedule\.log_every.*>= 1"),
    ({"schedule": {"keep_checkpoints": 0}}, r"schedule\.keep_checkpoints.*>= 1"),
    ({"data": {"max_skip_fraction": 1.5}}, r"data\.max_skip_fraction"),
    ({"runtime": {"dist_timeout_s": 0}}, r"runtime\.dist_timeout_s.*> 0"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_VALUES)
def test_nonsense_values_are_refused_naming_the_key(raw, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(raw)


def test_sensible_edge_values_are_accepted():
    cfg = config_from_dict(
        {
            "optim": {"lr_backbone": 0, "grad_clip": 0},
            "schedule": {"checkpoint_every": 0, "time_budget_s": None, "batch_size": 2.0},
        }
    )
    assert cfg.schedule.batch_size == 2 and isinstance(cfg.schedule.batch_size, int)
    assert cfg.optim.grad_clip == 0


@pytest.mark.parametrize(
    "override",
    [
        "data.size=64",
        "schedule.batch_size=2.5",
        "model.overrides={embed_dimm: 64}",
        "schedule.log_every=0",
    ],
)
def test_dap_train_reports_a_bad_value_in_one_line(tmp_path, override):
    config = write_config(tmp_path / "bad.yaml", data={"size": [32, 64], "labeled": []})
    proc = subprocess.run(
        [sys.executable, "-m", "dap_core.cli", "train", "--config", str(config), "--set", override],
        env=subprocess_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dap train: error:"), proc.stderr
    assert override.split("=")[0].split(".")[-1] in lines[0]
