"""Arguments shared by the commands that build a Predictor (predict, bench, build-engine)."""

from __future__ import annotations

import argparse


def parse_size(text: str | None) -> tuple[int, int] | None:
    """ "256x512" -> (256, 512)."""
    if text is None:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise ValueError(f"size must look like HEIGHTxWIDTH (e.g. 256x512), got {text!r}") from err
    return height, width


def parse_panorama_size(text: str) -> tuple[int, int]:
    """ "256x512" -> (256, 512), refusing anything but an equirectangular H x 2H size."""
    height, width = parse_size(text)
    if height < 2 or width != 2 * height:
        raise ValueError(f"an ERP panorama is H x 2H (2:1, e.g. 256x512), got {text!r}")
    return height, width


def parse_thresholds(text: str | None) -> tuple[int, ...] | None:
    """ "10,50" -> (10, 50); "none" -> (); None -> None (every head)."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise ValueError(f"--masks must be comma-separated metres or 'none', got {text!r}") from err


def add_predictor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights", required=True, help="weights directory, .safetensors, .pth, or DAP .onnx"
    )
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"]
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "int8"])
    parser.add_argument(
        "--masks", default=None, help="range masks to compute, e.g. 10,50 (default: all; none)"
    )
    parser.add_argument("--input-size", default=None, help="model input HxW (default: config)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: cores)")
    parser.add_argument("--cache-dir", default=None, help="exports/engines cache ($DAP_ROS_CACHE)")


def make_predictor(args: argparse.Namespace):
    from dap_core.runtime import Predictor

    return Predictor(
        args.weights,
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        mask_thresholds=parse_thresholds(args.masks),
        input_size=parse_size(args.input_size),
        threads=args.threads,
        cache_dir=args.cache_dir,
    )
