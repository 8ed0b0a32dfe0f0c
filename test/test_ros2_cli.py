"""The real `ros2 launch`, `ros2 topic` and `ros2 param` against the package installed non-editable.

`ros2 launch dap_ros dap.launch.py sim:=true` (no other argument) brings up the node and the
simulated camera; every output publishes; `ros2 param set` changes the outputs at run time and
an invalid value is refused with its reason; SIGINT stops everything cleanly. A second launch
sets every documented argument (image, compressed, weights, backend, namespace, params_file)
and checks that each took effect; a third runs the simulated two-lens camera into the node
(fisheye:=, lens0:=, lens1:=). One launch is shared by the module's first tests. Needs the
ros2 CLI (`make setup` installs it from ../shared/ros2_cli); without it the module skips.
About 1.5 min on 2 busy cores, most of it the node loading its model.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from install_harness import (
    ECHO_ONCE_S,
    ROS2,
    LaunchProcess,
    ros2_cli_missing,
    ros2_daemon,
    ros2_echo_once,
    ros2_service,
)
from ros_harness import domain_id, wait_until

pytestmark = [pytest.mark.ros]
if ros2_cli_missing():
    pytest.skip(ros2_cli_missing(), allow_module_level=True)

READY_S = 180.0  # the node loads torch and the model, `auto` times two backends (loaded CPU)
# Each topic with its type, so `ros2 topic echo` subscribes at once instead of discovering it.
TOPICS = {
    "/depth/image": "sensor_msgs/msg/Image",
    "/range_mask/image": "sensor_msgs/msg/Image",
    "/points": "sensor_msgs/msg/PointCloud2",
    "/scan": "sensor_msgs/msg/LaserScan",
    "/depth/colored": "sensor_msgs/msg/Image",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}
STOP_S = 10.0  # SIGINT to every process gone


def echo_field(env, topic: str, field: str, timeout: float = ECHO_ONCE_S) -> str:
    """One message's `field` from `ros2 topic echo --once` (the first line of its output);
    `timeout` is for each attempt (a hung echo is repeated, install_harness.ros2_echo_once)."""
    kind = TOPICS[topic.removeprefix("/robot")]
    run = ros2_echo_once(env, topic, kind, "--field", field, timeout=timeout)
    assert run.returncode == 0, f"{topic}: {run.stdout}{run.stderr}"
    return run.stdout.splitlines()[0].strip()


def wait_for_field(env, topic: str, field: str, wanted: str, timeout: float = 60) -> str:
    """Echo `field` until it reads `wanted` (messages already in flight may be older)."""
    seen: list[str] = []
    wait_until(lambda: seen.append(echo_field(env, topic, field)) or seen[-1] == wanted, timeout)
    return seen[-1]


@pytest.fixture(scope="module")
def env(installed_package):
    return installed_package.env(domain_id(__name__))


@pytest.fixture(scope="module")
def sim_launch(env, tmp_path_factory):
    """`ros2 launch dap_ros dap.launch.py sim:=true`, the installed package's launch file."""
    log = tmp_path_factory.mktemp("sim_launch") / "launch.log"
    with ros2_daemon(env), LaunchProcess(env, log, "sim:=true") as launch:
        assert launch.wait_for_log("[dap]: ready:", READY_S), launch.log()
        yield launch


def test_sim_launch_publishes_every_output(env, sim_launch):
    # All echoes at once: each is a separate subscriber process, as a user's terminals are.
    echo = [str(ROS2), "topic", "echo", "--no-daemon", "--once", "--field", "header"]
    kinds = {**TOPICS, "/image": "sensor_msgs/msg/Image"}
    runs = {
        topic: subprocess.Popen(
            [*echo, topic, kind],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for topic, kind in kinds.items()
    }
    for topic, run in runs.items():
        try:
            out, _ = run.communicate(timeout=ECHO_ONCE_S)
            status = run.returncode
        except subprocess.TimeoutExpired:  # a hung echo is repeated (install_harness)
            run.kill()
            run.communicate()
            again = ros2_echo_once(env, topic, kinds[topic], "--field", "header")
            out, status = again.stdout + again.stderr, again.returncode
        assert status == 0 and "frame_id" in out, f"{topic}: {out}"
    assert "ready: Image on '/image'" in sim_launch.log()


def test_topic_hz_reports_a_rate(env, sim_launch):
    hz = subprocess.Popen(
        [str(ROS2), "topic", "hz", "/depth/image"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ""
        for line in hz.stdout:
            if "average rate" in line:
                break
    finally:
        hz.kill()
        hz.wait()
    rate = re.search(r"average rate: ([0-9.]+)", line)
    assert rate and float(rate.group(1)) > 0, line


def test_param_set_cloud_stride_changes_the_cloud(env, sim_launch):
    width = int(echo_field(env, "/points", "width"))  # organised cloud: image width / stride
    stride = int(ros2_service(env, "param", "get", "/dap", "cloud_stride").stdout.split()[-1])
    run = ros2_service(env, "param", "set", "/dap", "cloud_stride", "4")
    assert "Set parameter successful" in run.stdout, run.stdout + run.stderr
    wanted = str(width * stride // 4)
    assert wait_for_field(env, "/points", "width", wanted) == wanted


def test_param_set_max_range_and_frame_id_take_effect(env, sim_launch):
    for name, value in (("max_range", "20.0"), ("frame_id", "pano_test")):
        run = ros2_service(env, "param", "set", "/dap", name, value)
        assert "Set parameter successful" in run.stdout, run.stdout + run.stderr
    assert wait_for_field(env, "/scan", "range_max", "20.0") == "20.0"
    assert wait_for_field(env, "/points", "header.frame_id", "pano_test") == "pano_test"


def test_invalid_param_set_is_refused_with_its_reason(env, sim_launch):
    run = ros2_service(env, "param", "set", "/dap", "min_range", "150.0")
    said = run.stdout + run.stderr
    assert "Setting parameter failed: min_range (150.0) must be below max_range" in said, said
    assert ros2_service(env, "param", "get", "/dap", "min_range").stdout.split()[-1] == "0.0"


def test_sigint_stops_node_and_camera_cleanly(sim_launch):
    status, seconds = sim_launch.stop(timeout=30)
    log = sim_launch.log()
    assert status == 0 and seconds <= STOP_S, f"exit {status} after {seconds:.1f} s\n{log}"
    assert log.count("process has finished cleanly") == 2, log
    assert "Traceback" not in log, log


def test_every_launch_argument_takes_effect(installed_package, tmp_path):
    """image, compressed, weights, backend, namespace and params_file, all in one launch."""
    env = installed_package.env(domain_id(__name__ + ".arguments"))
    share = installed_package.prefix / "share" / "dap_ros"
    params = yaml.safe_load((share / "config" / "dap.yaml").read_text())
    params["dap"]["ros__parameters"].update(cloud_stride=3, frame_id="from_params_file")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"/**": params["dap"]}))  # any namespace
    weights = share / "weights" / "dap_small"
    arguments = [
        "sim:=true",
        "namespace:=robot",
        "image:=/cam/pano",
        "compressed:=true",
        f"weights:={weights}",
        "backend:=torch",
        f"params_file:={params_file}",
    ]
    with ros2_daemon(env), LaunchProcess(env, tmp_path / "launch.log", *arguments) as launch:
        ready = "[robot.dap]: ready: CompressedImage on '/cam/pano/compressed', backend torch"
        assert launch.wait_for_log(ready, READY_S), launch.log()
        got = ros2_service(env, "param", "get", "/robot/dap", "weights").stdout
        assert got.split()[-1] == str(weights), got
        # The camera publishes JPEGs on the remapped topic; the cloud comes out under the
        # namespace, with params_file's stride and frame.
        frame = echo_field(env, "/robot/points", "header.frame_id", timeout=45)
        assert frame == "from_params_file"
        assert int(echo_field(env, "/robot/points", "width")) == 1024 // 3 + 1
        status, seconds = launch.stop(timeout=30)
        assert status == 0 and seconds <= STOP_S, f"exit {status} after {seconds:.1f} s"
    assert "Traceback" not in launch.log(), launch.log()


def test_fisheye_launch_runs_the_two_lens_camera_into_the_node(installed_package, tmp_path):
    """fisheye:=x5_two_topics names the installed calibration for the node and the simulated
    camera, whose lens topics lens0:= / lens1:= remap; the node pairs them into a cloud."""
    env = installed_package.env(domain_id(__name__ + ".fisheye"))
    share = installed_package.prefix / "share" / "dap_ros"
    params = yaml.safe_load((share / "config" / "dap.yaml").read_text())
    params["dap"]["ros__parameters"].update(
        input_height=128, fisheye_erp_height=64, backend="torch"
    )
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"/**": params["dap"]}))
    arguments = [
        "sim:=true",
        "fisheye:=x5_two_topics",
        "lens0:=/x5/lens0",
        "lens1:=/x5/lens1",
        f"params_file:={params_file}",
    ]
    with ros2_daemon(env), LaunchProcess(env, tmp_path / "launch.log", *arguments) as launch:
        ready = "[dap]: ready: Image on '/x5/lens0' and '/x5/lens1'"
        assert launch.wait_for_log(ready, READY_S), launch.log()
        assert int(echo_field(env, "/points", "height", timeout=60)) == 64 // 2, launch.log()
        status, seconds = launch.stop(timeout=30)
        assert status == 0 and seconds <= STOP_S, f"exit {status} after {seconds:.1f} s"
    assert "Traceback" not in launch.log(), launch.log()
