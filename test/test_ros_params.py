"""Node building blocks that need no running node: parameters, frame slot, frame counters."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import yaml

from dap_ros.diagnostics import FrameStats, diagnostic_array
from dap_ros.frame_slot import FrameSlot
from dap_ros.params import PARAMETERS, Settings, _descriptor


def test_settings_has_exactly_the_parameters_of_the_table():
    assert [f.name for f in dataclasses.fields(Settings)] == [p.name for p in PARAMETERS]


def test_defaults_are_valid_and_typed():
    settings = Settings.defaults()
    for spec in PARAMETERS:
        assert type(getattr(settings, spec.name)) is type(spec.default), spec.name


def test_config_yaml_sets_every_parameter_with_its_default(repo_root):
    values = yaml.safe_load((repo_root / "config" / "dap.yaml").read_text())["dap"][
        "ros__parameters"
    ]
    assert set(values) == {p.name for p in PARAMETERS}
    for spec in PARAMETERS:
        value = values[spec.name]
        if isinstance(value, list):  # a double array parameter: YAML list, tuple default
            assert all(type(v) is float for v in value), f"{spec.name}: write 1.0, not 1"
            value = tuple(value)
        assert value == spec.default, spec.name
        assert type(value) is type(spec.default), f"{spec.name}: write 1.0, not 1"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_range": 150.0}, "min_range .* must be below max_range"),
        ({"scan_min_height": 0.5}, "scan_min_height .* must be below scan_max_height"),
        ({"cloud_max_height": -2000.0}, "cloud_max_height must be in"),
        ({"cloud_stride": 0}, "cloud_stride must be in"),
        ({"input_height": 100}, "multiple of 16"),
        ({"mask_threshold": 10.5}, "mask_threshold must be int"),
        ({"backend": "cuda"}, "backend must be one of"),
        ({"predictor": "no_colon"}, "module:factory"),
        ({"max_range": float("nan")}, "max_range must be finite"),
        ({"no_such": 1}, "unknown parameters: no_such"),
    ],
)
def test_bad_changes_are_refused_with_a_reason(changes, message):
    with pytest.raises(ValueError, match=message):
        Settings.defaults().replaced(changes)


def test_good_change_gives_a_new_object_and_int_becomes_float():
    settings = Settings.defaults()
    changed = settings.replaced({"mask_threshold": 20, "max_range": 30})
    assert (changed.mask_threshold, changed.max_range) == (20, 30.0)
    assert type(changed.max_range) is float
    assert settings.mask_threshold == 100  # the original is untouched (frozen)


def test_input_topic_follows_the_transport():
    settings = Settings.defaults().replaced({"image_topic": "cam/pano"})
    assert settings.input_topic == "cam/pano"
    assert settings.replaced({"compressed_input": True}).input_topic == "cam/pano/compressed"


def test_descriptors_carry_range_description_and_read_only():
    specs = {spec.name: spec for spec in PARAMETERS}
    stride = _descriptor(specs["cloud_stride"])
    assert (stride.integer_range[0].from_value, stride.integer_range[0].to_value) == (1, 64)
    assert not stride.read_only and stride.description
    max_range = _descriptor(specs["max_range"])
    assert max_range.floating_point_range[0].to_value == 1000.0
    weights = _descriptor(specs["weights"])
    assert weights.read_only
    assert "tensorrt" in _descriptor(specs["backend"]).additional_constraints


def test_frame_slot_keeps_only_the_newest_and_reports_drops():
    slot: FrameSlot[int] = FrameSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True  # 1 was never taken: dropped
    item, arrived = slot.take(timeout=0.0)
    assert item == 2 and arrived <= time.monotonic()
    assert slot.take(timeout=0.0) is None
    assert slot.put(3) is False


def test_frame_slot_wakes_a_waiting_worker_and_closes():
    slot: FrameSlot[str] = FrameSlot()
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take(timeout=5.0)))
    worker.start()
    time.sleep(0.05)
    slot.put("frame")
    worker.join(timeout=2.0)
    assert got[0][0] == "frame"
    slot.close()
    assert slot.take(timeout=5.0) is None  # returns at once when closed
    assert slot.closed


def test_frame_stats_rates_means_and_totals():
    stats = FrameStats()
    for _ in range(4):
        stats.count("received")
    stats.count("dropped")
    stats.count("bad_input", "bad input image: zero size")
    stats.processed_frame(latency_ms=30.0, processing_ms=20.0, inference_ms=10.0)
    stats.processed_frame(latency_ms=50.0, processing_ms=40.0, inference_ms=30.0)
    report = stats.report()
    assert report.totals == {
        "received": 4,
        "processed": 2,
        "dropped": 1,
        "idle": 0,
        "bad_input": 1,
        "failed": 0,
        "imu_rejected": 0,
        "lens_received": 0,
        "unmatched": 0,
    }
    assert (report.latency_ms, report.processing_ms, report.inference_ms) == (40.0, 30.0, 20.0)
    assert report.input_rate_hz > 0 and report.last_problem.endswith("zero size")
    quiet = stats.report()  # a new period: nothing new happened
    assert quiet.new["received"] == 0 and quiet.output_rate_hz == 0
    assert quiet.totals["received"] == 4


def test_diagnostic_levels_follow_the_period():
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus

    def level_of(events, idle=False):
        stats = FrameStats()
        stats.report()
        for event in events:
            if event == "processed":
                stats.processed_frame(1.0, 1.0, 1.0)
            else:
                stats.count(event, f"{event} happened")
        status = diagnostic_array(stats.report(), "dap", "oracle", Time(), idle=idle).status[0]
        values = {kv.key: kv.value for kv in status.values}
        assert values["backend"] == "oracle"
        return status.level

    assert level_of([]) == DiagnosticStatus.OK
    assert level_of(["received", "processed"]) == DiagnosticStatus.OK
    assert level_of(["received", "received", "bad_input", "processed"]) == DiagnosticStatus.WARN
    assert level_of(["received", "bad_input"]) == DiagnosticStatus.ERROR
    assert level_of(["received", "idle"], idle=True) == DiagnosticStatus.OK
    # Two lens topics: lens frames without a partner warn, with pairs or without any.
    assert level_of(["lens_received", "unmatched"]) == DiagnosticStatus.WARN
    assert level_of(["received", "processed", "unmatched"]) == DiagnosticStatus.WARN


def test_mask_threshold_description_is_whole_and_says_what_happens_without_a_head():
    (spec,) = [p for p in PARAMETERS if p.name == "mask_threshold"]
    assert spec.description.endswith(".")  # `ros2 param describe` used to end mid-sentence
    assert "refused" in spec.description and "100 m head only" in spec.description
