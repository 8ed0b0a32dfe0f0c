"""`dap train`: run one stage of the three-stage pipeline from its YAML config."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from dap_core.train.cli import add_arguments

    parser = subparsers.add_parser(
        "train",
        help="train one stage (for several GPUs: torchrun -m dap_core.train)",
        description="Run one training stage. Several processes: "
        "torchrun --nproc_per_node=N -m dap_core.train --config ...",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dap_core.train.cli import run as run_training

    return run_training(args)
