"""Dual-fisheye -> ERP remap cost per frame, as a ratio to a bare cv2.remap of the same size.

Builds the maps of a shipped calibration once (config/fisheye/insta360_side_by_side.yaml,
scaled to a 1920x960 side-by-side frame; or x5_two_topics.yaml at 960x960 per lens with
--layout two_images), then times FisheyeRemapper.remap (one remap of the whole 1024x512
panorama, a second remap of the rectangles holding the cross-fade band, packed in a small
canvas, the fixed-point fade there; for two images also the copy that places them side by
side) against one cv2.remap of the same source to the same output size with the same
fixed-point maps and bilinear interpolation: the peer, measured in the same run, alternating,
median of --rounds (and, less sensitive to other jobs on the machine, the best round of
each). Ratio = remap ms / bare remap ms (the overhead of the seam blend; 1.0 would be free).
Target: ratio <= 1.5.

Usage: .venv/bin/python bench/bench_fisheye.py [--rounds 7] [--frames 20] [--layout side_by_side]
       [--threads N]   (OpenCV threads for both; 0 = OpenCV's default)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model_cpu import machine  # the CPU model, cores and load, named alike

from dap_core.fisheye import FisheyeRemapper, load_calibration

CONFIG = Path(__file__).resolve().parents[1] / "config" / "fisheye"
LAYOUTS = {
    "side_by_side": (CONFIG / "insta360_side_by_side.yaml", (1920, 960)),
    "two_images": (CONFIG / "x5_two_topics.yaml", (960, 960)),
}


def _ms(run, frames: int) -> float:
    start = time.perf_counter()
    for _ in range(frames):
        run()
    return (time.perf_counter() - start) / frames * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--layout", choices=tuple(LAYOUTS), default="side_by_side")
    parser.add_argument("--out-height", type=int, default=512)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        cv2.setNumThreads(args.threads)
    path, size = LAYOUTS[args.layout]
    calibration = load_calibration(path).for_image(*size)
    remapper = FisheyeRemapper(calibration, args.out_height, 2 * args.out_height)
    rng = np.random.default_rng(0)
    lens_w, lens_h = calibration.lens_size
    count = 1 if calibration.layout == "side_by_side" else 2
    width = 2 * lens_w if count == 1 else lens_w
    images = [rng.integers(0, 256, (lens_h, width, 3), np.uint8) for _ in range(count)]
    source = np.concatenate(images, axis=1) if count == 2 else images[0]
    out = np.empty((args.out_height, 2 * args.out_height, 3), np.uint8)
    peer_out = np.empty_like(out)
    map1, map2 = remapper.primary_maps  # the same access pattern as the real remap

    def ours():
        remapper.remap(*images, out=out)

    def bare():
        cv2.remap(source, map1, map2, cv2.INTER_LINEAR, dst=peer_out)

    ours(), bare()  # warm
    mine, peer = [], []
    for _ in range(args.rounds):
        mine.append(_ms(ours, args.frames))
        peer.append(_ms(bare, args.frames))
    m, p = statistics.median(mine), statistics.median(peer)
    best = min(mine) / min(peer)
    print(
        f"machine: {machine()}; OpenCV {cv2.__version__},"
        f" {cv2.getNumThreads()} threads (noisy when other jobs share the CPU)"
    )
    print(
        f"{args.layout} {size[0]}x{size[1]} -> {2 * args.out_height}x{args.out_height}:"
        f" remap {m:.2f} ms/frame, bare cv2.remap {p:.2f} ms, ratio {m / p:.2f}"
        f" (best rounds {best:.2f}; cross-fade over"
        f" {remapper.overlap.size / out.shape[0] / out.shape[1]:.1%} of the pixels)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
