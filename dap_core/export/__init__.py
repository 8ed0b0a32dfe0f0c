"""Export of DAP models: ONNX (onnx.py), mixed precision (mixed_precision.py), TensorRT engines
(tensorrt.py), the engine parity gate (parity.py). Import the submodules directly; this package
imports nothing heavy.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "DAP_ROS_CACHE"  # the same cache root as the downloaded weights (model/hub.py)


def cache_root() -> Path:
    """Folder for derived artifacts (ONNX exports, engines, backend timings).

    $DAP_ROS_CACHE when set, else $XDG_CACHE_HOME/dap_ros, else ~/.cache/dap_ros.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dap_ros"
