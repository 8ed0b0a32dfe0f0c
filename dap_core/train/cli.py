"""Command-line front of training, shared by `dap train` and `python -m dap_core.train`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="stage YAML (training/stage1.yaml, ...)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the checkpoints in output_dir"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set schedule.max_steps=100 (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the stage the config names, as one torchrun rank or as a single process."""
    import torch

    from dap_core.train.config import load_config
    from dap_core.train.distributed import cleanup, init_distributed
    from dap_core.train.stages import run_stage

    cfg = load_config(args.config, args.overrides)
    wants_cuda = cfg.runtime.device == "cuda" or (
        cfg.runtime.device == "auto" and torch.cuda.is_available()
    )
    env = init_distributed("cuda" if wants_cuda else "cpu")
    try:
        run_stage(cfg, env, resume=args.resume)
    finally:
        cleanup(env)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dap_core.train", description="Run one stage of DAP training."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
