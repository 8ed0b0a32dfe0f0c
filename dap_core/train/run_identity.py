"""A run's directory is its identity: which run an `output_dir` holds, and whether a config
may continue it.

The identity of a run is its stage, seed, world size and the hash of every config value that
shapes the trained weights. Values that only say how long to train or how to report
(`schedule.max_steps`, `time_budget_s`, logging / checkpoint / preview intervals, threads,
progress bars, TensorBoard, the device, the evaluation section, data loader workers, skip
policy, the distributed timeout) are left out, so a resumed run may be extended or watched
differently. `run.json` in `output_dir` records the identity when a run starts; each
checkpoint carries it too.

A run without `--resume` refuses a directory that holds another run, unless asked to move it
aside; `--resume` refuses a directory or checkpoint whose identity differs and names what
differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dap_core.files import atomic_write_bytes

RUN_FILE = "run.json"
# What a directory holding a run contains (any one of them marks it as taken).
RUN_MARKERS = (RUN_FILE, "config.yaml", "checkpoints", "model", "critic", "curation", "pseudo")
# Dotted config keys that do not change what the run computes (see module docstring).
NOT_IDENTITY = (
    "name",
    "output_dir",
    "previous",
    "source",
    "eval",
    "schedule.max_steps",
    "schedule.time_budget_s",
    "schedule.log_every",
    "schedule.checkpoint_every",
    "schedule.keep_checkpoints",
    "schedule.preview_every",
    "runtime.device",
    "runtime.threads",
    "runtime.progress",
    "runtime.tensorboard",
    "runtime.dist_timeout_s",
    "data.num_workers",
    "data.on_error",
    "data.max_skip_fraction",
)


class RunDirError(ValueError):
    """The output directory holds another run, or a checkpoint belongs to another run."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def identity_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's values that are part of the identity, flattened to dotted keys."""
    flat = _flatten(config)
    return {
        k: v
        for k, v in flat.items()
        if not any(k == skip or k.startswith(skip + ".") for skip in NOT_IDENTITY)
    }


def run_identity(config: Mapping[str, Any], world_size: int) -> dict[str, Any]:
    """{"config_hash", "stage", "seed", "world_size"} of a config dict (`TrainConfig.to_dict`)."""
    canonical = json.dumps(identity_values(config), sort_keys=True, default=str)
    return {
        "config_hash": hashlib.sha256(canonical.encode()).hexdigest()[:16],
        "stage": config.get("stage"),
        "seed": config.get("seed"),
        "world_size": int(world_size),
    }


def describe_mismatch(
    theirs: Mapping[str, Any],
    their_config: Mapping[str, Any] | None,
    ours: Mapping[str, Any],
    our_config: Mapping[str, Any],
) -> str | None:
    """None when two identities agree, else what differs ("seed 0 (theirs) vs 5 (this
    config)", differing config keys), shortest first."""
    parts = []
    for key in ("stage", "seed", "world_size"):
        if theirs.get(key) != ours.get(key):
            parts.append(f"{key} {theirs.get(key)} there vs {ours.get(key)} in this config")
    if theirs.get("config_hash") != ours.get("config_hash"):
        keys: list[str] = []
        if their_config is not None:
            a, b = identity_values(their_config), identity_values(our_config)
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            keys = [k for k in keys if k not in ("stage", "seed")]
        if keys or not parts:
            shown = ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")
            parts.append("config differs" + (f" in {shown}" if shown else " (hash)"))
    return "; ".join(parts) if parts else None


def holds_run(directory: Path) -> bool:
    return any((directory / marker).exists() for marker in RUN_MARKERS)


def prepare_run_dir(
    directory: str | Path,
    config: Mapping[str, Any],
    world_size: int,
    *,
    resume: bool,
    move_aside: bool = False,
    log=print,
) -> dict[str, Any]:
    """Check `directory` against this run and record its identity in run.json (rank 0 only).

    Without `resume`, a directory holding another run is refused, or renamed to
    `<dir>.old-<UTC time>` when `move_aside`. With `resume`, a run.json of another identity
    is refused. Returns this run's identity.
    """
    directory = Path(directory)
    ours = run_identity(config, world_size)
    record = directory / RUN_FILE
    if not resume and holds_run(directory):
        if not move_aside:
            raise RunDirError(
                f"output_dir {directory} holds another run; continue it with --resume, "
                "choose another output_dir, or pass --move-aside to rename it and start afresh"
            )
        aside = directory.with_name(
            f"{directory.name}.old-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        )
        os.replace(directory, aside)
        log(f"moved the previous run in {directory} to {aside}")
    if resume and record.is_file():
        try:
            theirs = json.loads(record.read_text())
        except (OSError, ValueError) as err:
            raise RunDirError(
                f"{record} is unreadable ({err}); cannot tell whose run it is"
            ) from err
        mismatch = describe_mismatch(theirs.get("identity", {}), theirs.get("config"), ours, config)
        if mismatch:
            raise RunDirError(
                f"--resume: {directory} holds another run ({mismatch}); use the config it was "
                "started with, or another output_dir"
            )
    directory.mkdir(parents=True, exist_ok=True)
    if not record.is_file():
        payload = {"identity": ours, "config": dict(config), "started": time.time()}
        atomic_write_bytes(record, (json.dumps(payload, indent=1, default=str) + "\n").encode())
    return ours
