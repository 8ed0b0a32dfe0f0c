"""Pairing two lens streams by stamp (dap_ros.lens_pairing), with hand-built stamps and clocks."""

from __future__ import annotations

import pytest

from dap_ros.lens_pairing import LensPairer

MS = 1_000_000  # nanoseconds
FRAME = 33 * MS  # a 30 Hz camera


def _pairer(tolerance_ms: float = 5.0, wait_s: float = 0.2, queue: int = 4) -> LensPairer:
    return LensPairer(round(tolerance_ms * MS), wait_s, queue)


def test_exact_stamps_pair_frame_by_frame_with_lens0s_stamp():
    pairer = _pairer(tolerance_ms=0.0)
    for k in range(5):
        stamp = 1_000 * MS + k * FRAME
        assert pairer.add(0, stamp, f"a{k}", k * 0.033) is None
        pair = pairer.add(1, stamp, f"b{k}", k * 0.033 + 0.001)
        assert (pair.lens0, pair.lens1, pair.stamp_ns, pair.skew_ns) == (f"a{k}", f"b{k}", stamp, 0)
    assert pairer.pairs == 5 and pairer.unmatched == [0, 0]


def test_jitter_within_the_tolerance_pairs_and_beyond_it_does_not():
    pairer = _pairer(tolerance_ms=5.0)
    assert pairer.add(1, 100 * MS + 4 * MS, "b", 0.0) is None
    pair = pairer.add(0, 100 * MS, "a", 0.001)
    assert (pair.lens0, pair.lens1, pair.stamp_ns, pair.skew_ns) == ("a", "b", 100 * MS, 4 * MS)
    assert pairer.add(0, 200 * MS, "a2", 0.1) is None
    assert pairer.add(1, 206 * MS, "b2", 0.1) is None  # 6 ms apart: both wait
    assert pairer.waiting(0) == pairer.waiting(1) == 1


def test_the_nearest_waiting_frame_is_taken():
    pairer = _pairer(tolerance_ms=20.0, queue=8)
    pairer.add(1, 90 * MS, "far", 0.0)
    pairer.add(1, 103 * MS, "near", 0.0)
    pair = pairer.add(0, 100 * MS, "a", 0.0)
    assert pair.lens1 == "near"
    # The older lens-1 frame can no longer be published in order: dropped as stale.
    assert pairer.unmatched == [0, 1] and pairer.reasons["stale"] == 1
    assert pairer.waiting(1) == 0


def test_a_dropped_frame_of_one_lens_leaves_its_partner_unmatched_after_the_wait():
    pairer = _pairer(tolerance_ms=1.0, wait_s=0.2)
    seen = []
    pairer.on_unmatched = lambda lens, reason: seen.append((lens, reason))
    t = 0.0
    pairs = []
    for k in range(6):
        stamp = k * FRAME
        pairs.append(pairer.add(0, stamp, k, t))
        if k != 2:  # lens 1's frame 2 is lost on the wire
            pairs.append(pairer.add(1, stamp, k, t))
        t += 0.033
    assert [p.lens0 for p in pairs if p is not None] == [0, 1, 3, 4, 5]
    # Lens 0's frame 2 was overtaken by pair 3 (stale): counted at once, not after the wait.
    assert seen == [(0, "stale")] and pairer.unmatched == [1, 0]


def test_out_of_order_arrival_still_pairs_and_a_late_frame_is_counted():
    pairer = _pairer(tolerance_ms=2.0, queue=4)
    # Lens 0 delivers frame 2 before frame 1; lens 1 in order: both pairs form.
    assert pairer.add(0, 2 * FRAME, "a2", 0.0) is None
    assert pairer.add(0, 1 * FRAME, "a1", 0.0) is None
    assert pairer.add(1, 1 * FRAME, "b1", 0.0).lens0 == "a1"
    assert pairer.add(1, 2 * FRAME, "b2", 0.0).lens0 == "a2"
    # A lens-1 frame older than the last pair arrives: it can only be late.
    assert pairer.add(1, 1 * FRAME + MS, "b1bis", 0.01) is None
    assert pairer.reasons["late"] == 1 and pairer.unmatched == [0, 1]
    assert pairer.waiting(1) == 0


def test_a_silent_lens_bounds_the_wait_and_the_queue():
    pairer = _pairer(wait_s=0.1, queue=3)
    for k in range(3):  # within the wait: the queue fills, the oldest makes room
        pairer.add(0, k * FRAME, k, k * 0.02)
    assert pairer.waiting(0) == 3 and pairer.unmatched == [0, 0]
    pairer.add(0, 3 * FRAME, 3, 0.06)
    assert pairer.waiting(0) == 3 and pairer.reasons["overflow"] == 1
    # Later, with no frame arriving at all, the timer's expire() empties the queue.
    assert pairer.expire(10.0) == 3
    assert pairer.waiting(0) == 0 and pairer.unmatched == [4, 0] and pairer.pairs == 0
    assert pairer.reasons["expired"] == 3


def test_expired_frames_go_before_a_new_frame_is_matched():
    pairer = _pairer(tolerance_ms=5.0, wait_s=0.1)
    pairer.add(1, 100 * MS, "old", 0.0)
    assert pairer.add(0, 100 * MS, "a", 0.5) is None  # its partner waited 0.5 s > 0.1 s
    assert pairer.reasons["expired"] == 1 and pairer.waiting(0) == 1


@pytest.mark.parametrize(
    "arguments", [(-1, 0.1, 4), (0, 0.0, 4), (0, 0.1, 0)], ids=["tolerance", "wait", "queue"]
)
def test_bad_settings_are_refused(arguments):
    with pytest.raises(ValueError, match="tolerance_ns must be"):
        LensPairer(*arguments)


def test_only_two_lenses():
    with pytest.raises(ValueError, match="lens must be 0 or 1"):
        _pairer().add(2, 0, None, 0.0)


def test_a_clock_that_jumps_back_restarts_the_pairing_instead_of_refusing_all_frames():
    pairer = _pairer(tolerance_ms=1.0)
    start = 50_000 * MS
    for k in range(3):
        assert pairer.add(0, start + k * FRAME, k, 0.0) is None
        assert pairer.add(1, start + k * FRAME, k, 0.0) is not None
    pairer.add(0, start + 3 * FRAME, "waiting", 0.0)
    # `ros2 bag play --loop` starts again at the recording's first stamp, 10 s earlier.
    looped = start - 10_000 * MS
    assert pairer.add(0, looped, "a", 0.1) is None
    assert pairer.rewinds == 1 and pairer.reasons["rewind"] == 1  # the waiting frame
    assert pairer.add(1, looped, "b", 0.1).lens0 == "a"
    # A stamp only a little older than the last pair is late, not a restart.
    assert pairer.add(1, looped - 5 * MS, "old", 0.1) is None
    assert pairer.reasons["late"] == 1 and pairer.rewinds == 1
