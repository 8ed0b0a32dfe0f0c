"""Training checkpoints: one dict with everything needed to resume, written atomically.

A checkpoint holds the trainable module, optimizer, grad scaler, step, data position, the
RNG states of python / numpy / torch (and CUDA), and the config it was made with. It is
written to a temporary file in the same directory, fsync'ed, renamed over the target and
the directory fsync'ed, so a crash (even SIGKILL) leaves either the old or the new file,
never a torn one.
"""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dap_core.files import atomic_write

STEP_PATTERN = re.compile(r"step_(\d{8})\.pt")


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop touches."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temp file beside `path`, fsync, rename over `path`, fsync the dir."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def _step_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("step_*.pt") if STEP_PATTERN.fullmatch(p.name))


def save_checkpoint(directory: str | Path, state: dict[str, Any], *, keep: int = 2) -> Path:
    """Write `step_<N>.pt` atomically, then drop all but the newest `keep` step files.

    There is deliberately no separate "last" file: a kill between writing two files would
    leave them disagreeing. The newest complete step file is the latest state.
    """
    directory = Path(directory)
    path = atomic_save(state, directory / f"step_{int(state['step']):08d}.pt")
    steps = _step_files(directory)
    for old in steps[: max(0, len(steps) - max(keep, 1))]:
        old.unlink(missing_ok=True)
    return path


def find_checkpoint(directory: str | Path) -> Path | None:
    """The newest `step_<N>.pt` in `directory`, or None."""
    steps = _step_files(Path(directory))
    return steps[-1] if steps else None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (plain tensors and python containers)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        # RNG states hold numpy arrays and tuples; the file is our own, written above.
        return torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise RuntimeError(f"checkpoint {path} is unreadable or truncated ({err})") from err
