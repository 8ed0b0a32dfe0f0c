"""`dap bag IN OUT`: the node's outputs for every panorama of a rosbag2 recording, offline.

Owns the command line of dap_ros.bag (registered in dap_core.cli). Light at import: rosbags,
torch and the model load only when the command runs. Parameters are the node's, from the same
params YAML (`--params-file config/dap.yaml`) and `-p name:=value` overrides.
"""

from __future__ import annotations

import argparse
import sys

OUTPUT_CHOICES = ("range", "mask", "cloud", "scan", "preview")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bag",
        help="process a rosbag2 recording (sqlite3 or MCAP) offline into the node's outputs",
        description="Read the panorama topic of a rosbag2 bag, run the node's pipeline on every "
        "frame, and write its outputs (with the input's stamps and frame ids) to a new bag.",
    )
    parser.add_argument("input", help="input bag directory (or .mcap / .db3 file)")
    parser.add_argument("output", help="output bag directory (must not exist)")
    parser.add_argument(
        "--topic",
        default=None,
        help="image topic (Image or CompressedImage); default: the only one",
    )
    parser.add_argument(
        "--lens0",
        default=None,
        metavar="TOPIC",
        help="two_images fisheye_calibration: lens 0's topic (default: the one ending in the "
        "node's lens0_topic); give --lens1 with it",
    )
    parser.add_argument("--lens1", default=None, metavar="TOPIC", help="lens 1's topic")
    parser.add_argument(
        "--outputs",
        default=",".join(OUTPUT_CHOICES),
        help=f"comma-separated outputs to write (default: all of {','.join(OUTPUT_CHOICES)})",
    )
    parser.add_argument(
        "--params-file", default=None, help="the node's params YAML (e.g. config/dap.yaml)"
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="override one node parameter (repeatable), e.g. -p mask_threshold:=20",
    )
    parser.add_argument(
        "--namespace", default=None, help="namespace of the output topics (default: the image's)"
    )
    parser.add_argument(
        "--storage", choices=("sqlite3", "mcap"), default=None, help="default: the input's"
    )
    parser.add_argument(
        "--stabilize",
        action="store_true",
        help="temporal stabilisation on (same as -p temporal_stabilization:=true)",
    )
    parser.add_argument("--batch", type=int, default=1, help="frames per inference call")
    parser.add_argument("--copy-input", action="store_true", help="copy every input message too")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--distro", default="kilted", help="ROS 2 message definitions to write")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict:
    """["mask_threshold:=20", "frame_id=cam"] -> {"mask_threshold": 20, "frame_id": "cam"}."""
    import yaml

    values = {}
    for item in items:
        name, sep, text = item.partition(":=")
        if not sep:
            name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"-p takes NAME:=VALUE, got {item!r}")
        try:
            values[name.strip()] = yaml.safe_load(text) if text else ""
        except yaml.YAMLError as err:
            raise ValueError(f"-p {item!r}: bad value ({err})") from err
    return values


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dap_ros.bag import BagJob, process_bag
    from dap_ros.params_file import settings_from_file
    from dap_ros.predictors import head_predictors

    outputs = tuple(name.strip() for name in args.outputs.split(",") if name.strip())
    overrides = parse_overrides(args.param)
    if args.stabilize:
        overrides["temporal_stabilization"] = True
    settings = settings_from_file(args.params_file, overrides)
    if (args.lens0 is None) != (args.lens1 is None):
        raise ValueError("give both --lens0 and --lens1, or neither")
    lens_topics = None if args.lens0 is None else (args.lens0, args.lens1)
    job = BagJob(
        source=Path(args.input),
        dest=Path(args.output),
        settings=settings,
        outputs=outputs,
        topic=args.topic,
        namespace=args.namespace,
        storage=args.storage,
        batch=args.batch,
        lens_topics=lens_topics,
        copy_input=args.copy_input,
        overwrite=args.overwrite,
        distro=args.distro,
    )
    from dap_ros.bag import check_job

    check_job(job)  # before the model loads: a bad path fails in a second
    predictor = head_predictors(settings).get(settings.mask_threshold)
    try:
        summary = process_bag(job, predictor, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("dap bag: interrupted; no output bag written", file=sys.stderr)
        return 130
    for line in summary.lines():
        print(line)
    print(f"wrote {job.dest}")
    return 0
