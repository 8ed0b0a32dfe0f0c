"""The managed (lifecycle) node in a real ROS 2 process, driven through every transition.

Twice: from the test's rclpy node with the lifecycle services (ChangeState, GetState), and
with the real `ros2 lifecycle set/get` commands where ../shared/ros2_cli is installed into the
venv (`install.sh VENV`); without it that test skips with the reason. The node runs the room
oracle (test/ros_oracle.py), so frames cost nothing and every output is known.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from install_harness import SERVICE_ATTEMPTS, SERVICE_CALL_S, run_retrying_hangs
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from ros_harness import NodeProcess, domain_id, ros_client, ros_env, stamped
from sensor_msgs.msg import Image

from dap_ros import conversions as conv

pytestmark = pytest.mark.ros

H, W = 32, 64
WAIT_S = 20.0
SERVICE_S = 10.0
CLI_ATTEMPTS = 5


class Managed:
    """The test client's handle on one managed node: transitions, state, a frame in and out."""

    def __init__(self, client, namespace: str) -> None:
        self.client, self.ns = client, namespace
        node = client.node
        self._change = node.create_client(ChangeState, f"{namespace}/dap/change_state")
        self._get = node.create_client(GetState, f"{namespace}/dap/get_state")
        self.image_pub = client.publisher(Image, f"{namespace}/image")
        self.depth = client.inbox(Image, f"{namespace}/depth/image")
        self.rgb = np.zeros((H, W, 3), np.uint8)
        self.sec = 100

    def _call(self, service, request):
        assert service.wait_for_service(timeout_sec=SERVICE_S), f"no {service.srv_name}"
        future = service.call_async(request)
        assert self.client.wait_until(future.done, SERVICE_S), f"{service.srv_name} timed out"
        return future.result()

    def transition(self, transition_id: int) -> bool:
        return self._call(
            self._change, ChangeState.Request(transition=Transition(id=transition_id))
        ).success

    def state(self) -> str:
        return self._call(self._get, GetState.Request()).current_state.label

    def output_for_a_frame(self, timeout: float) -> bool:
        """Publish a frame (a few times: best effort); True when its range image comes back."""
        self.sec += 1
        msg = conv.rgb_to_msg(self.rgb, stamped(Image(), self.sec).header)
        for _ in range(3):
            self.image_pub.publish(stamped(msg, self.sec))
            if self.depth.with_stamp(self.sec, 0, timeout=timeout / 3) is not None:
                return True
        return False

    def depth_publishers(self) -> int:
        return len(self.client.node.get_publishers_info_by_topic(f"{self.ns}/depth/image"))


def _node(tmp_path, tag: str, **parameters):
    domain = domain_id(f"{__name__}.{tag}")
    namespace = f"/lc_{tag}{os.getpid()}"
    parameters = {"predictor": "ros_oracle:room", **parameters}
    process = NodeProcess(
        domain,
        tmp_path / f"{tag}.log",
        parameters,
        module="dap_ros.lifecycle_node",
        namespace=namespace,
    )
    return process, domain, namespace


def test_every_transition_from_rclpy_service_calls(tmp_path):
    process, domain, ns = _node(tmp_path, "rclpy")
    with process, ros_client(domain) as client:
        assert process.wait_for_log("waiting for configure", WAIT_S), process.log()
        node = Managed(client, ns)
        assert node.state() == "unconfigured"
        assert node.depth_publishers() == 0  # no topics before activate

        assert node.transition(Transition.TRANSITION_CONFIGURE)
        assert node.state() == "inactive"
        assert "configured: backend oracle-room" in process.log()
        assert not node.output_for_a_frame(timeout=1.5)  # inactive: nothing is published

        assert node.transition(Transition.TRANSITION_ACTIVATE)
        assert node.state() == "active"
        assert client.wait_until(lambda: node.image_pub.get_subscription_count() > 0, WAIT_S)
        assert node.output_for_a_frame(WAIT_S)

        assert node.transition(Transition.TRANSITION_DEACTIVATE)
        assert node.state() == "inactive"
        assert client.wait_until(lambda: node.image_pub.get_subscription_count() == 0, WAIT_S)
        assert client.wait_until(lambda: node.depth_publishers() == 0, WAIT_S)
        assert not node.output_for_a_frame(timeout=1.5)

        # Activating again needs no configure: the model stayed loaded.
        assert node.transition(Transition.TRANSITION_ACTIVATE)
        assert process.log().count("configured: backend") == 1
        assert client.wait_until(lambda: node.image_pub.get_subscription_count() > 0, WAIT_S)
        assert node.output_for_a_frame(WAIT_S)
        assert node.transition(Transition.TRANSITION_DEACTIVATE)

        assert node.transition(Transition.TRANSITION_CLEANUP)
        assert node.state() == "unconfigured"
        assert "model freed" in process.log()
        assert not node.transition(Transition.TRANSITION_ACTIVATE)  # not a transition from here

        assert node.transition(Transition.TRANSITION_CONFIGURE)
        assert node.transition(Transition.TRANSITION_ACTIVATE)
        assert node.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert node.state() == "finalized"
        assert "finalized (from active)" in process.log()
        assert process.alive()  # finalized, still answering, until the process is stopped
        assert process.stop() == 0


@pytest.mark.parametrize(
    ("steps", "shutdown"),
    [
        ((), Transition.TRANSITION_UNCONFIGURED_SHUTDOWN),
        ((Transition.TRANSITION_CONFIGURE,), Transition.TRANSITION_INACTIVE_SHUTDOWN),
    ],
    ids=["from_unconfigured", "from_inactive"],
)
def test_shutdown_from_the_other_primary_states(tmp_path, steps, shutdown):
    process, domain, ns = _node(tmp_path, f"shutdown{len(steps)}")
    with process, ros_client(domain) as client:
        assert process.wait_for_log("waiting for configure", WAIT_S), process.log()
        node = Managed(client, ns)
        for step in steps:
            assert node.transition(step)
        assert node.transition(shutdown)
        assert node.state() == "finalized"


def test_a_failing_configure_stays_unconfigured_with_one_clear_line(tmp_path):
    process, domain, ns = _node(tmp_path, "broken", predictor="ros_oracle:no_such_factory")
    with process, ros_client(domain) as client:
        assert process.wait_for_log("waiting for configure", WAIT_S), process.log()
        node = Managed(client, ns)
        assert not node.transition(Transition.TRANSITION_CONFIGURE)
        assert node.state() == "unconfigured"
        assert "configure failed: ValueError: predictor factory" in process.log()
        assert "Traceback" not in process.log()


def test_autostart_configures_and_activates(tmp_path):
    process, domain, ns = _node(tmp_path, "auto", autostart=True)
    with process, ros_client(domain) as client:
        assert process.wait_for_log("ready:", WAIT_S), process.log()
        node = Managed(client, ns)
        assert node.state() == "active"
        assert client.wait_until(lambda: node.image_pub.get_subscription_count() > 0, WAIT_S)
        assert node.output_for_a_frame(WAIT_S)


def _ros2() -> str:
    ros2 = shutil.which("ros2", path=os.path.dirname(sys.executable))
    if ros2 is None:
        pytest.skip("no `ros2` CLI in this venv: run ../shared/ros2_cli/install.sh VENV")
    try:
        import ros2lifecycle  # noqa: F401
    except ImportError:
        pytest.skip("ros2lifecycle is not installed (../shared/ros2_cli/install.sh VENV)")
    return ros2


def test_every_transition_with_ros2_lifecycle_commands(tmp_path):
    ros2 = _ros2()
    process, domain, ns = _node(tmp_path, "cli")
    env = ros_env(domain)
    node_name = f"{ns}/dap"

    def cli(*args: str) -> str:
        # Through a ros2 daemon of this test's domain (started and stopped here), which keeps
        # the discovered graph between commands; a fresh daemon may not have found the node
        # yet, so "Node not found" is retried (it never yields a wrong state).
        # `get` may be repeated, so a call hung on a lost service response is retried
        # (install_harness.ros2_service); a transition is sent once.
        repeatable = args[0] == "get"
        for _ in range(CLI_ATTEMPTS):
            done = run_retrying_hangs(
                [ros2, "lifecycle", *args],
                env,
                timeout=SERVICE_CALL_S if repeatable else 60,
                attempts=SERVICE_ATTEMPTS if repeatable else 1,
            )
            if "Node not found" not in done.stderr + done.stdout:
                break
            time.sleep(1.0)
        assert done.returncode == 0, f"ros2 lifecycle {' '.join(args)}: {done.stderr}"
        return done.stdout

    def state() -> str:
        return cli("get", node_name).split()[0]

    daemon = [ros2, "daemon"]
    subprocess.run([*daemon, "start"], env=env, capture_output=True, timeout=60, check=True)
    try:
        _walk_through_every_transition(process, node_name, cli, state)
    finally:
        subprocess.run([*daemon, "stop"], env=env, capture_output=True, timeout=60)


def _walk_through_every_transition(process, node_name, cli, state) -> None:
    with process:
        assert process.wait_for_log("waiting for configure", WAIT_S), process.log()
        assert state() == "unconfigured"
        for transition, expected in (
            ("configure", "inactive"),
            ("activate", "active"),
            ("deactivate", "inactive"),
            ("activate", "active"),
            ("deactivate", "inactive"),
            ("cleanup", "unconfigured"),
            ("configure", "inactive"),
            ("shutdown", "finalized"),
        ):
            assert "Transitioning successful" in cli("set", node_name, transition)
            assert state() == expected, transition
        assert "finalized (from inactive)" in process.log()
