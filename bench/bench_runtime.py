"""Runtime latency per backend, as ratios measured in one run on this machine.

CPU (default, a few minutes on 2 cores):
  1. the shipped default model end to end, camera 256x512 (the target's size) -> resized to the
     model input and back -> range + masks,
     per backend (torch, onnxruntime) and what "auto" picks, against the targets
     (>= 5 Hz target, >= 3 Hz floor; perf note §5), with all mask heads and with one;
  2. the same model at 512x1024: torch vs onnxruntime forward (ratio).
  With --vitl: DAP ViT-L at 512x1024, torch vs onnxruntime (one timed forward each; the
  ONNX export of ViT-L alone takes minutes).
GPU (when CUDA is present): torch FP32 eager (the official code's setting) vs BF16 eager, BF16
  CUDA graph, BF16 torch.compile and TensorRT FP16, for the small model and ViT-L at 512x1024,
  as speed-ups over FP32 eager (targets: >= 6x floor, >= 8x, perf note §5).

The shipped weights (weights/dap_small) are used when present; otherwise the same architecture
with random weights (speed does not depend on the values). A GEMM rate measured in the same run
gives each CPU time as a fraction of the FLOP-bound time ("eff" = FLOPs / time / GEMM rate).

Usage: .venv/bin/python bench/bench_runtime.py [--vitl] [--repeats 5] [--threads N] [--no-gpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dap_core.benchmark import (  # noqa: E402
    gemm_gflops,
    gpu_variants,
    machine_summary,
    random_rgb,
    time_predictors,
)

SHIPPED = REPO / "weights" / "dap_small"
CAMERA_HW = (256, 512)  # the end-to-end target is stated at this camera size
GOAL_HZ = 10.0  # the shipped model at 256x512 end to end on 2 cores (issue goal)
TARGET_HZ, FLOOR_HZ = 5.0, 3.0
GPU_FLOOR_X, GPU_TARGET_X = 6.0, 8.0


def load_small():
    import torch

    from dap_core.model import DAP, DAPConfig, load_model

    if (SHIPPED / "config.json").is_file():
        return load_model(SHIPPED), f"shipped {SHIPPED.relative_to(REPO)}"
    torch.manual_seed(0)
    return DAP(DAPConfig.preset("tiny")).eval(), "preset 'tiny' (shipped architecture), random"


def flops(config, height: int, width: int, n_masks: int) -> float:
    from dap_core.model.flops import count_flops

    count = count_flops(config, height, width)
    return count.backbone + count.per_head * (1 + n_masks)


def cpu_end_to_end(model, label: str, threads: int, repeats: int, cache: str):
    from dap_core.runtime import Predictor

    gemm = gemm_gflops(threads)  # re-measured per section: a shared machine's load drifts
    h, w = model.config.input_size
    rgb = random_rgb(*CAMERA_HW)
    print(
        f"\n[1] {label}: end to end, camera {rgb.shape[0]}x{rgb.shape[1]} -> model {h}x{w}; "
        f"GEMM now {gemm:.0f} GFLOP/s"
    )
    head_sets = [None]  # every mask head the model has ...
    if len(model.config.mask_thresholds) > 1:
        head_sets.append((model.config.mask_thresholds[-1],))  # ... and one, when that differs
    for masks in head_sets:
        n = len(model.config.mask_thresholds) if masks is None else len(masks)
        gflop = flops(model.config, h, w, n) / 1e9
        predictors = {
            backend: Predictor(
                model, backend=backend, mask_thresholds=masks, threads=threads, cache_dir=cache
            )
            for backend in ("torch", "onnxruntime")
        }
        predictors.update(reduced_precision(model, masks, threads, cache))
        rows = time_predictors(predictors, rgb, repeats)
        auto = Predictor(model, mask_thresholds=masks, threads=threads, cache_dir=cache)
        print(f"  depth + {n} mask head(s), {gflop:.1f} GFLOP:")
        for backend, stages in rows.items():
            total = stages["total"]
            eff = gflop / (stages["forward"].median_ms / 1e3) / gemm
            verdict = (
                "meets target"
                if total.hz >= TARGET_HZ
                else "meets floor"
                if total.hz >= FLOOR_HZ
                else "BELOW FLOOR"
            )
            print(
                f"    {backend:17s} {total}  = {total.hz / TARGET_HZ:.2f} x 5 Hz target "
                f"({verdict}); eff {eff:.0%}"
            )
        best = min(rows, key=lambda name: rows[name]["total"].median_ms)
        print(
            f"    fastest: {best} at {rows[best]['total'].hz:.1f} Hz end to end "
            f"= {rows[best]['total'].hz / GOAL_HZ:.2f} x the {GOAL_HZ:.0f} Hz goal"
        )
        ratio = rows["torch"]["total"].median_ms / rows["onnxruntime"]["total"].median_ms
        print(f"    onnxruntime speed-up over torch: {ratio:.2f}x; auto picks {auto.backend}")


def reduced_precision(model, masks, threads: int, cache: str) -> dict:
    """The gated CPU variants that pass here: onnxruntime INT8, torch BF16 (each refused
    with its reason or accuracy numbers otherwise, printed)."""
    from dap_core.reduced_precision import PrecisionRefusedError
    from dap_core.runtime import Predictor

    passed = {}
    for backend, precision in (("onnxruntime", "int8"), ("torch", "bf16")):
        name = f"{backend} {precision}"
        try:
            predictor = Predictor(
                model,
                backend=backend,
                precision=precision,
                mask_thresholds=masks,
                threads=threads,
                cache_dir=cache,
            )
        except PrecisionRefusedError as err:
            print(f"    {name:17s} refused: {err}")
            continue
        print(f"    {name:17s} accepted: {predictor.backend_reason}")
        passed[name] = predictor
    return passed


def cpu_forward_pair(
    model, label: str, height: int, width: int, threads: int, repeats: int, cache: str
):
    from dap_core.runtime import Predictor

    gemm = gemm_gflops(threads)
    rgb = random_rgb(height, width)
    n = len(model.config.mask_thresholds)
    gflop = flops(model.config, height, width, n) / 1e9
    print(
        f"\n[2] {label} at {width}x{height}, depth + {n} masks ({gflop:.0f} GFLOP), forward only; "
        f"GEMM now {gemm:.0f} GFLOP/s"
    )
    medians = {}
    predictors = {
        backend: Predictor(
            model,
            backend=backend,
            input_size=(height, width),
            threads=threads,
            cache_dir=cache,
            warmup=repeats > 1,
        )
        for backend in ("torch", "onnxruntime")
    }
    timed = time_predictors(predictors, rgb, repeats, warmup=0)
    for backend in predictors:
        forward = timed[backend]["forward"]
        medians[backend] = forward.median_ms
        eff = gflop / (forward.median_ms / 1e3) / gemm
        print(f"    {backend:12s} {forward}  eff {eff:.0%}")
    print(f"    onnxruntime / torch time ratio: {medians['onnxruntime'] / medians['torch']:.2f}")


def gpu_section(model, label: str, repeats: int) -> None:
    results = gpu_variants(model, 512, 1024, repeats)
    base = results["torch fp32 eager"]
    print(f"\n[GPU] {label} at 1024x512, batch 1, all heads; speed-up over torch fp32 eager")
    for name, value in results.items():
        if isinstance(value, str):
            print(f"    {name:26s} {value}")
            continue
        speedup = base.median_ms / value.median_ms
        mark = ""
        if name != "torch fp32 eager":
            mark = (
                "target"
                if speedup >= GPU_TARGET_X
                else ("floor" if speedup >= GPU_FLOOR_X else "below 6x floor")
            )
        print(f"    {name:26s} {value}  {speedup:5.2f}x {mark}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vitl", action="store_true", help="also ViT-L on CPU (slow)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--no-gpu", action="store_true")
    args = parser.parse_args()

    import torch

    from dap_core.model import DAP, DAPConfig
    from dap_core.runtime import available_cores

    threads = args.threads or available_cores()
    gemm = gemm_gflops(threads)
    print(machine_summary(threads))
    print(f"fp32 GEMM {gemm:.0f} GFLOP/s on {threads} threads (this run)")
    small, label = load_small()
    with tempfile.TemporaryDirectory() as cache:
        cpu_end_to_end(small, label, threads, args.repeats, cache)
        cpu_forward_pair(small, label, 512, 1024, threads, max(2, args.repeats // 2), cache)
        if args.vitl:
            torch.manual_seed(0)
            vitl = DAP(DAPConfig.preset("vitl", mask_thresholds=(100,))).eval()
            cpu_forward_pair(vitl, "ViT-L (random weights)", 512, 1024, threads, 1, cache)
    if torch.cuda.is_available() and not args.no_gpu:
        gpu_section(small, label, repeats=20)
        torch.manual_seed(0)
        vitl = DAP(DAPConfig.preset("vitl", mask_thresholds=(100,))).eval()
        gpu_section(vitl, "ViT-L (random weights, 1 mask head)", repeats=20)
    elif not args.no_gpu:
        print("\n[GPU] no CUDA device: GPU comparison not run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
