"""Saved model files: identical bytes for identical weights, and readable by other users."""

from __future__ import annotations

import os

import torch
from model_helpers import micro_config

from dap_core.model import DAP, load_model, save_model

MICRO = micro_config(mask_thresholds=(10, 20))


def test_identical_weights_give_identical_safetensors_bytes(tmp_path):
    torch.manual_seed(0)
    model = DAP(MICRO)
    blobs = set()
    for k in range(4):  # the metadata map's order used to change from save to save
        save_model(model, tmp_path / f"m{k}")
        blobs.add((tmp_path / f"m{k}" / "model.safetensors").read_bytes())
    assert len(blobs) == 1
    again = load_model(tmp_path / "m0")
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])


def test_saved_model_files_follow_the_umask_like_any_other_file(tmp_path):
    old = os.umask(0o022)
    try:
        save_model(DAP(MICRO), tmp_path / "m")
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "m" / name).stat().st_mode & 0o777 == 0o644, name


def test_training_checkpoints_follow_the_umask_too(tmp_path):
    from dap_core.train.checkpoint import save_checkpoint

    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path, {"step": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
