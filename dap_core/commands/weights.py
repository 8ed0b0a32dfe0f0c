"""`dap weights official`: download the released DAP checkpoint, verify and convert it."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights", help="download and convert released weights into the local cache"
    )
    parser.add_argument("name", choices=["official"], help="which weights")
    parser.add_argument(
        "--cache-dir", default=None, help="cache root (default $DAP_ROS_CACHE or ~/.cache/dap_ros)"
    )
    parser.add_argument("--revision", default="main", help="hub revision (branch or commit)")
    parser.add_argument("--force", action="store_true", help="download and convert again")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dap_core.model import hub

    out = hub.fetch_official_weights(args.cache_dir, force=args.force, revision=args.revision)
    print(out)
    return 0
