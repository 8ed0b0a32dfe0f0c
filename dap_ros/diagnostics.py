"""Frame counters of the node and their /diagnostics message.

`FrameStats` is written by the subscription callback and the worker thread and read by the
diagnostics timer; a lock keeps each update atomic. Rates and mean times are per reporting
period (counter deltas), so memory stays constant however long the node runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

__all__ = ["FrameStats", "StatsReport", "diagnostic_array"]


_COUNTERS = (
    "received",
    "processed",
    "dropped",
    "idle",
    "bad_input",
    "failed",
    "imu_rejected",  # IMU samples not taken as gravity (magnitude off 1 g)
    "lens_received",  # two lens topics: lens frames arrived (either lens)
    "unmatched",  # two lens topics: lens frames dropped without a partner
)


@dataclass
class StatsReport:
    """One reporting period. Rates in Hz, times in milliseconds (NaN when no frame was
    processed); `totals` count since the node started, `new` within this period."""

    input_rate_hz: float
    output_rate_hz: float
    latency_ms: float  # input header stamp -> outputs published, mean over the period
    processing_ms: float  # frame taken by the worker -> outputs published
    inference_ms: float  # predictor.predict only
    totals: dict[str, int]
    new: dict[str, int]
    last_problem: str


@dataclass
class FrameStats:
    """Thread-safe counters of what happened to input frames.

    received: arrived; processed: published; dropped: replaced by a newer frame before the
    worker took them; idle: skipped because nobody subscribed; bad_input: could not be decoded;
    failed: inference or publishing raised; imu_rejected: IMU samples not taken as gravity.
    With two lens topics `received` counts lens pairs, `lens_received` lens frames, and
    `unmatched` lens frames dropped without a partner (dap_ros.lens_pairing says why).
    """

    last_problem: str = ""
    _counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    _at_last_report: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    _last_report_time: float = field(default_factory=time.monotonic)
    _sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # latency, proc, infer
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, what: str, problem: str | None = None) -> None:
        """Add one to counter `what`; `problem` (if given) becomes last_problem."""
        with self._lock:
            self._counts[what] += 1
            if problem is not None:
                self.last_problem = problem

    def get(self, what: str) -> int:
        with self._lock:
            return self._counts[what]

    def processed_frame(self, latency_ms: float, processing_ms: float, inference_ms: float) -> None:
        with self._lock:
            self._counts["processed"] += 1
            for k, value in enumerate((latency_ms, processing_ms, inference_ms)):
                self._sums[k] += value

    def report(self) -> StatsReport:
        """Rates and means since the previous report; starts the next period."""
        now = time.monotonic()
        with self._lock:
            elapsed = max(now - self._last_report_time, 1e-9)
            new = {key: self._counts[key] - self._at_last_report[key] for key in _COUNTERS}
            done = new["processed"]
            means = [total / done if done else float("nan") for total in self._sums]
            report = StatsReport(
                input_rate_hz=new["received"] / elapsed,
                output_rate_hz=done / elapsed,
                latency_ms=means[0],
                processing_ms=means[1],
                inference_ms=means[2],
                totals=dict(self._counts),
                new=new,
                last_problem=self.last_problem,
            )
            self._at_last_report = dict(self._counts)
            self._last_report_time = now
            self._sums = [0.0, 0.0, 0.0]
        return report


def diagnostic_array(report: StatsReport, name: str, backend: str, stamp, idle: bool):
    """DiagnosticArray holding one status for the node.

    OK while running or waiting (no images, or `idle`: nobody subscribes); WARN when some
    frames of the period were bad, failed or (lens frames) found no partner; ERROR when frames
    arrived and none came out.
    """
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from std_msgs.msg import Header

    status = DiagnosticStatus(name=name, hardware_id=backend)
    trouble = report.new["bad_input"] + report.new["failed"] + report.new["unmatched"]
    if report.new["received"] == 0 and report.new["unmatched"]:
        status.level = DiagnosticStatus.WARN
        status.message = f"no lens pairs: {report.last_problem}"
    elif report.new["received"] == 0:
        status.level, status.message = DiagnosticStatus.OK, "waiting for images"
    elif idle and report.new["processed"] == 0:
        status.level, status.message = DiagnosticStatus.OK, "idle: nobody subscribes"
    elif report.new["processed"] == 0:
        status.level = DiagnosticStatus.ERROR
        status.message = f"no frame processed: {report.last_problem or 'worker busy'}"
    elif trouble:
        status.level, status.message = DiagnosticStatus.WARN, report.last_problem
    else:
        status.level, status.message = DiagnosticStatus.OK, "running"
    values = {
        "backend": backend,
        "input_rate_hz": f"{report.input_rate_hz:.2f}",
        "output_rate_hz": f"{report.output_rate_hz:.2f}",
        "latency_ms": f"{report.latency_ms:.1f}",
        "processing_ms": f"{report.processing_ms:.1f}",
        "inference_ms": f"{report.inference_ms:.1f}",
        **{f"frames_{key}": str(value) for key, value in report.totals.items()},
        "last_problem": report.last_problem,
    }
    status.values = [KeyValue(key=key, value=value) for key, value in values.items()]
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])
