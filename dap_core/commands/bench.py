"""`dap bench --weights W`: end-to-end latency of one Predictor configuration on this machine."""

from __future__ import annotations

import argparse

from dap_core.commands.common import add_predictor_arguments, make_predictor, parse_size


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="time predict() end to end (per stage) with the chosen backend"
    )
    add_predictor_arguments(parser)
    parser.add_argument(
        "--camera-size", default=None, help="camera image HxW (default: 2 x the model input)"
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed calls after a warm-up")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dap_core.benchmark import machine_summary, random_rgb, time_predictor

    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    camera_size = parse_size(args.camera_size)  # checked before the model loads
    predictor = make_predictor(args)
    h, w = predictor.input_size
    height, width = camera_size or (2 * h, 2 * w)
    print(machine_summary(predictor.threads))
    print(f"backend: {predictor.describe()}")
    print(f"camera {width}x{height} -> model {w}x{h}, masks {list(predictor.mask_thresholds)}")
    stages = time_predictor(predictor, random_rgb(height, width), args.repeats)
    for name, latency in stages.items():
        if name == "total":
            print(f"  {name:12s} {latency}")
        else:
            print(f"  {name:12s} {latency.median_ms:8.1f} ms (p90 {latency.p90_ms:.1f})")
    return 0
