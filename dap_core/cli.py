"""The `dap` command line: one entry point, one sub-command per job.

Each sub-command lives in its own module under `dap_core.commands` and exposes
`register(subparsers)`; heavy imports (torch, onnx) happen inside the command's
run function so that `dap --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from dap_core import __version__

# Modules that each add one or more sub-commands. Order is the order in `dap --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "dap_core.commands.info",
    "dap_core.commands.convert",
    "dap_core.commands.weights",
    "dap_core.commands.synth",
    "dap_core.commands.fisheye",
    "dap_core.commands.predict",
    "dap_core.commands.export",
    "dap_core.commands.build_engine",
    "dap_core.commands.bench",
    "dap_core.commands.train",
    "dap_core.commands.eval",
    "dap_core.commands.distill",
    "dap_ros.bag_cli",  # ROS-free: rosbags reads and writes the bags
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="dap", description="Depth Any Panoramas: model, training, export and inference."
    )
    parser.add_argument("--version", action="version", version=f"dap {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `dap` command; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        # Expected user errors (bad path, bad checkpoint, bad config) get one clear line.
        print(f"dap {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
