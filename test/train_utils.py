"""Shared pieces of the training tests: a tiny model, tiny on-disk data, config files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

# A DAP small enough to train for a few steps per second on two CPU cores.
TINY_MODEL: dict[str, Any] = {
    "preset": "tiny",
    "overrides": {
        "embed_dim": 64,
        "depth": 4,
        "num_heads": 2,
        "layer_indices": [0, 1, 2, 3],
        "head_features": 32,
        "head_out_channels": [16, 32, 64, 64],
        "head_hidden": 16,
        "mask_thresholds": [10, 100],
    },
}


def write_folder_dataset(root: Path, n: int, size=(32, 64), seed: int = 0) -> Path:
    """n DAP-2M-style samples: smooth random images whose brightness encodes the range."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    for i in range(n):
        base = rng.uniform(2.0, 40.0)
        ramp = np.linspace(0.5, 1.5, w, dtype=np.float32)[None, :].repeat(h, 0)
        rng_m = (base * ramp).astype(np.float32)
        gray = (255 * (1.0 - rng_m / 60.0)).clip(0, 255).astype(np.uint8)
        rgb = np.stack([gray, np.roll(gray, i, axis=1), 255 - gray], -1)
        cv2.imwrite(str(root / f"rgb_{i:03d}.png"), rgb)
        np.save(root / f"erp_distance_{i:03d}.npy", rng_m)
    return root


def write_config(path: Path, **sections: Any) -> Path:
    """A stage YAML with the tiny model and quiet, single-thread-safe runtime defaults."""
    cfg: dict[str, Any] = {
        "stage": 1,
        "name": path.stem,
        "output_dir": str(path.parent / path.stem),
        "seed": 0,
        "model": TINY_MODEL,
        "runtime": {"threads": 1, "progress": False, "tensorboard": False},
        "loss": {"enabled": ["silog", "grad", "normal", "pts", "mask"]},
        "optim": {"lr_backbone": 2e-4, "lr_decoder": 2e-3},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def dap_train(config: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`dap train --config CONFIG ...` as a user runs it; the result is the caller's to judge."""
    return subprocess.run(
        [sys.executable, "-m", "dap_core.cli", "train", "--config", str(config), *extra],
        env=subprocess_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_train(config: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dap_core.train", "--config", str(config), *extra]
    proc = subprocess.run(
        cmd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc
