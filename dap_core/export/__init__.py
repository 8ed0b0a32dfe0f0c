"""Export of DAP models: ONNX (onnx.py), mixed precision (mixed_precision.py), TensorRT engines
(tensorrt.py). Import the submodules directly; this package imports nothing heavy.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "DAP_CACHE_DIR"


def cache_root() -> Path:
    """Folder for derived artifacts (ONNX exports, engines, backend timings).

    $DAP_CACHE_DIR when set, else ~/.cache/dap_ros.
    """
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "dap_ros"
