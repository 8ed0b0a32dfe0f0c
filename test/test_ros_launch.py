"""launch/dap.launch.py and config/dap.rviz.

The launch file needs launch_ros, which a full ROS 2 install has and the PyPI wheels do not;
`make setup` installs it from ../shared/ros2_cli when that exists, and these tests skip without
it. test_ros2_cli.py runs the real `ros2 launch` against the installed package.
"""

from __future__ import annotations

import ast
import importlib.util

import pytest
import yaml
from install_harness import ros2_cli_missing

pytestmark = pytest.mark.ros

EXPECTED_ARGUMENTS = {
    "params_file",
    "weights",
    "backend",
    "image",
    "compressed",
    "namespace",
    "sim",
    "rviz",
    "managed",
    "autostart",
    "fisheye",
    "lens0",
    "lens1",
}
NODE_TOPICS = {"/points", "/scan", "/depth/colored", "/range_mask/image"}


def test_launch_file_is_valid_python(repo_root):
    source = (repo_root / "launch" / "dap.launch.py").read_text()
    compile(source, "dap.launch.py", "exec")  # raises SyntaxError when broken
    assert "generate_launch_description" in source


def test_launch_arguments_table_without_launch_ros(repo_root):
    """The ARGUMENTS table is plain data: check it even where launch_ros is missing."""
    tree = ast.parse((repo_root / "launch" / "dap.launch.py").read_text())
    table = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and node.targets[0].id == "ARGUMENTS"
    )
    names = {ast.literal_eval(entry)[0] for entry in table.elts}
    assert names == EXPECTED_ARGUMENTS


@pytest.fixture
def launch_module(repo_root, monkeypatch):
    missing = ros2_cli_missing()
    if missing:
        pytest.skip(missing)
    spec = importlib.util.spec_from_file_location(
        "dap_launch", repo_root / "launch" / "dap.launch.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Resolve the package share directory to the checkout, installed or not.
    monkeypatch.setattr(module, "get_package_share_directory", lambda _: str(repo_root))
    return module


def _context(module, **arguments):
    from launch import LaunchContext

    context = LaunchContext()
    values = {name: default for name, default, _ in module.ARGUMENTS}
    values.update(arguments)
    for name, value in values.items():
        context.launch_configurations[name] = value
    return context


def test_launch_declares_the_documented_arguments(launch_module):
    from launch.actions import DeclareLaunchArgument

    description = launch_module.generate_launch_description()
    declared = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert declared == EXPECTED_ARGUMENTS


def test_launch_starts_the_node_the_camera_and_rviz(launch_module):
    actions = launch_module._actions(_context(launch_module, weights="/w", compressed="true"))
    executables = [action.node_executable for action in actions]
    assert executables == ["dap_node", "dap_camera_sim", "rviz2"]


def test_launch_managed_starts_the_lifecycle_node_with_autostart(launch_module):
    actions = launch_module._actions(_context(launch_module, managed="true", autostart="true"))
    node = actions[0]
    assert node.node_executable == "dap_lifecycle_node"
    overrides = {
        "".join(part.text for part in key): value
        for entry in node._Node__parameters  # launch_ros keeps them normalised, name mangled
        if isinstance(entry, dict)
        for key, value in entry.items()
    }
    assert overrides["autostart"] is True
    plain = launch_module._actions(_context(launch_module))[0]
    assert plain.node_executable == "dap_node"


def _text(value) -> str:
    """A launch_ros parameter or remapping value (substitutions) as the node will read it."""
    if isinstance(value, str):
        return value
    return yaml.safe_load("".join(part.text for part in value))  # launch_ros writes YAML


def _overrides(node) -> dict:
    return {
        "".join(part.text for part in key): value
        for entry in node._Node__parameters  # launch_ros keeps them normalised, name mangled
        if isinstance(entry, dict)
        for key, value in entry.items()
    }


def test_launch_fisheye_names_a_shipped_calibration_for_the_node_and_the_camera(
    launch_module, repo_root
):
    context = _context(launch_module, fisheye="x5_two_topics", lens0="/x5/lens0", sim="true")
    node, camera, _ = launch_module._actions(context)
    shipped = str(repo_root / "config" / "fisheye" / "x5_two_topics.yaml")
    node_values = _overrides(node)
    assert _text(node_values["fisheye_calibration"]) == shipped
    assert _text(node_values["lens0_topic"]) == "/x5/lens0"
    assert "lens1_topic" not in node_values  # empty: the params file's
    assert _text(_overrides(camera)["fisheye_calibration"]) == shipped
    remapped = {_text(a): _text(b) for a, b in camera._Node__remappings}
    assert remapped["lens0"] == "/x5/lens0" and remapped["lens1"] == "lens1"
    given = launch_module._actions(_context(launch_module, fisheye="/calib/mine.yaml"))[0]
    assert _text(_overrides(given)["fisheye_calibration"]) == "/calib/mine.yaml"


def test_launch_refuses_a_non_boolean_compressed_flag(launch_module):
    with pytest.raises(RuntimeError, match="compressed:=maybe"):
        launch_module._actions(_context(launch_module, compressed="maybe"))


def test_rviz_config_shows_cloud_scan_range_image_and_mask(repo_root):
    config = yaml.safe_load((repo_root / "config" / "dap.rviz").read_text())
    displays = config["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"]: d for d in displays if "Topic" in d}
    assert set(topics) == NODE_TOPICS
    assert topics["/points"]["Class"] == "rviz_default_plugins/PointCloud2"
    assert topics["/points"]["Color Transformer"] == "RGB8"  # the packed rgb field
    assert topics["/scan"]["Class"] == "rviz_default_plugins/LaserScan"
    for display in topics.values():
        assert display["Topic"]["Reliability Policy"] == "Best Effort"
    fixed_frame = config["Visualization Manager"]["Global Options"]["Fixed Frame"]
    from dap_ros.camera_sim import SIM_PARAMETERS

    assert fixed_frame == next(p.default for p in SIM_PARAMETERS if p.name == "frame_id")
