"""The models the node serves: one predictor per range-mask head, built when first needed.

DAP computes the depth plus one head per range-mask threshold (10, 20, 50, 100 m), and each
head costs about as much as the depth head: all four masks make a frame about 2.5 times as
expensive as depth plus one mask. The node publishes a single mask (`mask_threshold`), so it
asks the runtime for depth plus that head only. When the threshold changes at run time, the
worker thread switches to the predictor for the new head: built the first time it is needed,
then kept, so switching back is free. Thresholds the weights have no head for are refused.

A stand-in model (tests, custom backends: any object with .predict(rgb) -> Prediction and
.backend) serves every threshold itself; without a `mask_thresholds` attribute its heads are
unknown, every threshold is accepted, and one without a mask compares the range itself
(`Prediction.within`).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from dap_core.prediction import Prediction

__all__ = [
    "HeadPredictors",
    "PredictorLike",
    "dap_head_predictors",
    "default_weights",
    "head_predictors",
]

_DEFAULT_WEIGHTS = Path("weights") / "dap_small"


class PredictorLike(Protocol):
    """What the node needs from a model: dap_core.runtime.Predictor or a stand-in."""

    backend: str

    def predict(self, rgb: Any) -> Prediction: ...


class HeadPredictors:
    """Predictors keyed by range-mask threshold (metres), built by `build(threshold)` on demand.

    heads: the thresholds the weights have a head for (None: unknown, any threshold goes).
    shared: one predictor serves every threshold (`build` ignores its argument).
    `check` may be called from any thread (it reads `heads` only); `get` builds, so only the
    worker thread (and the node's constructor, before the worker starts) calls it.
    """

    def __init__(
        self,
        build: Callable[[int], PredictorLike],
        heads: Sequence[int] | None,
        *,
        shared: bool = False,
    ) -> None:
        self._build = build
        self.heads = None if heads is None else tuple(int(t) for t in heads)
        self.shared = shared
        self._built: dict[int, PredictorLike] = {}
        self._lock = threading.Lock()  # `built` may be asked from the parameter callback

    @classmethod
    def fixed(cls, predictor: PredictorLike) -> HeadPredictors:
        """One predictor for every threshold; its heads are its `mask_thresholds`, if any."""
        _check_predictor(predictor)
        heads = getattr(predictor, "mask_thresholds", None)
        return cls(lambda threshold: predictor, heads, shared=True)

    def check(self, threshold: int) -> None:
        """Raise ValueError, with the reason, when no head serves `threshold` metres."""
        if self.heads is not None and int(threshold) not in self.heads:
            have = ", ".join(str(t) for t in self.heads) or "none"
            raise ValueError(
                f"mask_threshold {threshold} m has no range-mask head in these weights"
                f" (heads: {have} m)"
            )

    def built(self, threshold: int) -> bool:
        with self._lock:
            return (0 if self.shared else int(threshold)) in self._built

    def get(self, threshold: int) -> PredictorLike:
        """The predictor for `threshold` metres, built now if it is the first request."""
        threshold = int(threshold)
        key = 0 if self.shared else threshold
        with self._lock:
            predictor = self._built.get(key)
        if predictor is None:
            self.check(threshold)
            predictor = self._build(threshold)
            _check_predictor(predictor)
            with self._lock:
                self._built[key] = predictor
        return predictor

    def describe(self, threshold: int) -> str:
        """Which heads run for `threshold`, for the log."""
        if self.shared:
            heads = getattr(self.get(threshold), "mask_thresholds", None)
            if heads is None:
                return f"the {threshold} m mask of a stand-in predictor"
            return "depth + range-mask heads " + ", ".join(f"{t} m" for t in heads)
        return f"depth + the {threshold} m range-mask head only"


def _check_predictor(predictor: Any) -> None:
    if not callable(getattr(predictor, "predict", None)) or not hasattr(predictor, "backend"):
        raise ValueError(f"{predictor!r} has no .predict(rgb) and .backend")


def default_weights() -> Path:
    """The shipped weights: share/dap_ros/weights/dap_small, or weights/dap_small in a checkout."""
    candidates = [Path(__file__).resolve().parents[1] / _DEFAULT_WEIGHTS]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.insert(0, Path(get_package_share_directory("dap_ros")) / _DEFAULT_WEIGHTS)
    except (ImportError, LookupError, ValueError, OSError):
        pass  # not installed through ament: the checkout path is the only candidate
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "no 'weights' parameter given and the shipped weights were not found at "
        + " or ".join(str(c) for c in candidates)
    )


def _input_size(height: int) -> tuple[int, int] | None:
    return (height, 2 * height) if height else None  # 0: keep the weights' own input size


def dap_head_predictors(settings) -> HeadPredictors:
    """DAP runtime predictors, one per head, sharing one loaded model (torch weights).

    settings: dap_ros.params.Settings (weights, backend, device, precision, input_height,
    threads). The weights are read once here; each head's Predictor wraps the same model (an
    ONNX export is opened per head: onnxruntime keeps the outputs it was asked for).
    """
    from dap_core.runtime import Predictor  # torch and the model load only here

    weights = Path(settings.weights) if settings.weights else default_weights()
    if weights.suffix == ".onnx":
        from dap_core.export.onnx import read_onnx_info

        source: Any = weights
        heads = read_onnx_info(weights).mask_thresholds
    else:
        from dap_core.model import load_model

        source = load_model(weights)
        heads = source.config.mask_thresholds

    def build(threshold: int) -> PredictorLike:
        return Predictor(
            source,
            backend=settings.backend,
            device=settings.device,
            precision=settings.precision,
            mask_thresholds=(threshold,),
            input_size=_input_size(settings.input_height),
            threads=settings.threads or None,
            reuse_outputs=True,  # the node is done with a prediction before the next one
        )

    return HeadPredictors(build, heads)


def head_predictors(settings) -> HeadPredictors:
    """The node's models: the `predictor` parameter's stand-in ('module:factory'), else DAP."""
    if not settings.predictor:
        return dap_head_predictors(settings)
    module_name, _, factory_name = settings.predictor.partition(":")
    factory = getattr(importlib.import_module(module_name), factory_name, None)
    if factory is None:
        raise ValueError(f"predictor factory '{settings.predictor}' does not exist")
    return HeadPredictors.fixed(factory())
