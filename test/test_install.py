"""The package installed as a user installs it (`pip install .`, not editable) is complete and runs.

One non-editable install into a scratch prefix (`pip install --no-deps --prefix`, from a clean
copy of the checkout so no stale build/ is reused): the install tree holds what `ros2 launch`
and the node look up (ament index marker, package.xml, launch/, config/, the shipped weights in
share/dap_ros/weights/dap_small/, the launchers in lib/dap_ros), and the installed node starts
with no `weights` parameter, from the shipped weights. colcon lays out the same data_files
(test_packaging.py). The install is shared with test_ros2_cli.py (conftest.py); about 15 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from install_harness import SHIPPED
from ros_harness import domain_id, wait_until


@pytest.fixture(scope="module")
def installed(installed_package):
    return installed_package


@pytest.mark.parametrize(
    "relative",
    [
        "share/ament_index/resource_index/packages/dap_ros",
        "share/dap_ros/package.xml",
        "share/dap_ros/launch/dap.launch.py",
        "share/dap_ros/config/dap.yaml",
        "share/dap_ros/config/fastdds_large_data.xml",
        "share/dap_ros/config/dap.rviz",
        *(f"share/dap_ros/weights/dap_small/{name}" for name in SHIPPED),
        "lib/dap_ros/dap_node",
        "lib/dap_ros/dap_camera_sim",
    ],
)
def test_install_tree_holds(installed, relative):
    path = installed.prefix / relative
    assert path.is_file(), f"missing {path}"
    if relative.startswith("lib/"):
        assert os.access(path, os.X_OK), f"{path} is not executable"


def test_shipped_weights_are_the_checkout_files(installed, repo_root):
    share = installed.prefix / "share" / "dap_ros" / "weights"
    assert sorted(p.name for p in share.iterdir()) == ["dap_small"]  # nothing flattened
    for name in SHIPPED:
        shipped = (repo_root / "weights" / "dap_small" / name).read_bytes()
        assert (share / "dap_small" / name).read_bytes() == shipped, name


def test_installed_node_starts_from_the_shipped_weights(installed, tmp_path):
    env = installed.env(domain_id(__name__))
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import dap_ros, dap_ros.predictors as p; print(p.default_weights())",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    expected = installed.prefix / "share" / "dap_ros" / "weights" / "dap_small"
    assert Path(where.stdout.strip()) == expected
    log_path = tmp_path / "node.log"
    command = [str(installed.prefix / "lib" / "dap_ros" / "dap_node"), "--ros-args"]
    command += ["-p", "backend:=torch", "-p", "threads:=1"]  # no weights parameter
    with open(log_path, "w") as log:
        node = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
        )
        try:
            ready = wait_until(
                lambda: "ready:" in log_path.read_text() or node.poll() is not None, 90, 0.1
            )
        finally:
            if node.poll() is None:
                node.send_signal(2)  # SIGINT: a normal ROS shutdown
                try:
                    node.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.kill()
                    node.wait()
    text = log_path.read_text()
    assert ready and "ready:" in text, text
    assert "Traceback" not in text, text
