"""The test harness's retry of a hung ros2 CLI call (install_harness.run_retrying_hangs).

A real subprocess that hangs on its first run and answers on its second stands in for
`ros2 param set` whose first response was lost: the harness must return the second answer,
and a command that hangs every time must still fail, naming how often it hung. One that gives
up discovering the node on its first run (the CLI's fixed wait) is repeated the same way; any
other error is returned at once.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from install_harness import CLI_GAVE_UP, run_retrying_hangs

HANG_ONCE = """
import pathlib, sys, time
marker = pathlib.Path(sys.argv[1])
if not marker.exists():
    marker.touch()
    time.sleep(60)  # the lost response: never answers
print("Set parameter successful")
"""


def test_a_call_that_hangs_once_is_retried_and_its_answer_returned(tmp_path):
    command = [sys.executable, "-c", HANG_ONCE, str(tmp_path / "first")]
    run = run_retrying_hangs(command, env=None, timeout=3.0, attempts=2)
    assert run.returncode == 0 and run.stdout.strip() == "Set parameter successful"


def test_a_call_that_always_hangs_fails_naming_the_attempts():
    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(subprocess.TimeoutExpired, match="hung 2 times"):
        run_retrying_hangs(command, env=None, timeout=1.0, attempts=2)


def test_a_call_that_exits_with_an_error_is_not_repeated(tmp_path):
    counter = tmp_path / "runs"
    script = "import pathlib, sys; open(sys.argv[1], 'a').write('x'); raise SystemExit(3)"
    command = [sys.executable, "-c", script, str(counter)]
    run = run_retrying_hangs(command, env=None, timeout=10.0, attempts=3)
    assert run.returncode == 3 and counter.read_text() == "x"


GIVE_UP_ONCE = """
import pathlib, sys
marker = pathlib.Path(sys.argv[1])
if not marker.exists():
    marker.touch()
    sys.exit("Wait for service timed out waiting for parameter services for node /dap")
print("Set parameter successful")
"""


def test_a_call_that_gave_up_discovering_is_retried(tmp_path):
    command = [sys.executable, "-c", GIVE_UP_ONCE, str(tmp_path / "first")]
    run = run_retrying_hangs(command, None, 10.0, 2, CLI_GAVE_UP)
    assert run.returncode == 0 and run.stdout.strip() == "Set parameter successful"


def test_a_call_that_always_gives_up_returns_its_last_answer(tmp_path):
    command = [sys.executable, "-c", "import sys; sys.exit('Node not found')"]
    run = run_retrying_hangs(command, None, 10.0, 2, CLI_GAVE_UP)
    assert run.returncode == 1 and "Node not found" in run.stderr
