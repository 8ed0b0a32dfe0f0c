"""Temporal stabilisation (dap_core.temporal) measured on simulator sequences with exact truth.

Three sequences of one procedural indoor scene (dap_core.data.synthetic), each N frames, run
through the shipped model (weights/dap_small), then through the filter:
  static    camera still; per frame a new sensor-noise seed, Gaussian pixel noise and an
            exposure gain in [0.75, 1.25] (the model sees a different image every frame)
  moving    the scene's camera path at 10 Hz, same noise and exposure changes
  obstacle  static camera; from frame N/2 on a box stands 1.5 m in front of the camera
Figures, raw model vs stabilised, against the same frames' ground truth (finite range):
  jitter    median over frames of the median |Δ log range| between consecutive frames, minus
            the same figure of the ground truth (0 for a static camera)
  AbsRel    mean |r - r_gt| / r_gt over every frame
  obstacle  frames after the box appears until the median range of the box's pixels is
            within 10 % of the raw model's for that frame (0 = the first frame)
Targets: jitter drops by >= 50 % on the static sequence, AbsRel no worse (within 0.002) on
static and moving, the obstacle visible within 1 frame. Exit status 1 when one is missed.

Usage: .venv/bin/python bench/bench_temporal.py [--frames 24] [--height 128] [--seed 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dap_core.temporal import StabilizerConfig, TemporalStabilizer  # noqa: E402

ABSREL_SLACK = 0.002  # "no worse": within this of the raw model (float noise of a mean)


def _camera_frames(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gain = rng.uniform(0.75, 1.25)
    noisy = rgb.astype(np.float32) * gain + rng.normal(0.0, 4.0, rgb.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def sequences(frames: int, height: int, seed: int):
    """name -> (list of rgb, list of true range, obstacle mask or None)."""
    from dap_core.data.raycast import Box
    from dap_core.data.synthetic import make_scene

    scene = make_scene(seed, "indoor")
    rng = np.random.default_rng(seed)
    width = 2 * height
    pos0, yaw0 = scene.trajectory(0.0)
    out = {}
    static = [scene.render(pos0, yaw0, height, width, noise_seed=k) for k in range(frames)]
    out["static"] = (
        [_camera_frames(s.rgb, rng) for s in static],
        [s.range_m for s in static],
        None,
    )
    moving = []
    for k in range(frames):
        pos, yaw = scene.trajectory(k / 10.0)
        moving.append(scene.render(pos, yaw, height, width, noise_seed=k))
    out["moving"] = (
        [_camera_frames(s.rgb, rng) for s in moving],
        [s.range_m for s in moving],
        None,
    )
    forward = np.array([np.cos(yaw0), np.sin(yaw0), 0.0])
    centre = pos0 + 1.5 * forward
    box = Box(
        center=(float(centre[0]), float(centre[1]), float(pos0[2])),
        half=(0.25, 0.25, 0.4),
        yaw=0.0,
        material=0,
    )
    with_box = dataclasses.replace(scene, primitives=(*scene.primitives, box))
    half = frames // 2
    shots = [
        (with_box if k >= half else scene).render(pos0, yaw0, height, width, noise_seed=k)
        for k in range(frames)
    ]
    box_pixels = shots[half].range_m < static[0].range_m * 0.8
    out["obstacle"] = (
        [_camera_frames(s.rgb, rng) for s in shots],
        [s.range_m for s in shots],
        (half, box_pixels),
    )
    return out


def jitter(ranges: list[np.ndarray], truth: list[np.ndarray]) -> float:
    def figure(seq):
        steps = []
        for a, b in itertools.pairwise(seq):
            ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
            steps.append(np.median(np.abs(np.log(b[ok]) - np.log(a[ok]))))
        return float(np.median(steps))

    return figure(ranges) - figure(truth)


def absrel(ranges: list[np.ndarray], truth: list[np.ndarray]) -> float:
    errors = []
    for r, t in zip(ranges, truth, strict=True):
        ok = np.isfinite(t) & np.isfinite(r)
        errors.append(np.abs(r[ok] - t[ok]) / t[ok])
    return float(np.mean(np.concatenate(errors)))


def stabilised(ranges: list[np.ndarray], config: StabilizerConfig) -> list[np.ndarray]:
    stabilizer = TemporalStabilizer(config)
    return [stabilizer(r) for r in ranges]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--weights", default=str(REPO / "weights" / "dap_small"))
    args = parser.parse_args()
    from dap_core.runtime import Predictor

    predictor = Predictor(args.weights, backend="torch", threads=2)
    config = StabilizerConfig()
    ok = True
    print(f"{args.frames} frames {2 * args.height}x{args.height}, {predictor.describe()}")
    print(f"filter {config}")
    for name, (rgbs, truth, obstacle) in sequences(args.frames, args.height, args.seed).items():
        raw = [predictor.predict(rgb).range_m.copy() for rgb in rgbs]
        filt = stabilised(raw, config)
        if obstacle is None:
            j_raw, j_filt = jitter(raw, truth), jitter(filt, truth)
            a_raw, a_filt = absrel(raw, truth), absrel(filt, truth)
            drop = 1.0 - j_filt / j_raw if j_raw > 0 else float("nan")
            print(
                f"{name:8s} jitter raw {j_raw:.4f} stabilised {j_filt:.4f} (drop {drop:.0%}); "
                f"AbsRel raw {a_raw:.4f} stabilised {a_filt:.4f}"
            )
            ok &= a_filt <= a_raw + ABSREL_SLACK
            if name == "static":
                ok &= drop >= 0.5
        else:
            first, pixels = obstacle
            lag = None
            for k in range(first, len(raw)):
                seen = np.median(filt[k][pixels])
                if abs(seen / np.median(raw[k][pixels]) - 1.0) <= 0.1:
                    lag = k - first
                    break
            box_raw = np.median(raw[first][pixels])
            box_true = np.median(truth[first][pixels])
            print(
                f"obstacle ({int(pixels.sum())} px, true {box_true:.2f} m, model {box_raw:.2f}"
                f" m): stabilised output within 10 % of the model after {lag} frame(s)"
            )
            ok &= lag is not None and lag <= 1
    print("targets met" if ok else "a target was missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
