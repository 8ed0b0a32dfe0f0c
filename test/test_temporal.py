"""Temporal stabilisation (dap_core.temporal, dap_ros.temporal_filter) on tiny sequences."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from dap_core.prediction import Prediction
from dap_core.temporal import StabilizerConfig, TemporalStabilizer
from dap_ros.params import Settings
from dap_ros.temporal_filter import TemporalFilter

H, W = 16, 32


def _scene() -> np.ndarray:
    """A fixed range map: 2..8 m with a band of sky (+inf) and one invalid pixel."""
    rng = np.random.default_rng(0)
    truth = rng.uniform(2.0, 8.0, (H, W)).astype(np.float32)
    truth[:2] = np.inf
    truth[-1, 0] = np.nan
    return truth


def _noisy(truth: np.ndarray, frames: int, seed: int = 1) -> list[np.ndarray]:
    """Model-like output: a per-frame scale error (σ 3 %) and per-pixel noise (σ 2 %)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(frames):
        scale = np.exp(rng.normal(0.0, 0.03))
        noise = np.exp(rng.normal(0.0, 0.02, truth.shape))
        out.append((truth * scale * noise).astype(np.float32))
    return out


def _jitter(seq: list[np.ndarray]) -> float:
    steps = []
    for a, b in itertools.pairwise(seq):
        ok = np.isfinite(a) & np.isfinite(b)
        steps.append(np.median(np.abs(np.log(b[ok] / a[ok]))))
    return float(np.median(steps))


def _absrel(seq: list[np.ndarray], truth: np.ndarray) -> float:
    ok = np.isfinite(truth)
    return float(np.mean([np.mean(np.abs(r[ok] - truth[ok]) / truth[ok]) for r in seq]))


def test_static_jitter_halves_and_absrel_gets_no_worse():
    truth = _scene()
    raw = _noisy(truth, 30)
    stabilizer = TemporalStabilizer()
    filtered = [stabilizer(r) for r in raw]
    assert _jitter(filtered) <= 0.5 * _jitter(raw)
    assert _absrel(filtered, truth) <= _absrel(raw, truth)


def test_sky_and_invalid_pixels_pass_through():
    truth = _scene()
    stabilizer = TemporalStabilizer()
    for frame in _noisy(truth, 3):
        out = stabilizer(frame)
        assert np.isposinf(out[:2]).all()
        assert np.isnan(out[-1, 0])
        assert np.isfinite(out[2:-1]).all()


def test_a_new_obstacle_appears_in_the_first_frame_that_sees_it():
    truth = _scene()
    stabilizer = TemporalStabilizer()
    for frame in _noisy(truth, 10):
        stabilizer(frame)
    obstacle = truth.copy()
    obstacle[6:10, 10:16] = 1.0  # a box 1 m away, where the scene was 2..8 m
    seen = stabilizer(_noisy(obstacle, 1, seed=9)[0])
    # Within the per-pixel noise (σ 2 %, 4 σ) and the scale step: the box is there at once.
    np.testing.assert_allclose(seen[6:10, 10:16], 1.0, rtol=0.12)
    assert stabilizer.last_reset_fraction > 0


def test_a_changed_scale_is_followed_not_frozen():
    truth = _scene()
    stabilizer = TemporalStabilizer()
    for frame in _noisy(truth, 10):
        stabilizer(frame)
    doubled = [r * np.float32(1.2) for r in _noisy(truth, 20, seed=5)]
    for frame in doubled:
        out = stabilizer(frame)
    ok = np.isfinite(truth)
    # scale_rate 0.3 a frame: after 20 frames the 20 % scale change is fully followed.
    assert np.median(out[ok] / (truth[ok] * 1.2)) == pytest.approx(1.0, abs=0.03)


def test_a_cut_restarts_the_filter():
    stabilizer = TemporalStabilizer()
    truth = _scene()
    stabilizer(truth)
    far = truth * np.float32(3.0)  # log offset 1.1 > max_scale_step 0.5: another scene
    assert np.array_equal(stabilizer(far), far, equal_nan=True)
    assert stabilizer.resets == 2
    assert np.array_equal(stabilizer(np.full((8, 16), 2.0, np.float32)), np.full((8, 16), 2.0))


@pytest.mark.parametrize(
    "field, value",
    [("smoothing", 0.0), ("scale_rate", 1.5), ("noise_floor", 0.2), ("max_scale_step", 0.0)],
)
def test_bad_configs_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        StabilizerConfig(**{field: value})


def test_filter_is_off_by_default_and_restarts_when_its_settings_change():
    truth = _scene()
    frames = [Prediction(r, {}) for r in _noisy(truth, 6)]
    off = Settings.defaults()
    filt = TemporalFilter()
    assert filt(off, frames[0]) is frames[0]
    on = dataclasses.replace(off, temporal_stabilization=True)
    first = filt(on, frames[0])
    assert np.array_equal(first.range_m, frames[0].range_m, equal_nan=True)  # no history yet
    assert not np.array_equal(filt(on, frames[1]).range_m, frames[1].range_m, equal_nan=True)
    changed = dataclasses.replace(on, temporal_smoothing=0.5)
    restarted = filt(changed, frames[2])  # new parameters: a new filter, no old history
    assert np.array_equal(restarted.range_m, frames[2].range_m, equal_nan=True)
