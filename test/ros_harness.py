"""Real ROS 2 processes for the node tests.

- `domain_id(tag)`: a ROS_DOMAIN_ID unique to this test process and module, so parallel test
  runs and modules never hear each other (plus ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST).
- `NodeProcess`: a node (`python -m MODULE --ros-args ...`) in a subprocess with its log in a
  file; always stopped (SIGINT, then SIGKILL) when the `with` block ends.
- `RosClient`: the test's own rclpy context and node, spun in a background thread, with
  publishers, collecting subscriptions and a parameter client.
- `local_context(domain)`: an rclpy context for a node run inside the test process (fed
  frames by direct calls, no DDS traffic needed).

Publishers of large messages (the node, the test's image publisher) use the project's Fast DDS
large-data profile, as deployed: without it best-effort subscribers receive nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TEST_DIR = Path(__file__).resolve().parent
REPO_ROOT = TEST_DIR.parent
LARGE_DATA_PROFILE = REPO_ROOT / "config" / "fastdds_large_data.xml"
PARAMS_FILE = REPO_ROOT / "config" / "dap.yaml"
STOP_TIMEOUT_S = 10.0


def wait_until(condition: Callable[[], bool], timeout: float, poll_s: float = 0.02) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()


def domain_id(tag: str) -> int:
    """A ROS domain in 1..100 derived from this process id and `tag` (e.g. the module name)."""
    return 1 + (os.getpid() * 31 + zlib.crc32(tag.encode())) % 100


def ros_env(domain: int) -> dict[str, str]:
    """Environment for a ROS process of the test: isolated domain, local discovery, profile."""
    python_path = os.pathsep.join(
        p for p in (str(TEST_DIR), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return dict(
        os.environ,
        AMENT_PREFIX_PATH=os.environ.get("AMENT_PREFIX_PATH", sys.prefix),
        ROS_DOMAIN_ID=str(domain),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        FASTDDS_DEFAULT_PROFILES_FILE=str(LARGE_DATA_PROFILE),
        PYTHONPATH=python_path,
        PYTHONUNBUFFERED="1",
        RCUTILS_COLORIZED_OUTPUT="0",
    )


def _ros_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return "''"
    return str(value)


class NodeProcess:
    """A ROS node in a subprocess; use as a context manager so it is always stopped."""

    def __init__(
        self,
        domain: int,
        log_path: Path,
        parameters: dict[str, Any] | None = None,
        *,
        module: str = "dap_ros.node",
        namespace: str = "/",
        params_file: Path | None = PARAMS_FILE,
    ) -> None:
        command = [sys.executable, "-m", module, "--ros-args"]
        if params_file is not None:
            command += ["--params-file", str(params_file)]
        for name, value in (parameters or {}).items():
            command += ["-p", f"{name}:={_ros_value(value)}"]
        command += ["-r", f"__ns:={namespace}"]
        self.command = command
        self.domain = domain
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> NodeProcess:
        self._log = open(self.log_path, "w")  # closed in stop()
        self.process = subprocess.Popen(
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=ros_env(self.domain),
            cwd=REPO_ROOT,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float) -> bool:
        """True once `text` appears in the log; False on timeout or when the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if not self.alive():
                return text in self.log()
            time.sleep(0.05)
        return False

    def rss_mib(self) -> float:
        """Resident memory of the node process, MiB (from /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        raise RuntimeError("VmRSS not found")

    def stop(self) -> int | None:
        """SIGINT (a normal ROS shutdown), SIGKILL if it hangs; returns the exit status."""
        if self.process is None:
            return None
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=STOP_TIMEOUT_S)
        finally:
            self._log.close()
        return self.process.returncode


class Inbox:
    """Messages received on one subscription, in arrival order."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._changed = threading.Condition()
        self.subscription = None

    def __call__(self, msg: Any) -> None:
        with self._changed:
            self.messages.append(msg)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[Any]], Any], timeout: float) -> Any:
        """The first truthy predicate(messages) within `timeout` s, else None."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = predicate(self.messages)
                remaining = deadline - time.monotonic()
                if result or remaining <= 0:
                    return result or None
                self._changed.wait(min(remaining, 0.1))

    def with_stamp(self, sec: int, nanosec: int, timeout: float) -> Any:
        """The first message whose header stamp is (sec, nanosec), waiting up to `timeout` s."""

        def find(messages: list[Any]) -> Any:
            for msg in messages:
                if (msg.header.stamp.sec, msg.header.stamp.nanosec) == (sec, nanosec):
                    return msg
            return None

        return self.wait_for(find, timeout)

    def clear(self) -> None:
        with self._changed:
            self.messages.clear()


class RosClient:
    """The test's own ROS node (own context, given domain), spinning in a background thread."""

    def __init__(self, domain: int, name: str = "dap_test_client") -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        # Fast DDS reads the profile when this process creates its first participant; it makes
        # the test's 1.5 MB best-effort images reach the node. Unset again afterwards, so that
        # other tests' subprocesses do not inherit it.
        had_profile = "FASTDDS_DEFAULT_PROFILES_FILE" in os.environ
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(LARGE_DATA_PROFILE))
        try:
            self.context = Context()
            rclpy.init(context=self.context, domain_id=domain)
            self.node = rclpy.create_node(name, context=self.context)
        finally:
            if not had_profile:
                os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
        self._parameter_clients: dict[str, Any] = {}
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        with contextlib.suppress(ExternalShutdownException, Exception):
            self.executor.spin()

    def publisher(self, msg_type: type, topic: str, qos: Any = None):
        from rclpy.qos import qos_profile_sensor_data

        return self.node.create_publisher(msg_type, topic, qos or qos_profile_sensor_data)

    def inbox(self, msg_type: type, topic: str, qos: Any = None) -> Inbox:
        from rclpy.qos import qos_profile_sensor_data

        inbox = Inbox()
        inbox.subscription = self.node.create_subscription(
            msg_type, topic, inbox, qos or qos_profile_sensor_data
        )
        return inbox

    def drop(self, inbox: Inbox) -> None:
        self.node.destroy_subscription(inbox.subscription)

    @staticmethod
    def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
        return wait_until(condition, timeout, poll_s=0.05)

    def set_parameters(self, node_name: str, values: dict[str, Any], timeout: float = 10.0):
        """Set parameters of a remote node; returns its SetParametersResult list."""
        from rclpy.parameter import Parameter
        from rclpy.parameter_client import AsyncParameterClient

        if node_name not in self._parameter_clients:  # kept: they live as long as our node
            self._parameter_clients[node_name] = AsyncParameterClient(self.node, node_name)
        client = self._parameter_clients[node_name]
        if not client.wait_for_services(timeout_sec=timeout):
            raise TimeoutError(f"parameter services of {node_name} not available")
        future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not future.done():
            raise TimeoutError(f"set_parameters on {node_name} timed out")
        return future.result().results

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)


@contextlib.contextmanager
def local_context(domain: int) -> Iterator[Any]:
    """An initialised rclpy Context on `domain`, shut down afterwards."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=domain)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


@contextlib.contextmanager
def ros_client(domain: int) -> Iterator[RosClient]:
    client = RosClient(domain)
    try:
        yield client
    finally:
        client.close()


def stamped(msg: Any, sec: int, nanosec: int = 0, frame_id: str = "pano_link") -> Any:
    """`msg` with header stamp (sec, nanosec) and frame_id set."""
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    msg.header.frame_id = frame_id
    return msg


def diagnostics_values(msg: Any) -> dict[str, str]:
    """key -> value of the first status in a DiagnosticArray."""
    return {kv.key: kv.value for kv in msg.status[0].values}
