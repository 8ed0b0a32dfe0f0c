"""`dap distill` end to end: the shipped model as teacher, a smaller student, measured against it.

1. Panoramas: N "robot" frames from the simulator (dap_core.data.synthetic, real_like domain,
   camera size 256x512, seeds 600000+: neither the shipped model's training seeds, 0+ and
   500000+, nor the held-out ones) written as PNG, and M held-out frames with exact ground
   truth (seeds 900000+, the project's evaluation offset), kept in memory.
2. `dap distill --config training/distill/shared.yaml --teacher weights/dap_small --images ...`
   --init-from-teacher as a subprocess (the real command; --resume and a label cache in the
   work folder, so a rerun reuses the labels and, for the same config, the student).
3. On the held-out frames, both models through the runtime (`Predictor`, torch backend, camera
   frame 256x512 in, range and 100 m mask out):
     student vs teacher  AbsRel over the teacher's within-100 m pixels, 100 m mask IoU
     both vs truth       AbsRel (truth <= 100 m), 100 m mask IoU
   and the time per 256x512 frame end to end (CPU: the process's CPU seconds, all threads;
   wall: latency) of teacher and student called alternately in the same run, for each
   backend of --backends (torch, and onnxruntime, which the node's "auto" picks on a CPU) and
   each thread count of --threads (warm-up, median of --repeats): load drift on a shared
   machine hits both alike, and CPU time does not count the time another job holds the core.
Targets (issue 22): student AbsRel vs teacher < 0.05; student / teacher CPU time <= 0.5.
Exit status 1 when one is missed (the time ratio at any backend and thread count).

Usage: .venv/bin/python bench/bench_distill.py [--train 4000] [--held-out 48] [--repeats 30]
       [--work runs/bench_distill] [--config training/distill/shared.yaml] [--threads 1,2]
       [--backends torch,onnxruntime]
Takes about an hour on 2 cores (frames 3, labels 4, training 45, measuring 5); a rerun
with the same --work reuses the frames and labels (and the student of an unchanged config).
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dap_core.benchmark import machine_summary  # noqa: E402
from dap_core.commands.eval import SYNTHETIC_EVAL_SEED_OFFSET  # noqa: E402
from dap_core.distill import teacher_agreement  # noqa: E402

TEACHER = REPO / "weights" / "dap_small"
CONFIG = REPO / "training" / "distill" / "shared.yaml"
CAMERA_HW = (256, 512)  # the issue states the CPU time at this camera size
TRAIN_SEED_OFFSET = 600_000  # unseen by the teacher's training (0+ sim, 500000+ real_like)
DOMAIN = "real_like"
MASK_M = 100
ABSREL_TARGET = 0.05  # student vs teacher, held-out frames
TIME_RATIO_TARGET = 0.5  # student / teacher CPU time per frame


def write_frames(folder: Path, count: int) -> float:
    """Training panoramas as PNG (only those missing); returns the seconds spent."""
    import cv2

    from dap_core.data.synthetic import generate_panorama
    from dap_core.files import atomic_write_bytes

    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"{TRAIN_SEED_OFFSET + i:07d}.png"
        if path.is_file():
            continue
        sample = generate_panorama(TRAIN_SEED_OFFSET + i, *CAMERA_HW, domain=DOMAIN)
        ok, png = cv2.imencode(".png", cv2.cvtColor(sample.rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise SystemExit(f"could not encode {path}")
        atomic_write_bytes(path, png.tobytes())
    return time.perf_counter() - started


def distill(config: Path, teacher: Path, frames: Path, out: Path, labels: Path, log: Path) -> float:
    """Run `dap distill` (resumable); returns its wall time in seconds."""
    command = [sys.executable, "-m", "dap_core.cli", "distill", "--config", str(config)]
    command += ["--teacher", str(teacher), "--images", str(frames), "--resume"]
    command += ["--init-from-teacher", "--cache-dir", str(labels)]
    command += ["--set", f"output_dir={out}"]
    started = time.perf_counter()
    with open(log, "a") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"dap distill failed (exit {done.returncode}, log {log}): {tail[0]}")
    return time.perf_counter() - started


def held_out(count: int) -> list:
    from dap_core.data.synthetic import generate_panorama

    return [
        generate_panorama(SYNTHETIC_EVAL_SEED_OFFSET + i, *CAMERA_HW, domain=DOMAIN)
        for i in range(count)
    ]


def accuracy(student, teacher, samples) -> dict[str, float]:
    """Per-frame means: student vs teacher, and each model vs the simulator's truth."""
    from dap_core.metrics import depth_metrics, mask_metrics

    rows: dict[str, list[float]] = {}

    def add(name: str, value) -> None:
        if value is not None:
            rows.setdefault(name, []).append(float(value))

    for sample in samples:
        s, t = student.predict(sample.rgb), teacher.predict(sample.rgb)
        agree = teacher_agreement(s, t, MASK_M)
        add("absrel_vs_teacher", agree["abs_rel"])
        add("iou_vs_teacher", agree["mask_iou"])
        for name, pred in (("student", s), ("teacher", t)):
            depth = depth_metrics(pred.range_m, sample.range_m, max_range_m=MASK_M)
            if depth["n_pixels"]:
                add(f"{name}_absrel_gt", depth["abs_rel"])
            mask = mask_metrics(pred.masks[MASK_M], sample.range_m, threshold_m=MASK_M)
            add(f"{name}_iou_gt", mask["iou"] if mask["n_pixels"] else None)
    return {name: float(np.mean(values)) for name, values in rows.items()}


def frame_times(predictors: dict, rgb: np.ndarray, repeats: int, warmup: int = 3) -> dict:
    """Median CPU and wall milliseconds of `predict(rgb)` per predictor, calls alternating.

    CPU time is the process's (all its threads, time.process_time): a call that the scheduler
    pauses for another job's sake costs wall time but no CPU time, so on a shared machine the
    CPU figure is the model's cost and the wall figure the latency seen.
    """
    for predictor in predictors.values():
        for _ in range(warmup):
            predictor.predict(rgb)
    samples: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "wall": []} for k in predictors}
    for _ in range(repeats):
        for name, predictor in predictors.items():
            cpu, wall = time.process_time(), time.perf_counter()
            predictor.predict(rgb)
            samples[name]["cpu"].append((time.process_time() - cpu) * 1e3)
            samples[name]["wall"].append((time.perf_counter() - wall) * 1e3)
    return {
        name: {clock: float(np.median(values)) for clock, values in clocks.items()}
        for name, clocks in samples.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=4000, help="training panoramas")
    parser.add_argument("--held-out", type=int, default=48, help="held-out panoramas")
    parser.add_argument("--repeats", type=int, default=30, help="timed frames per model")
    parser.add_argument("--threads", default="1,2", help="thread counts to time, e.g. 1,2")
    parser.add_argument("--backends", default="torch,onnxruntime", help="runtime backends")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_distill")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--teacher", type=Path, default=TEACHER)
    args = parser.parse_args()
    for name in ("train", "held_out", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        threads = [int(n) for n in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    if min(threads) < 1:
        parser.error(f"--threads must be at least 1, got {args.threads!r}")
    backends = args.backends.split(",")
    unknown = sorted(set(backends) - {"torch", "onnxruntime"})
    if unknown:
        parser.error(f"--backends: {unknown} are not CPU backends (torch, onnxruntime)")

    import torch

    from dap_core.runtime import Predictor

    torch.set_num_threads(threads[0])
    print(machine_summary(threads[0]))
    work = args.work.resolve()
    student_dir = work / f"student_{args.config.stem}"
    frames, labels = work / "frames", work / "labels"
    seconds = write_frames(frames, args.train)
    print(
        f"frames: {args.train} {DOMAIN} panoramas {CAMERA_HW[0]}x{CAMERA_HW[1]} in {frames} "
        f"(seeds {TRAIN_SEED_OFFSET}+, {seconds:.0f} s)"
    )
    log = student_dir.with_suffix(".log")
    seconds = distill(args.config, args.teacher, frames, student_dir, labels, log)
    print(f"dap distill: {seconds:.0f} s (log {log})")

    def load(weights: Path, n: int, backend: str = "torch") -> Predictor:
        return Predictor(weights, backend=backend, threads=n, warmup=False)

    teacher, student = load(args.teacher, threads[0]), load(student_dir / "model", threads[0])
    samples = held_out(args.held_out)
    scores = accuracy(student, teacher, samples)
    print(
        f"held-out: {args.held_out} {DOMAIN} panoramas, seeds {SYNTHETIC_EVAL_SEED_OFFSET}+, "
        f"{CAMERA_HW[0]}x{CAMERA_HW[1]} through the runtime (model input "
        f"{teacher.input_size[0]}x{teacher.input_size[1]} teacher, "
        f"{student.input_size[0]}x{student.input_size[1]} student)"
    )
    print(
        f"  student vs teacher: AbsRel {scores['absrel_vs_teacher']:.4f}, "
        f"{MASK_M} m mask IoU {scores['iou_vs_teacher']:.4f}"
    )
    for name in ("teacher", "student"):
        print(
            f"  {name} vs truth:    AbsRel {scores[f'{name}_absrel_gt']:.4f}, "
            f"{MASK_M} m mask IoU {scores[f'{name}_iou_gt']:.4f}"
        )

    checks = [
        (
            "AbsRel student vs teacher",
            scores["absrel_vs_teacher"],
            "<",
            ABSREL_TARGET,
            scores["absrel_vs_teacher"] < ABSREL_TARGET,
        ),
    ]
    rgb = samples[0].rgb
    for backend, n in itertools.product(backends, threads):
        pair = {
            "teacher": load(args.teacher, n, backend),
            "student": load(student_dir / "model", n, backend),
        }
        times = frame_times(pair, rgb, args.repeats)
        print(
            f"time per {CAMERA_HW[0]}x{CAMERA_HW[1]} frame end to end, {backend}, {n} thread(s), "
            f"alternating, median of {args.repeats}; load average {os.getloadavg()[0]:.1f}:"
        )
        ratio = {}
        for clock in ("cpu", "wall"):
            t, s = times["teacher"][clock], times["student"][clock]
            ratio[clock] = s / t
            print(
                f"  {clock:4s} teacher {t:7.1f} ms  student {s:7.1f} ms  "
                f"student / teacher {ratio[clock]:.3f}"
            )
        ok = ratio["cpu"] <= TIME_RATIO_TARGET
        name = f"CPU time student / teacher, {backend}, {n} thread(s)"
        checks.append((name, ratio["cpu"], "<=", TIME_RATIO_TARGET, ok))
    for name, value, op, bound, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name} {value:.3f} {op} {bound}")
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
