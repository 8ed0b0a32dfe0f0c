"""Training checkpoints: one dict with everything needed to resume, written atomically,
read back with the safe loader only.

A checkpoint holds the trainable module, optimizer, grad scaler, step, data position, the
RNG states of python / numpy / torch (and CUDA), the config it was made with and the run's
identity (see `dap_core.train.run_identity`). Every value is a tensor, number, string, None,
or a list / tuple / dict of those, so `torch.load(weights_only=True)` reads it and nothing in
a checkpoint file, ours or planted, is ever unpickled into an arbitrary object: a run
directory can be shared without trusting whoever wrote it.

A file is written to a temporary file in the same directory, fsync'ed, renamed over the
target and the directory fsync'ed, so a crash (even SIGKILL) leaves either the old or the new
file, never a torn one. A temporary file a kill left behind is removed by the next run
(`remove_orphan_temps`); a newest file torn by other means (a bad copy, a failing disk) is
moved aside and the previous one is used (`load_latest`).

Checkpoints of older versions stored numpy's RNG state as an array; they are refused with
what to do (start afresh), not migrated: reading them would mean allowing numpy's array
reconstruction in the unpickler, for a state that only decides the augmentation stream.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from dap_core.files import atomic_write

STEP_PATTERN = re.compile(r"step_(\d{8})\.pt")
# Temp files of `dap_core.files.atomic_write`: ".<name>.<8 random chars>.tmp".
TEMP_PATTERN = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")
TORN_SUFFIX = ".unreadable"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, refused, or of another run; names it."""


class CheckpointRefusedError(CheckpointError):
    """A checkpoint the safe loader will not unpickle (a planted file, or an older format)."""


class CheckpointWriteError(RuntimeError):
    """Writing a checkpoint failed (disk full, unwritable directory); names path and cause."""


# ---------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """Every RNG the training loop touches, as tensors and plain numbers only."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npy["bit_generator"],
            "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": int(npy["pos"])},
            "has_gauss": int(npy["has_gauss"]),
            "gauss": float(npy["gauss"]),
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -------------------------------------------------------------------------------- write
class _RecordingWriter:
    """A file wrapper that remembers the first OSError of a write: torch's zip writer turns
    it into "[enforce fail ...] unexpected pos", which names neither the file nor the cause."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.handle.flush()


def _write_error(path: Path, err: BaseException) -> CheckpointWriteError:
    cause = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        cause = "no space left on device"
    return CheckpointWriteError(f"cannot write checkpoint {path}: {cause}")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temp file beside `path`, fsync, rename over `path`, fsync the dir.

    A failed write leaves `path` as it was, no temp file, and raises `CheckpointWriteError`
    naming the file and the cause (e.g. "no space left on device").
    """
    path = Path(path)
    recorder: list[_RecordingWriter] = []

    def write(handle: BinaryIO) -> None:
        recorder.append(_RecordingWriter(handle))
        torch.save(obj, recorder[0])

    try:
        return atomic_write(path, write)
    except OSError as err:
        raise _write_error(path, err) from err
    except RuntimeError as err:
        if recorder and recorder[0].error is not None:
            raise _write_error(path, recorder[0].error) from err
        raise


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


def remove_orphan_temps(directory: str | Path) -> list[tuple[Path, int]]:
    """Delete the temp files that interrupted atomic writes left under `directory` (any
    depth); returns (path, size in bytes) of each. Call before any process starts writing."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for path in sorted(directory.rglob(".*.tmp")):
        if path.is_file() and TEMP_PATTERN.fullmatch(path.name):
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            removed.append((path, size))
    return removed


# --------------------------------------------------------------------------------- read
def find_checkpoint(directory: str | Path) -> Path | None:
    """The newest `step_<N>.pt` in `directory`, or None."""
    steps = _step_files(Path(directory))
    return steps[-1] if steps else None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` with the safe loader.

    Raises `CheckpointError` (one line naming the file) for a file that is truncated or not a
    checkpoint, and for one that holds anything but tensors and plain values: such a pickle is
    refused, and nothing in it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found and found.group(1).split(".")[0] == "numpy":
            raise CheckpointRefusedError(
                f"checkpoint {path} has the format of an older dap train (its RNG state holds "
                f"numpy arrays, {found.group(1)}), which the safe loader does not unpickle, so "
                "it cannot be resumed: start the stage afresh (dap train without --resume; "
                "--move-aside keeps the old run beside it); nothing in it was run"
            ) from err
        asks = f"it asks for {found.group(1)}" if found else "it holds arbitrary objects"
        raise CheckpointRefusedError(
            f"checkpoint {path} refused: {asks}, not only tensors and plain values "
            "(this version of dap train writes no such file); nothing in it was run"
        ) from err
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} is unreadable or truncated ({reason})") from err
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"checkpoint {path} is not a training checkpoint (no step)")
    return state


def load_latest(
    directory: str | Path,
    map_location: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint in `directory` as (path, state), or None if there is none.

    A newer file that is unreadable or truncated is renamed to `<name>.unreadable` (kept for
    inspection, no longer a step file) and the previous one is tried; `log` says so. A file
    refused as unsafe is never skipped over: that is an error, not damage.
    """
    for path in reversed(_step_files(Path(directory))):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointRefusedError:
            raise
        except CheckpointError as err:
            aside = path.with_name(path.name + TORN_SUFFIX)
            os.replace(path, aside)
            log(f"{err}; moved it to {aside.name}, falling back to the previous checkpoint")
    return None
