"""`dap export onnx --weights W --out model.onnx`: fixed-size ONNX for onnxruntime / TensorRT."""

from __future__ import annotations

import argparse

from dap_core.commands.common import parse_size, parse_thresholds


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a model (onnx)")
    parser.add_argument("format", choices=["onnx"], help="export format")
    parser.add_argument("--weights", required=True, help="weights directory, .safetensors or .pth")
    parser.add_argument("--out", required=True, help="output .onnx file")
    parser.add_argument("--input-size", default=None, help="HxW (default: the model's config)")
    parser.add_argument("--masks", default=None, help="mask heads to export, e.g. 10,50 or none")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18)")
    parser.add_argument("--dynamic-batch", action="store_true", help="dynamic batch axis (1-64)")
    parser.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dap_core.export.onnx import export_onnx
    from dap_core.model import load_model

    model = load_model(args.weights)
    info = export_onnx(
        model,
        args.out,
        input_size=parse_size(args.input_size),
        mask_thresholds=parse_thresholds(args.masks),
        opset=args.opset,
        dynamic_batch=args.dynamic_batch,
        batch=args.batch,
    )
    batch = "dynamic" if info.dynamic_batch else info.batch
    h, w = info.input_size
    print(
        f"wrote {info.path}: opset {info.opset}, input {batch}x3x{h}x{w}, outputs "
        f"{', '.join(info.output_names)}; onnx.checker passed, no If/Loop, RoPE baked"
    )
    return 0
