"""`dap info`: report versions and which inference backends this machine can run."""

from __future__ import annotations

import argparse
import importlib.util
import platform

from dap_core import __version__

OPTIONAL_BACKENDS = ("torch", "onnxruntime", "tensorrt")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="show versions and available backends")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(f"dap_core {__version__} on Python {platform.python_version()} ({platform.machine()})")
    for name in OPTIONAL_BACKENDS:
        found = importlib.util.find_spec(name) is not None
        print(f"  {name:12s} {'available' if found else 'not installed'}")
    return 0
