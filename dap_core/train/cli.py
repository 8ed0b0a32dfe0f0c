"""Command-line front of training, shared by `dap train` and `python -m dap_core.train`.

Every expected failure ends in one line on stderr and a non-zero status: a bad config, a
checkpoint refused or of another run, a full disk or unwritable output (naming the path and
the cause), a late rank, and Ctrl-C ("interrupted at step N, checkpoint at step M", status
130). Under torchrun each rank's line starts with its rank.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

INTERRUPTED_STATUS = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="stage YAML (training/stage1.yaml, ...)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the checkpoints in output_dir"
    )
    parser.add_argument(
        "--move-aside",
        action="store_true",
        help="start afresh even if output_dir holds another run: rename it to "
        "<output_dir>.old-<time> first (without this such a directory is refused)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set schedule.max_steps=100 (repeatable)",
    )


def _fail(message: str) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = f"[rank {os.environ.get('RANK', '0')}] " if world > 1 else ""
    # One write call: ranks share the terminal, and print() writes the text and its newline
    # separately, so two ranks' lines could run together.
    sys.stderr.write(f"{rank}dap train: error: {message}\n")
    sys.stderr.flush()


def _os_message(err: OSError) -> str:
    where = f" {err.filename}" if err.filename else ""
    cause = err.strerror or str(err)
    if isinstance(err, FileNotFoundError):
        return f"not found:{where}" if where else cause
    return f"cannot write or read{where}: {cause}"


def run(args: argparse.Namespace) -> int:
    """Run the stage the config names, as one torchrun rank or as a single process."""
    from dap_core.train.trainer import TrainingInterruptedError

    try:
        return _run(args)
    except TrainingInterruptedError as stop:
        _fail(f"{stop} (continue with --resume)")
        return INTERRUPTED_STATUS
    except KeyboardInterrupt:
        _fail("interrupted before training started (nothing to resume from this phase)")
        return INTERRUPTED_STATUS
    except OSError as err:
        _fail(_os_message(err))
        return 1
    except (ValueError, RuntimeError) as err:
        _fail(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        return 1


def _run(args: argparse.Namespace) -> int:
    import torch

    from dap_core.train.config import load_config
    from dap_core.train.distributed import cleanup, init_distributed
    from dap_core.train.stages import run_stage

    cfg = load_config(args.config, args.overrides)
    wants_cuda = cfg.runtime.device == "cuda" or (
        cfg.runtime.device == "auto" and torch.cuda.is_available()
    )
    env = init_distributed("cuda" if wants_cuda else "cpu", timeout_s=cfg.runtime.dist_timeout_s)
    try:
        run_stage(cfg, env, resume=args.resume, move_aside=args.move_aside)
    finally:
        cleanup(env)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dap_core.train", description="Run one stage of DAP training."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
