"""The package builds with colcon as an ament_python package with a complete install tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "build", "install", "log", "demo_out", "runs", "__pycache__", "*.egg-info"
)


@pytest.fixture(scope="module")
def colcon_workspace(repo_root, tmp_path_factory) -> Path:
    colcon = Path(sys.executable).with_name("colcon")
    if not colcon.exists():
        pytest.fail("colcon is not installed in the test environment (pip install colcon-core)")
    ws = tmp_path_factory.mktemp("ws")
    shutil.copytree(repo_root, ws / "src" / "dap_ros", ignore=COPY_IGNORE)
    env = dict(os.environ, AMENT_PREFIX_PATH=os.environ.get("AMENT_PREFIX_PATH", sys.prefix))
    listing = subprocess.run(
        [str(colcon), "list"], cwd=ws, env=env, capture_output=True, text=True, check=True
    )
    build = subprocess.run(
        # As the README says to build it (needs the colcon-package-selection plugin).
        [
            str(colcon),
            "build",
            "--packages-select",
            "dap_ros",
            "--event-handlers",
            "console_direct-",
        ],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return ws, listing.stdout


def test_colcon_sees_an_ament_python_package(colcon_workspace):
    _, listing = colcon_workspace
    name, _path, build_type = listing.split()[:3]
    assert name == "dap_ros"
    assert build_type == "(ros.ament_python)", listing


@pytest.mark.parametrize(
    "relative",
    [
        "share/dap_ros/package.xml",
        "share/dap_ros/launch/dap.launch.py",
        "share/dap_ros/config/dap.yaml",
        "share/dap_ros/weights/dap_small/config.json",
        "share/dap_ros/weights/dap_small/model.safetensors",
        "share/ament_index/resource_index/packages/dap_ros",
        "lib/dap_ros/dap_node",
        "lib/dap_ros/dap_lifecycle_node",
        "share/dap_ros/config/fisheye/insta360_side_by_side.yaml",
    ],
)
def test_install_tree_holds(colcon_workspace, relative):
    ws, _ = colcon_workspace
    path = ws / "install" / "dap_ros" / relative
    assert path.is_file(), f"missing {path}"
    if relative.startswith("lib/"):
        assert os.access(path, os.X_OK)
