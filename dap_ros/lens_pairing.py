"""Pairs the frames of two lens topics by header stamp, with a bounded wait.

Owns the pairing rule of two-topic dual-fisheye input (x5_ros_driver's /x5/lens0, /x5/lens1),
as message_filters' ApproximateTime would (it is not installable from the package index): a
frame of one lens pairs with the waiting frame of the other lens whose stamp is nearest to its
own, if they differ by at most `tolerance_ns`. A frame nobody pairs is discarded and counted
(`unmatched`, per lens) when it has waited `max_wait_s` (its partner is lost or its lens
silent), when its lens's queue already holds `queue_size` frames (the oldest goes), when a
newer pair of its lens was already emitted (it can no longer be published in order), or when it
arrives after such a pair (late). A stamp more than `rewind_ns` older than the last pair is
taken for a clock that jumped back (a looping `ros2 bag play`, a restarted simulation): the
pairer starts afresh instead of calling every later frame late. Pure Python, no ROS: the node
feeds it stamps in nanoseconds and monotonic arrival times in seconds, and calls `expire` from
a timer so that a silent lens is noticed even when no frame arrives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["UNMATCHED_REASONS", "LensPair", "LensPairer"]

T = TypeVar("T")

# Why a frame went unpaired (the keys of LensPairer.reasons).
UNMATCHED_REASONS = ("expired", "overflow", "stale", "late", "rewind")


@dataclass(frozen=True)
class LensPair(Generic[T]):
    """Two frames taken together; `stamp_ns` is lens 0's stamp (the pair's, by convention)."""

    lens0: T
    lens1: T
    stamp_ns: int
    skew_ns: int  # lens 1's stamp minus lens 0's


@dataclass
class _Waiting(Generic[T]):
    stamp_ns: int
    arrived_s: float
    item: T


@dataclass
class LensPairer(Generic[T]):
    """Stamp-matched pairs of two lens streams; unpaired frames are dropped and counted.

    tolerance_ns: largest |stamp difference| of a pair (0 = exact stamps only).
    max_wait_s: longest a frame waits for its partner (monotonic seconds).
    queue_size: frames kept waiting per lens.
    on_unmatched(lens, reason): called for each discarded frame (reason in UNMATCHED_REASONS).
    rewind_ns: how far back a stamp may go before the clock counts as restarted.
    """

    tolerance_ns: int
    max_wait_s: float
    queue_size: int = 4
    on_unmatched: Callable[[int, str], None] | None = None
    rewind_ns: int = 1_000_000_000
    rewinds: int = 0
    unmatched: list[int] = field(default_factory=lambda: [0, 0])
    reasons: dict[str, int] = field(default_factory=lambda: dict.fromkeys(UNMATCHED_REASONS, 0))
    pairs: int = 0
    _queues: tuple[deque, deque] = field(default_factory=lambda: (deque(), deque()))
    _last_paired: list[int | None] = field(default_factory=lambda: [None, None])

    def __post_init__(self) -> None:
        if self.tolerance_ns < 0 or self.max_wait_s <= 0 or self.queue_size < 1:
            raise ValueError(
                f"tolerance_ns must be >= 0, max_wait_s > 0 and queue_size >= 1, got "
                f"{self.tolerance_ns}, {self.max_wait_s}, {self.queue_size}"
            )

    def add(self, lens: int, stamp_ns: int, item: T, now_s: float) -> LensPair[T] | None:
        """Offer a frame of `lens` (0 or 1); the pair it completes, else None (it waits)."""
        if lens not in (0, 1):
            raise ValueError(f"lens must be 0 or 1, got {lens}")
        self.expire(now_s)
        last = self._last_paired[lens]
        if last is not None and stamp_ns < last - self.rewind_ns:
            self._restart()
            last = None
        if last is not None and stamp_ns <= last:
            self._drop(lens, "late")
            return None
        other = 1 - lens
        match = self._nearest(self._queues[other], stamp_ns)
        if match is None:
            queue = self._queues[lens]
            if len(queue) >= self.queue_size:
                queue.popleft()
                self._drop(lens, "overflow")
            queue.append(_Waiting(stamp_ns, now_s, item))
            return None
        self._queues[other].remove(match)
        stamps = {lens: stamp_ns, other: match.stamp_ns}
        items = {lens: item, other: match.item}
        for k in (0, 1):  # frames older than this pair's can no longer be published in order
            self._last_paired[k] = stamps[k]
            queue = self._queues[k]
            kept = [w for w in queue if w.stamp_ns > stamps[k]]
            for _ in range(len(queue) - len(kept)):
                self._drop(k, "stale")
            queue.clear()
            queue.extend(kept)
        self.pairs += 1
        return LensPair(items[0], items[1], stamps[0], stamps[1] - stamps[0])

    def expire(self, now_s: float) -> int:
        """Drop frames that waited longer than max_wait_s; how many were dropped."""
        dropped = 0
        for lens, queue in enumerate(self._queues):
            while queue and now_s - queue[0].arrived_s > self.max_wait_s:
                queue.popleft()
                self._drop(lens, "expired")
                dropped += 1
        return dropped

    def _restart(self) -> None:
        """The clock went back: drop what waits (from before the jump) and every pair stamp."""
        for lens, queue in enumerate(self._queues):
            for _ in range(len(queue)):
                self._drop(lens, "rewind")
            queue.clear()
        self._last_paired = [None, None]
        self.rewinds += 1

    def waiting(self, lens: int) -> int:
        """Frames of `lens` waiting for a partner."""
        return len(self._queues[lens])

    def _nearest(self, queue: deque, stamp_ns: int) -> _Waiting | None:
        best = None
        for waiting in queue:
            gap = abs(waiting.stamp_ns - stamp_ns)
            if gap <= self.tolerance_ns and (best is None or gap < abs(best.stamp_ns - stamp_ns)):
                best = waiting
        return best

    def _drop(self, lens: int, reason: str) -> None:
        self.unmatched[lens] += 1
        self.reasons[reason] += 1
        if self.on_unmatched is not None:
            self.on_unmatched(lens, reason)
