"""dap_core must stay importable without ROS: the CLI and the model never pull in rclpy."""

from __future__ import annotations

import subprocess
import sys

# rclpy made unimportable: building the parser must not need it. The one dap_ros module the CLI
# may load is the ROS-free `dap bag` command (rosbags reads and writes bags without ROS).
PROBE = """
import sys
sys.modules['rclpy'] = None
import dap_core, dap_core.cli
dap_core.cli.build_parser()
allowed = {'dap_ros', 'dap_ros.bag_cli'}
leaked = sorted(m for m in sys.modules if m.split('.')[0] in {'rclpy', 'dap_ros'})
leaked = [m for m in leaked if m not in allowed and sys.modules[m] is not None]
print(','.join(leaked))
"""


def test_dap_core_and_cli_import_without_rclpy(repo_root):
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=repo_root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"dap_core imported ROS modules: {out.stdout}"


def test_dap_cli_help_lists_commands(repo_root):
    out = subprocess.run(
        [sys.executable, "-m", "dap_core.cli", "--help"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "info" in out.stdout


def test_dap_cli_without_command_fails(repo_root):
    out = subprocess.run([sys.executable, "-m", "dap_core.cli"], cwd=repo_root, capture_output=True)
    assert out.returncode == 2
