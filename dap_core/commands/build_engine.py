"""`dap build-engine model.onnx --precision fp16`: TensorRT engine, cached and parity-checked."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build-engine", help="build (or fetch from the cache) a TensorRT engine from a DAP ONNX"
    )
    parser.add_argument("onnx", help="ONNX file from `dap export onnx`")
    parser.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "bf16"])
    parser.add_argument(
        "--cache-dir", default=None, help="engine cache (default: $DAP_ROS_CACHE/engines)"
    )
    parser.add_argument("--max-batch", type=int, default=1, help="for dynamic-batch exports")
    parser.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument(
        "--skip-parity", action="store_true", help="do not compare with onnxruntime (not advised)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dap_core.export.onnx import INPUT_NAME, read_onnx_info
    from dap_core.export.parity import load_or_make_reference, verify_engine
    from dap_core.export.tensorrt import TensorRTEngine, build_engine, engine_cache_dir

    info = read_onnx_info(args.onnx)
    cache = Path(args.cache_dir) / "engines" if args.cache_dir else engine_cache_dir()
    record = build_engine(
        args.onnx,
        args.precision,
        cache_dir=cache,
        force=args.force,
        max_batch=args.max_batch,
        workspace_bytes=int(args.workspace_gb * (1 << 30)),
    )
    print(f"{'built' if record.built else 'cached'}: {record.engine_path}")
    print(f"  {record.plan.describe()}")
    if args.skip_parity:
        print("  parity check skipped")
        return 0
    import torch

    shape = (info.batch or 1, 3, *info.input_size)
    ref_in, ref_out = load_or_make_reference(record, args.onnx, INPUT_NAME, shape)
    engine = TensorRTEngine(record.engine_path)

    def run_engine(inputs):
        outputs = engine({k: torch.from_numpy(v).cuda() for k, v in inputs.items()})
        return {k: v.float().cpu().numpy() for k, v in outputs.items()}

    report = verify_engine(run_engine, ref_in, ref_out, args.precision, record.engine_path.name)
    print(f"  parity vs onnxruntime FP32: {report.describe()}")
    return 0
