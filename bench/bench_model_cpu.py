"""CPU forward time and peak memory of DAP, as a ratio to a FLOP-based bound.

For each model: one fp32 forward (random weights, inference mode, batch 1) timed in its own
process (so peak RSS belongs to that model alone). The bound is the model's FLOPs (analytic
count, dap_core.model.flops) divided by this machine's fp32 matmul rate measured in the same
run with the same thread count: ratio = time / bound (1.0 = every FLOP at GEMM speed).

Usage: .venv/bin/python bench/bench_model_cpu.py [--models tiny,vits,vitl] [--threads 2]
ViT-L at 512x1024 takes tens of seconds per forward, so it runs once (no warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

# (preset, height, width, mask heads that run, timed repeats after a warm-up; 0 = one cold run)
CASES = {
    "tiny": ("tiny", 256, 512, 1, 5),
    "vits": ("vits", 512, 1024, 1, 2),
    "vitl": ("vitl", 512, 1024, 1, 0),
}


def run_case(name: str, threads: int) -> dict:
    """Child process: build, time and measure one model; returns a JSON-able dict."""
    import torch

    from dap_core.model import DAP, DAPConfig
    from dap_core.model.flops import count_flops

    torch.set_num_threads(threads)
    preset, height, width, n_masks, repeats = CASES[name]
    # The released layout (official adapter, one mask head) for ViT sizes; tiny is clean.
    layout = {} if preset == "tiny" else {"adapter": "official", "mask_head_meaning": "beyond"}
    config = DAPConfig.preset(preset, mask_thresholds=(100,), **layout)
    model = DAP(config).eval()
    x = torch.randn(1, 3, height, width)
    rss_model = _rss_mb()
    times = []
    with torch.inference_mode():
        if repeats:
            model(x)
        for _ in range(max(repeats, 1)):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    flops = count_flops(config, height, width, n_mask_heads=n_masks)
    return {
        "name": name,
        "size": f"{height}x{width}",
        "gflop": flops.total / 1e9,
        "seconds": sorted(times)[len(times) // 2],
        "runs": len(times),
        "rss_model_mb": rss_model,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0]
    return f"{cpu}, {os.cpu_count()} cores visible, load average {load:.1f} at start"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,vits,vitl")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.threads)))
        return 0

    import torch

    from dap_core.benchmark import GEMM_N, gemm_gflops

    print(f"machine: {machine()}; torch {torch.__version__}, {args.threads} threads, fp32")
    rate = gemm_gflops(args.threads)
    print(f"fp32 matmul {GEMM_N}^3: {rate:.1f} GFLOP/s (the bound's rate)")
    header = "model  input     GFLOP   time_s    Hz   bound_s  ratio  model_MB  peak_MB"
    print(header)
    for name in args.models.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--child", name, "--threads", str(args.threads)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        bound = r["gflop"] / rate
        print(
            f"{r['name']:6s} {r['size']:9s} {r['gflop']:7.1f} {r['seconds']:8.3f} "
            f"{1 / r['seconds']:5.2f} {bound:8.3f} {r['seconds'] / bound:6.2f} "
            f"{r['rss_model_mb']:9.0f} {r['peak_rss_mb']:8.0f}"
        )
    print(f"matmul rate after the models: {gemm_gflops(args.threads):.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
