"""The package installed non-editable, as pip and colcon lay it out, and the real ros2 CLI on it.

Not a test module: used by conftest.py (`installed_package`), test_install.py and
test_ros2_cli.py.
- `install_non_editable(repo_root, target)`: `pip install --no-deps --prefix` of a clean copy
  of the checkout (no stale build/ reused); `Installed.env(domain)` is a ROS environment in
  which that copy, not the checkout or its editable install, is found.
- `ros2(env, *args)`: one `ros2` command-line call; `ros2_service(env, *args)`: a repeatable
  service call (`ros2 param`), retried when the CLI hangs on a lost response or gives up
  discovering the node;
  `ros2_echo_once(env, ...)`: one message of a topic, the `ros2 topic echo --once` retried
  when it hangs.
- `LaunchProcess`: `ros2 launch` started in its own session and stopped with SIGINT, as a
  user's Ctrl-C stops it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

from ros_harness import ros_env, wait_until

ROS2 = Path(sys.executable).with_name("ros2")


def ros2_cli_missing() -> str | None:
    """Why the real `ros2 launch` / `ros2 topic` / `ros2 param` cannot run here, or None."""
    if not ROS2.exists() or importlib.util.find_spec("launch_ros") is None:
        return (
            "the ros2 command-line tools (launch, launch_ros, ros2cli; not on PyPI) are not "
            "installed: `make setup` installs them from ../shared/ros2_cli when it exists "
            "(DAP_SHARED overrides the path)"
        )
    return None


COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "build", "install", "log", "demo_out", "runs", "__pycache__", "*.egg-info"
)
SHIPPED = ("README.md", "config.json", "model.safetensors")


class Installed:
    """A non-editable install of the checkout under `prefix`."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        site = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
        self.site_packages = Path(site)

    def env(self, domain: int) -> dict[str, str]:
        """A ROS environment where the installed copy, not the checkout, is found first."""
        env = ros_env(domain)
        env["AMENT_PREFIX_PATH"] = os.pathsep.join((str(self.prefix), sys.prefix))
        env["PYTHONPATH"] = str(self.site_packages)
        # The launchers' `#!/usr/bin/env python3` finds the venv, as in an activated venv.
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        return env


def install_non_editable(repo_root: Path, target: Path) -> Installed:
    """`pip install --no-deps --no-build-isolation --prefix target` of a clean copy."""
    source = target / "src"
    shutil.copytree(repo_root, source, ignore=COPY_IGNORE)
    prefix = target / "prefix"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    command += ["--no-build-isolation", "--prefix", str(prefix), str(source)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return Installed(prefix)


def ros2(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`ros2 ARGS...`; run inside `ros2_daemon(env)` so that no daemon outlives the test."""
    command = [str(ROS2), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


SERVICE_CALL_S = 20.0  # one ros2 CLI service call; answered in < 5 s on a loaded 2-core machine
SERVICE_ATTEMPTS = 3


def run_retrying_hangs(
    command: list[str],
    env: dict[str, str] | None,
    timeout: float,
    attempts: int,
    gave_up: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """Run `command` up to `attempts` times while it hangs past `timeout`, or exits non-zero
    saying one of `gave_up` (it stopped waiting before doing anything); only for commands that
    may be repeated. Any other exit is returned at once, and so is the last attempt's; a
    command that hangs every time raises TimeoutExpired naming the attempts."""
    for attempt in range(1, attempts + 1):
        try:
            run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as hang:
            if attempt == attempts:
                hang.cmd = f"{' '.join(command)} (hung {attempts} times)"
                raise
            continue
        said = run.stdout + run.stderr
        if attempt == attempts or run.returncode == 0 or not any(s in said for s in gave_up):
            return run
    raise ValueError(f"attempts must be >= 1, not {attempts}")


# What the ros2 CLI says when it gave up finding the node or its services (`--timeout`, 1 s
# by default, with the daemon; then a fixed 5 s for the parameter services): on a 2-core machine
# under load, discovery can take longer. Nothing was sent, so the call may be repeated.
CLI_GAVE_UP = ("Node not found", "Wait for service timed out")


def ros2_service(
    env: dict[str, str],
    *args: str,
    timeout: float = SERVICE_CALL_S,
    attempts: int = SERVICE_ATTEMPTS,
) -> subprocess.CompletedProcess:
    """`ros2 ARGS...` for a repeatable service call (`param get`, `param set`, `lifecycle get`).

    The ros2 CLI waits for the service's response without a timeout (ros2param spins until the
    future completes). A response lost while DDS is still matching the server's response
    writer with the CLI's new reader (a known race, ros2/system_tests#420) hangs it forever: a
    CI run saw `ros2 param set` silent for 60 s while the node went on publishing. Setting or
    reading the same value again is harmless, so a hang is retried; a node that never answers
    still fails after `attempts`. So is a call whose CLI gave up discovering the node in
    its fixed wait (CLI_GAVE_UP).
    """
    return run_retrying_hangs([str(ROS2), *args], env, timeout, attempts, CLI_GAVE_UP)


ECHO_ONCE_S = 30.0  # one `ros2 topic echo --once`: 2-10 s on a loaded 2-core machine
ECHO_ATTEMPTS = 3


def ros2_echo_once(
    env: dict[str, str],
    topic: str,
    kind: str,
    *options: str,
    timeout: float = ECHO_ONCE_S,
    attempts: int = ECHO_ATTEMPTS,
) -> subprocess.CompletedProcess:
    """`ros2 topic echo --no-daemon --once OPTIONS TOPIC KIND`, repeated while it hangs.

    An echo waits for its first message without a timeout. A CI run saw one silent for 60 s
    while the node went on publishing, with Fast DDS's shared-memory transport logging `Failed
    init_port ...: open_and_lock_file failed` in the echo: a port whose segment another process
    had removed after a timed-out health check (eProsima/Fast-DDS#5737), so the samples sent
    to it went nowhere. A new echo is a new participant with new ports, and reading one more
    message is harmless; a topic that never publishes still fails after `attempts`.
    """
    command = [str(ROS2), "topic", "echo", "--no-daemon", "--once", *options, topic, kind]
    return run_retrying_hangs(command, env, timeout, attempts)


@contextlib.contextmanager
def ros2_daemon(env: dict[str, str]) -> Iterator[None]:
    """The ros2 daemon of env's domain (it keeps the graph, so each `ros2 param` call need not
    discover the node again), stopped on exit: `ros2` calls would otherwise leave one running."""
    ros2(env, "daemon", "start")
    try:
        yield
    finally:
        ros2(env, "daemon", "stop")


class LaunchProcess:
    """`ros2 launch dap_ros dap.launch.py ARGS...` in its own session, output in a log file.

    Use as a context manager: it is always stopped (SIGINT, then SIGKILL of its group).
    """

    def __init__(self, env: dict[str, str], log_path: Path, *arguments: str) -> None:
        self.command = [str(ROS2), "launch", "dap_ros", "dap.launch.py", *arguments]
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> LaunchProcess:
        self._log = open(self.log_path, "w")  # closed in stop()
        self.process = subprocess.Popen(
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.log_path.parent,
            start_new_session=True,  # a SIGINT for it alone, as Ctrl-C in its terminal
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float) -> bool:
        """True once `text` is in the log; False on timeout or when the launch exits."""
        assert self.process is not None
        wait_until(lambda: text in self.log() or self.process.poll() is not None, timeout, 0.2)
        return text in self.log()

    def stop(self, timeout: float = 15.0) -> tuple[int | None, float]:
        """SIGINT, then wait: (exit status, seconds); None when it had to be killed."""
        assert self.process is not None
        started = time.monotonic()
        status: int | None = self.process.poll()
        if status is None:
            self.process.send_signal(signal.SIGINT)
            try:
                status = self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout)
        if not self._log.closed:
            self._log.close()
        return status, time.monotonic() - started
