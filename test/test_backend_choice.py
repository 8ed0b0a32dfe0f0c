"""`auto` never surprises: cached timings or a cheap rule, progress on slow first runs, the
decision printed once."""

from __future__ import annotations

import time

import pytest
from dap_export_helpers import FIXTURE_SIZE, load_fixture_model

from dap_core import backend_choice, progress
from dap_core.model_source import ModelSource, load_source
from dap_core.runtime import Predictor


@pytest.fixture(scope="module")
def model(official_fixtures):
    return load_fixture_model(official_fixtures)


@pytest.fixture(autouse=True)
def fresh_messages(monkeypatch):
    monkeypatch.setattr(progress, "_said", set())
    monkeypatch.delenv("DAP_QUIET", raising=False)


def test_large_model_without_a_cached_export_is_not_exported_to_be_timed(
    model, tmp_path, monkeypatch
):
    def no_export(self, *args, **kwargs):
        raise AssertionError("auto exported ONNX only to time it")

    monkeypatch.setattr(ModelSource, "onnx_file", no_export)
    monkeypatch.setattr(ModelSource, "large", property(lambda self: True))
    start = time.perf_counter()
    predictor = Predictor(model, input_size=FIXTURE_SIZE, cache_dir=tmp_path)
    assert predictor.backend == "torch"
    assert "torch by rule for a large model" in predictor.backend_reason
    assert "M parameters" in predictor.backend_reason
    assert not (tmp_path / "backend_timings").exists()
    assert time.perf_counter() - start < 30  # no export, no measurement


def test_large_model_with_an_export_cached_is_measured(model, tmp_path, monkeypatch):
    source = load_source(model)
    cached = source.onnx_cache_path(tmp_path, FIXTURE_SIZE, tuple(model.config.mask_thresholds))
    source.onnx_file(tmp_path, FIXTURE_SIZE, tuple(model.config.mask_thresholds))
    assert cached.is_file()
    monkeypatch.setattr(ModelSource, "large", property(lambda self: True))
    predictor = Predictor(model, input_size=FIXTURE_SIZE, cache_dir=tmp_path)
    assert "measured now" in predictor.backend_reason and "ms vs" in predictor.backend_reason


def test_decision_with_its_numbers_is_printed_once(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ModelSource, "large", property(lambda self: True))
    for _ in range(2):
        Predictor(model, input_size=FIXTURE_SIZE, cache_dir=tmp_path)
    lines = [line for line in capsys.readouterr().err.splitlines() if "by rule" in line]
    assert len(lines) == 1
    assert lines[0].startswith("dap: torch on cpu (fp32, input 64x128")


def test_first_export_says_what_it_does_and_is_cached(model, tmp_path, capsys):
    source = load_source(model)
    thresholds = tuple(model.config.mask_thresholds)
    path = source.onnx_file(tmp_path, FIXTURE_SIZE, thresholds)
    err = capsys.readouterr().err
    assert "exporting the 0.9 M-parameter model to ONNX at 64x128 (first run only" in err
    assert "done in" in err and str(path) in err
    assert source.onnx_file(tmp_path, FIXTURE_SIZE, thresholds) == path
    assert capsys.readouterr().err == ""  # the second call finds the cache


def test_heartbeat_repeats_while_slow_work_runs(capsys):
    with progress.heartbeat("building something", every_s=0.05):
        time.sleep(0.3)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "dap: building something ..."
    assert any(line.startswith("dap: still building something (") for line in err[1:-1])
    assert err[-1].startswith("dap: building something: done in ")


def test_heartbeat_says_failed_and_quiet_mode_keeps_stderr_clean(capsys, monkeypatch):
    with pytest.raises(RuntimeError), progress.heartbeat("exporting", every_s=10):
        raise RuntimeError("boom")
    assert "exporting: failed in" in capsys.readouterr().err
    monkeypatch.setenv("DAP_QUIET", "1")
    progress.say("hidden")
    assert capsys.readouterr().err == ""


def test_requested_backend_is_built_without_a_choice(model, tmp_path):
    request = backend_choice.BuildRequest("cpu", "fp32", (100,), FIXTURE_SIZE, 1, tmp_path)
    choice = backend_choice.choose("torch", load_source(model), request, None)
    assert choice.runner.name == "torch" and choice.reason == "requested; torch on cpu"
    with pytest.raises(ValueError, match="backend must be one of"):
        backend_choice.choose("openvino", load_source(model), request, None)
