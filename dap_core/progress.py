"""Progress and decision messages of slow first-run work (ONNX export, engine build).

Owns how the runtime talks to a person: `say` writes one line to stderr (and the log), and
`heartbeat` says what is starting, repeats "still ..." with the elapsed time while it runs, and
says how long it took. Library code stays quiet otherwise. `$DAP_QUIET=1` silences stderr
(the log still receives every line).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator

LOG = logging.getLogger("dap_core")
HEARTBEAT_S = 15.0
_said: set[str] = set()
_lock = threading.Lock()


def say(message: str, *, once: bool = False) -> None:
    """One line to stderr and the log; with once=True, only the first time in this process."""
    with _lock:
        if once and message in _said:
            return
        _said.add(message)
    LOG.info(message)
    if os.environ.get("DAP_QUIET", "") not in ("", "0"):
        return
    print(f"dap: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def heartbeat(what: str, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Say `what` started, then 'still <what> (N s)' every `every_s` seconds, then the time."""
    say(f"{what} ...")
    start = time.perf_counter()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            say(f"still {what} ({time.perf_counter() - start:.0f} s)")

    thread = threading.Thread(target=beat, name="dap-heartbeat", daemon=True)
    thread.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        done.set()
        thread.join()
        elapsed = time.perf_counter() - start
        say(f"{what}: {'done' if ok else 'failed'} in {elapsed:.1f} s")
