"""Shared, session-cached exports for the runtime/export tests (an export costs seconds).

Not a test module: imported by test_export_onnx.py, test_runtime.py and test_predict_cli.py.
Files live under pytest's per-session base temp directory, so each is exported once per run.
"""

from __future__ import annotations

from pathlib import Path

from dap_core.export.onnx import export_onnx
from dap_core.model.official import load_official

FIXTURE_LAYERS = (0, 2, 3, 4)
FIXTURE_SIZE = (64, 128)


def load_fixture_model(official_fixtures: Path):
    """The official-architecture tiny fixture model (official adapter, one 'beyond' head)."""
    return load_official(
        official_fixtures / "tiny_weights.safetensors", layer_indices=FIXTURE_LAYERS
    )


def fixture_onnx_path(tmp_path_factory, official_fixtures: Path) -> Path:
    """The fixture model exported at 64x128 (batch 1), exported on first use in a session."""
    path = tmp_path_factory.getbasetemp() / "dap_exports" / "fixture_64x128.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name("fixture_64x128.partial.onnx")
        export_onnx(load_fixture_model(official_fixtures), partial, input_size=FIXTURE_SIZE)
        partial.rename(path)
    return path
