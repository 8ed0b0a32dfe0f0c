"""`make demo` in a short mode: simulated camera -> DAP node (shipped weights) -> monitor.

Runs the real demo entry point in a subprocess, as a user would, and checks that every output
topic published, that accuracy against the simulator's ground truth was measured and printed,
and that demo_out/ holds the picture, the point cloud and a consistent summary.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from ros_harness import domain_id, ros_env

from dap_ros.demo import DEFAULT_WEIGHTS, normalize_launch_style, parse_size
from dap_ros.demo_monitor import DAP_OUTPUTS

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ACCURACY_LINE = re.compile(r"accuracy over (\d+) frames: AbsRel ([0-9.]+), δ1 ([0-9.]+)")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo") / "demo_out"
    command = [
        sys.executable, "-m", "dap_ros.demo",
        "--duration", "6", "--rate", "4", "--size", "128x256", "--precompute", "12",
        "--backend", "torch", "--out", str(out_dir),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        env=ros_env(domain_id(__name__)),
        capture_output=True,
        text=True,
        timeout=240,
    )
    return result, out_dir


def test_demo_exits_zero_and_prints_accuracy(demo_run):
    result, out_dir = demo_run
    logs = "\n".join(p.read_text() for p in (out_dir / "logs").glob("*.log"))
    assert result.returncode == 0, result.stdout + result.stderr + logs
    match = ACCURACY_LINE.search(result.stdout)
    assert match, result.stdout
    frames, abs_rel, delta1 = int(match[1]), float(match[2]), float(match[3])
    assert frames >= 1
    # Scored against the simulator's ground truth: finite, and δ1 a fraction. The shipped
    # model's quality itself is measured by training/evaluate_shipped.py (weights/dap_small).
    assert 0.0 < abs_rel < 100.0, result.stdout
    assert 0.0 <= delta1 <= 1.0, result.stdout
    assert "δ1" in result.stdout and "AbsRel" in result.stdout


def test_every_topic_published_and_outputs_written(demo_run):
    _, out_dir = demo_run
    summary = json.loads((out_dir / "summary.json").read_text())
    for topic in ("image", "ground_truth/depth", *DAP_OUTPUTS):
        assert summary["messages"][topic] > 0, (topic, summary)
    assert summary["points_per_cloud"] > 0
    assert summary["ply_points"] > 0
    assert (out_dir / "side_by_side.png").stat().st_size > 0
    assert (out_dir / "cloud.ply").read_bytes().startswith(b"ply\n")
    assert summary["backend"] == "torch"


def test_demo_arguments():
    assert normalize_launch_style(["rviz:=true", "duration:=3"]) == ["--rviz", "--duration", "3"]
    assert normalize_launch_style(["rviz:=false"]) == []
    assert parse_size("256x512") == (256, 512)
    with pytest.raises(Exception, match="2:1"):
        parse_size("256x256")
    assert (DEFAULT_WEIGHTS / "config.json").is_file(), "shipped weights missing"
