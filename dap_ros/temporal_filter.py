"""The node's and `dap bag`'s temporal stabilisation switch: Settings -> dap_core.temporal filter.

Owns when the filter runs and restarts: off unless `temporal_stabilization` is true; a new
filter (no history) whenever its parameters change or it is switched on again, so a changed
setting never mixes with the history of the old one. No ROS import.
"""

from __future__ import annotations

from dap_core.prediction import Prediction
from dap_core.temporal import StabilizerConfig, TemporalStabilizer
from dap_ros.params import Settings

__all__ = ["TemporalFilter", "stabilizer_config"]


def stabilizer_config(s: Settings) -> StabilizerConfig:
    """The filter parameters of the node's settings (ValueError names a bad combination)."""
    return StabilizerConfig(
        smoothing=s.temporal_smoothing, change_threshold=s.temporal_change_threshold
    )


class TemporalFilter:
    """Applies the stabiliser to each prediction of one stream while the settings enable it."""

    def __init__(self) -> None:
        self._config: StabilizerConfig | None = None
        self._stabilizer: TemporalStabilizer | None = None

    def __call__(self, s: Settings, prediction: Prediction) -> Prediction:
        if not s.temporal_stabilization:
            self._config = self._stabilizer = None
            return prediction
        config = stabilizer_config(s)
        if config != self._config:
            self._config, self._stabilizer = config, TemporalStabilizer(config)
        return self._stabilizer.apply(prediction)
