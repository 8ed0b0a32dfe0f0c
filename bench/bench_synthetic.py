"""Synthetic panorama generation speed on one core, as a ratio to the 20 samples/s bound.

Renders `generate_panorama(seed)` for consecutive seeds (indoor and outdoor mixed, as the
training Dataset draws them) in both appearance domains at 256x512 and 512x1024, with numpy,
OpenCV and torch limited to one thread. Reports samples/s from wall time and from process
CPU time (the latter is robust to other jobs sharing the machine), each the median of
--rounds rounds that alternate the domains (so load changes hit both alike), and ratio =
CPU samples/s / 20 (>= 1 meets the target; the target applies at 256x512).

Usage: .venv/bin/python bench/bench_synthetic.py [--n 24] [--rounds 3]
                                                  [--sizes 256x512,512x1024]
"""

from __future__ import annotations

import os

# Before numpy / torch load: one thread everywhere, so the number is per core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_SAMPLES_PER_S = 20.0


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} CPUs visible, load average {load:.1f}"


def bench(height: int, width: int, domain: str, n: int) -> tuple[float, float]:
    """(samples/s by wall clock, samples/s by process CPU time) over n seeds."""
    from dap_core.data.synthetic import generate_panorama

    wall, cpu = time.perf_counter(), time.process_time()
    for seed in range(n):
        generate_panorama(seed, height, width, domain=domain)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return n / wall, n / cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24, help="panoramas per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case (median)")
    parser.add_argument("--sizes", default="256x512,512x1024")
    args = parser.parse_args()

    import cv2
    import torch

    from dap_core.data.synthetic import generate_panorama

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    print(f"machine: {machine()}; threads: 1 (numpy, OpenCV, torch)")
    print(f"{'size':>9s} {'domain':>9s} {'wall/s':>8s} {'cpu/s':>8s} {'ratio(cpu)':>10s}")
    domains = ("sim", "real_like")
    for size in args.sizes.split(","):
        h, w = (int(x) for x in size.split("x"))
        n = args.n if h <= 256 else max(4, args.n // 4)
        for domain in domains:  # warm caches (rays, noise tiles, imports)
            generate_panorama(10_000, h, w, domain=domain)
        rates: dict[str, list[tuple[float, float]]] = {d: [] for d in domains}
        for _ in range(max(1, args.rounds)):
            for domain in domains:
                rates[domain].append(bench(h, w, domain, n))
        for domain in domains:
            wall_rate = statistics.median(r[0] for r in rates[domain])
            cpu_rate = statistics.median(r[1] for r in rates[domain])
            ratio = cpu_rate / TARGET_SAMPLES_PER_S
            print(f"{size:>9s} {domain:>9s} {wall_rate:8.1f} {cpu_rate:8.1f} {ratio:10.2f}")
    print(f"ratio = samples/s per core / {TARGET_SAMPLES_PER_S:.0f} (target >= 1 at 256x512)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
