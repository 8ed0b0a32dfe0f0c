"""`make demo`: a simulated 360° camera, the DAP node and a live monitor, all headless.

Starts the synthetic camera node and the DAP node as separate processes (as on a robot), watches
every output from a monitor node in this process, prints a live table (rates, latency, accuracy
against the simulator's ground truth, points per cloud) and writes `demo_out/`: side-by-side
pictures (RGB | predicted range | ground truth | mask), a PLY point cloud and a summary JSON.
Exits 0 when every output topic published and accuracy was measured.

    python -m dap_ros.demo --duration 20 --rate 5 --size 256x512
    python -m dap_ros.demo rviz:=true          # also opens RViz with config/dap.rviz
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = PACKAGE_ROOT / "weights" / "dap_small"
CONFIG_DIR = PACKAGE_ROOT / "config"
# Model load + first inference on a busy 2-core machine; the first start with backend "auto"
# also exports the model to ONNX and times torch against onnxruntime (cached afterwards).
STARTUP_GRACE_S = 180.0
TABLE_PERIOD_S = 2.0


def parse_size(text: str) -> tuple[int, int]:
    """'256x512' -> (256, 512); argparse shows the reason when the size is not 2:1."""
    from dap_core.commands.common import parse_panorama_size

    try:
        return parse_panorama_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dap-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds to run (default 30)")
    parser.add_argument("--rate", type=float, default=5.0, help="camera frames per second")
    parser.add_argument("--size", type=parse_size, default=(256, 512), help="camera HxW")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--backend", default="auto", help="auto | torch | onnxruntime | tensorrt")
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--seed", type=int, default=0, help="scene seed of the simulator")
    parser.add_argument(
        "--scene",
        default="tour",
        choices=("tour", "indoor", "outdoor"),
        help="tour = indoor and outdoor scenes in turn (default)",
    )
    parser.add_argument(
        "--precompute",
        type=int,
        default=40,
        help="frames the simulator renders up front and replays (0 = render live; live "
        "rendering competes with the model for the CPU)",
    )
    parser.add_argument("--rviz", action="store_true", help="open RViz (needs rviz2 and a display)")
    return parser


def normalize_launch_style(argv: Sequence[str]) -> list[str]:
    """Accept `name:=value` (as with ros2 launch) beside `--name value`."""
    out: list[str] = []
    for arg in argv:
        if ":=" in arg and not arg.startswith("-"):
            name, value = arg.split(":=", 1)
            if name == "rviz":
                if value.lower() in {"true", "1", "yes"}:
                    out.append("--rviz")
                continue
            out += [f"--{name}", value]
        else:
            out.append(arg)
    return out


def ros_environment() -> dict[str, str]:
    """Environment for the child nodes: the large-message DDS profile and the ament index."""
    env = dict(os.environ)
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(CONFIG_DIR / "fastdds_large_data.xml")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_processes(args: argparse.Namespace, log_dir: Path) -> list[subprocess.Popen]:
    """Start the simulated camera, the DAP node and (optionally) RViz."""
    width = args.size[1]
    env = ros_environment()
    commands = {
        "camera_sim": [
            sys.executable, "-m", "dap_ros.camera_sim", "--ros-args",
            "-p", f"rate_hz:={float(args.rate)}", "-p", f"width:={width}",
            "-p", f"seed:={args.seed}", "-p", f"scene:={args.scene}",
            "-p", f"precompute_frames:={args.precompute}", "-p", "publish_ground_truth:=true",
        ],
        "dap_node": [
            sys.executable, "-m", "dap_ros.node", "--ros-args",
            "--params-file", str(CONFIG_DIR / "dap.yaml"),
            "-p", f"weights:={args.weights}", "-p", f"backend:={args.backend}",
        ],
    }  # fmt: skip
    if args.rviz:
        rviz = shutil.which("rviz2")
        if rviz is None or not os.environ.get("DISPLAY"):
            print("rviz:=true needs rviz2 on PATH and a DISPLAY; continuing headless")
        else:
            commands["rviz"] = [rviz, "-d", str(CONFIG_DIR / "dap.rviz")]
    processes = []
    for name, command in commands.items():
        log = (log_dir / f"{name}.log").open("w")
        processes.append(
            subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=PACKAGE_ROOT
            )
        )
    return processes


def stop_processes(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10.0
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_row(elapsed: float, snap: dict) -> str:
    return (
        f"{elapsed:6.1f}s | in {snap['input_hz']:5.1f} Hz | out {snap['output_hz']:5.1f} Hz | "
        f"latency p50 {_fmt(snap['latency_p50_ms'], '6.0f')} ms p95 "
        f"{_fmt(snap['latency_p95_ms'], '6.0f')} ms | AbsRel {_fmt(snap['abs_rel'], '.3f')} "
        f"δ1 {_fmt(snap['delta1'], '.3f')} | points/cloud {_fmt(snap['points_per_cloud'], 'd')}"
    )


def display_range(ground_truth_m: np.ndarray, max_range_m: float) -> float:
    """A round colour-scale end that fits the scene: rooms in metres, streets in tens."""
    finite = ground_truth_m[np.isfinite(ground_truth_m)]
    if finite.size == 0:
        return max_range_m
    far = float(np.percentile(finite, 95))
    step = 5.0 if far < 30 else 25.0
    return float(min(max_range_m, step * np.ceil(far / step)))


def write_outputs(out_dir: Path, frames: dict, snap: dict, max_range_m: float) -> list[str]:
    """Picture (RGB | predicted range / ground truth | mask), PLY, summary JSON."""
    import cv2

    from dap_core.io import save_ply
    from dap_core.visualize import add_colorbar, colorize_range, side_by_side

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    rgb, depth, gt = frames.get("rgb"), frames.get("depth"), frames.get("ground_truth")
    if rgb is not None and depth is not None and gt is not None:
        scale_m = display_range(gt, max_range_m)
        mask = frames.get("mask")
        if mask is None:
            mask = np.zeros(depth.shape, np.uint8)
        # Two rows, read left to right: RGB | predicted range, then ground truth | range mask.
        top = side_by_side([rgb, colorize_range(depth, scale_m)])
        bottom = side_by_side([colorize_range(gt, scale_m), mask])
        panel = add_colorbar(np.concatenate([top, bottom], axis=0), scale_m)
        path = out_dir / "side_by_side.png"
        cv2.imwrite(str(path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        written.append(path.name)
        snap["ply_points"] = save_ply(out_dir / "cloud.ply", depth, rgb)
        written.append("cloud.ply")
    (out_dir / "summary.json").write_text(json.dumps(snap, indent=2, default=float) + "\n")
    written.append("summary.json")
    return written


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from dap_ros.demo_monitor import DAP_OUTPUTS, DemoMonitor

    if not (args.weights / "model.safetensors").is_file() and not args.weights.is_file():
        print(f"demo: no weights at {args.weights} (expected model.safetensors + config.json)")
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = args.out / "logs"
    log_dir.mkdir(exist_ok=True)
    height, width = args.size
    print(
        f"DAP demo: simulated {height}x{width} camera at {args.rate:g} Hz for {args.duration:g} s"
    )
    print(f"  weights {args.weights}; node logs in {log_dir}")
    if args.backend == "auto":
        print("  (first start: the model is exported to ONNX and timed on each CPU backend)")

    rclpy.init(args=["dap_demo"])
    monitor = DemoMonitor()
    executor = SingleThreadedExecutor()
    executor.add_node(monitor)
    processes = start_processes(args, log_dir)
    try:
        start = time.monotonic()
        first_output = None
        next_row = start + TABLE_PERIOD_S
        while True:
            executor.spin_once(timeout_sec=0.05)
            now = time.monotonic()
            for process in processes:
                if process.poll() is not None:
                    print(f"demo: a node exited early (status {process.returncode}); see {log_dir}")
                    return 1
            if first_output is None and monitor.stats["depth/image"].count > 0:
                first_output = now
                print(f"first depth image after {now - start:.1f} s")
            if now >= next_row:
                # The full snapshot (percentiles, rates) only when a row is printed.
                print(format_row(now - start, monitor.snapshot()), flush=True)
                next_row = now + TABLE_PERIOD_S
            if first_output is None and now - start > STARTUP_GRACE_S:
                print(f"demo: no depth image within {STARTUP_GRACE_S:.0f} s; see {log_dir}")
                return 1
            if first_output is not None and now - first_output >= args.duration:
                break
    finally:
        stop_processes(processes)
        snap = monitor.snapshot()
        frames = monitor.latest_frames()
        executor.shutdown()
        monitor.destroy_node()
        rclpy.try_shutdown()

    snap["duration_s"] = args.duration
    snap["size"] = [height, width]
    written = write_outputs(args.out, frames, snap, monitor.max_range_m)
    silent = [t for t in DAP_OUTPUTS if snap["messages"][t] == 0]
    print(
        f"accuracy over {snap['frames_scored']} frames: AbsRel {_fmt(snap['abs_rel'], '.3f')}, "
        f"δ1 {_fmt(snap['delta1'], '.3f')}, coverage {_fmt(snap['coverage'], '.3f')}"
    )
    print(f"backend {snap['backend'] or 'unknown'}; wrote {', '.join(written)} to {args.out}/")
    if silent or snap["frames_scored"] == 0:
        print(f"demo: FAILED — silent topics: {silent or 'none'}; scored {snap['frames_scored']}")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(normalize_launch_style(sys.argv[1:] if argv is None else argv))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
