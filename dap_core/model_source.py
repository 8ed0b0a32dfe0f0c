"""What a Predictor runs: a DAP model, a DAP ONNX export, or both, and the ONNX export cache.

Owns: reading `weights` (a model, a weights path or an .onnx file) into a `ModelSource`, the
digest that identifies weights + config in every cache, and the cached, atomic ONNX export that
the onnxruntime and TensorRT backends build from. The backends (dap_core.backends) own how
they run it; the Predictor (dap_core.runtime) owns choosing, pre- and post-processing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dap_core.progress import heartbeat

LARGE_MODEL_PARAMS = 50_000_000  # above this an ONNX export takes minutes on a CPU


@dataclass
class ModelSource:
    """What the Predictor was given: a torch model, an ONNX file, or both."""

    model: Any  # DAP or None
    onnx_path: Path | None
    config: Any  # DAPConfig
    digest: str  # identifies weights + config, for caches
    parameters: int = 0  # parameter count (0 when only an ONNX file is known)
    _exports: dict = field(default_factory=dict, repr=False)

    @property
    def large(self) -> bool:
        return self.parameters > LARGE_MODEL_PARAMS

    def onnx_cache_path(
        self,
        cache_dir: Path,
        input_size: tuple[int, int],
        thresholds: tuple[int, ...],
        dynamic_batch: bool = False,
    ) -> Path:
        """Where the export for this model, size and heads is (or would be) cached."""
        if self.onnx_path is not None:
            return self.onnx_path
        h, w = input_size
        key = json.dumps([self.digest, h, w, list(thresholds), dynamic_batch])
        name = f"dap-{h}x{w}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"
        return Path(cache_dir) / "onnx" / name

    def onnx_file(
        self,
        cache_dir: Path,
        input_size: tuple[int, int],
        thresholds: tuple[int, ...],
        dynamic_batch: bool = False,
    ) -> Path:
        """The ONNX file to run: the one given, or an export cached under cache_dir/onnx.

        The export is written atomically (export_onnx stages it beside the target), so a full
        disk or a kill leaves no partial file under the cached name; it says what it does,
        with a heartbeat, because a large model takes minutes.
        """
        path = self.onnx_cache_path(cache_dir, input_size, thresholds, dynamic_batch)
        if self.onnx_path is not None or path.is_file():
            return path
        from dap_core.export.onnx import export_onnx

        millions = self.parameters / 1e6
        what = (
            f"exporting the {millions:.1f} M-parameter model to ONNX at "
            f"{input_size[0]}x{input_size[1]} (first run only; cached as {path})"
        )
        with heartbeat(what):
            export_onnx(
                self.model,
                path,
                input_size=input_size,
                mask_thresholds=thresholds,
                dynamic_batch=dynamic_batch,
            )
        return path


def model_digest(model) -> str:
    """sha256 over the config and every tensor of the state dict (names, shapes, bytes)."""
    digest = hashlib.sha256(model.config.to_json().encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def load_source(weights) -> ModelSource:
    """A ModelSource from a DAP model, a weights path (directory, .safetensors, .pth) or .onnx."""
    from dap_core.model import DAP
    from dap_core.model.checkpoint import load_model

    if isinstance(weights, DAP):
        return ModelSource(
            weights, None, weights.config, model_digest(weights), _parameters(weights)
        )
    path = Path(weights)
    if path.suffix == ".onnx":
        from dap_core.export.onnx import read_onnx_info
        from dap_core.files import sha256_file

        info = read_onnx_info(path)
        return ModelSource(None, path, info.config(), sha256_file(path))
    model = load_model(path)
    return ModelSource(model, None, model.config, model_digest(model), _parameters(model))
