"""The node runs only the range-mask head it publishes, and switches heads at run time.

An injected predictor factory records which thresholds the node asked it for; the node runs
in this process (its own rclpy context) and is fed frames through `DapNode.process`, so the
test sees exactly when predictors are built. One check loads the real runtime on the tiny
fixture weights and confirms that a head's Predictor computes that mask and no other.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from rclpy.parameter import Parameter
from ros_harness import domain_id, local_context, wait_until
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from dap_core.model import save_model
from dap_core.prediction import Prediction
from dap_ros import conversions as conv
from dap_ros.predictors import HeadPredictors

pytestmark = pytest.mark.ros

H, W = 16, 32
HEADS = (10, 20, 50, 100)


class HeadModel:
    """Stand-in for a Predictor built for one head: its mask marks the left half of the image."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.backend = f"head-{threshold}"
        self.calls = 0
        self.threads: set[str] = set()

    def predict(self, rgb: np.ndarray) -> Prediction:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        height, width = rgb.shape[:2]
        mask = np.zeros((height, width), np.float32)
        mask[:, : width // 2] = 1.0
        return Prediction(np.full((height, width), 5.0, np.float32), {self.threshold: mask})


class RecordingFactory:
    def __init__(self) -> None:
        self.asked: list[int] = []
        self.threads: list[str] = []
        self.models: dict[int, HeadModel] = {}

    def __call__(self, threshold: int) -> HeadModel:
        self.asked.append(threshold)
        self.threads.append(threading.current_thread().name)
        self.models[threshold] = HeadModel(threshold)
        return self.models[threshold]


@pytest.fixture
def context():
    with local_context(domain_id(__name__)) as ctx:
        yield ctx


@pytest.fixture
def rig(context):
    """(RecordingFactory, node) with the 20 m head configured; the node is destroyed after."""
    factory = RecordingFactory()
    node = make_node(context, factory, threshold=20)
    yield factory, node
    node.destroy_node()


def make_node(context, factory, threshold: int = 20, **kwargs):
    from dap_ros.node import DapNode

    overrides = [
        Parameter("mask_threshold", value=threshold),
        Parameter("process_without_subscribers", value=True),
    ]
    return DapNode(
        predictor_factory=factory,
        mask_heads=kwargs.pop("mask_heads", HEADS),
        context=context,
        parameter_overrides=overrides,
        **kwargs,
    )


def frame() -> Image:
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    return conv.rgb_to_msg(rgb, Header(frame_id="pano"))


def test_the_node_asks_for_the_configured_head_only(rig):
    factory, node = rig
    assert factory.asked == [20]  # built at start: bad weights stop the start
    assert node.process(frame())
    assert factory.models[20].calls == 1
    # The published mask is the head's output (left half), not a range comparison: every
    # range is 5 m, which is within 20 m everywhere.
    mask = conv.image_to_numpy(node._mask_out.msg)
    assert (mask[:, : W // 2] == 255).all() and (mask[:, W // 2 :] == 0).all()
    assert np.isposinf(conv.image_to_numpy(node._depth_out.msg)[:, W // 2 :]).all()


def test_a_new_threshold_is_built_in_the_worker_once_and_kept(rig):
    factory, node = rig
    result = node.set_parameters([Parameter("mask_threshold", value=50)])[0]
    assert result.successful, result.reason
    assert factory.asked == [20]  # the parameter callback builds nothing
    assert node.process(frame())
    assert factory.asked == [20, 50] and factory.models[50].calls == 1
    assert node.backend == "head-50"
    node.set_parameters([Parameter("mask_threshold", value=20)])
    assert node.process(frame())
    node.set_parameters([Parameter("mask_threshold", value=50)])
    assert node.process(frame())
    assert factory.asked == [20, 50]  # both kept: switching back builds nothing
    assert (factory.models[20].calls, factory.models[50].calls) == (1, 2)


def test_frames_from_the_subscription_build_and_run_the_head_on_the_worker(rig):
    factory, node = rig
    node.set_parameters([Parameter("mask_threshold", value=10)])
    node._on_image(frame())  # what the subscription callback does: store the frame
    assert wait_until(lambda: 10 in factory.models and factory.models[10].calls == 1, 10.0)
    assert factory.threads[-1] == "dap-worker"  # built on the worker, not in a callback
    assert factory.models[10].threads == {"dap-worker"}


def test_a_threshold_without_a_head_is_refused_with_the_reason(rig):
    factory, node = rig
    result = node.set_parameters([Parameter("mask_threshold", value=30)])[0]
    assert not result.successful
    assert "30 m" in result.reason and "10, 20, 50, 100" in result.reason
    assert node.settings.mask_threshold == 20
    assert factory.asked == [20]


def test_a_start_threshold_without_a_head_stops_the_start(context):
    with pytest.raises(ValueError, match="mask_threshold 30 m has no range-mask head"):
        make_node(context, RecordingFactory(), threshold=30)


def test_a_head_that_fails_to_build_fails_frames_until_asked_again(context):
    factory = RecordingFactory()
    broken = {"on": True}

    def flaky(threshold: int) -> HeadModel:
        if threshold == 50 and broken["on"]:
            raise RuntimeError("export failed")
        return factory(threshold)

    node = make_node(context, flaky, threshold=20)
    try:
        node.set_parameters([Parameter("mask_threshold", value=50)])
        assert not node.process(frame()) and not node.process(frame())
        assert "export failed" in node.stats.last_problem
        assert factory.asked == [20]  # one failed attempt, not one per frame
        broken["on"] = False
        node.set_parameters([Parameter("mask_threshold", value=50)])  # asked again: retried
        assert node.process(frame()) and factory.asked == [20, 50]
    finally:
        node.destroy_node()


def test_a_fixed_predictor_serves_every_threshold():
    model = HeadModel(10)
    heads = HeadPredictors.fixed(model)
    assert heads.heads is None
    heads.check(37)  # unknown heads: any threshold goes (Prediction.within compares the range)
    assert heads.get(10) is model and heads.get(37) is model
    model.mask_thresholds = (10, 20)
    with pytest.raises(ValueError, match="heads: 10, 20 m"):
        HeadPredictors.fixed(model).check(50)


def test_the_runtime_predictor_of_a_head_computes_that_mask_only(official_fixtures, tmp_path):
    from dap_core.model.official import load_official
    from dap_ros.params import Settings
    from dap_ros.predictors import dap_head_predictors

    tiny_layers = (0, 2, 3, 4)  # the fixture model's intermediate_layer_idx
    model = load_official(official_fixtures / "tiny_weights.safetensors", layer_indices=tiny_layers)
    save_model(model, tmp_path)
    settings = Settings.defaults().replaced(
        {"weights": str(tmp_path), "backend": "torch", "threads": 1, "input_height": 32}
    )
    heads = dap_head_predictors(settings)
    assert heads.heads == tuple(model.config.mask_thresholds)
    predictor = heads.get(heads.heads[0])
    assert predictor.mask_thresholds == (heads.heads[0],)
    rgb = np.random.default_rng(1).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    prediction = predictor.predict(rgb)
    assert set(prediction.masks) == {heads.heads[0]}
    assert prediction.range_m.shape == (32, 64)
