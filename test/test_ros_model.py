"""The node with the real model: DAP weights through dap_core.runtime.Predictor.

Uses the tiny official-architecture fixture weights (shared/fixtures/official_dap), imported
and saved as a weights directory (contract 3), served at a 64x128 model input for speed.
Checks that every topic publishes with the right type, encoding and size, and that the range
is metric and REP 117 coded.
"""

from __future__ import annotations

import importlib.util
import math
import os

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from ros_harness import NodeProcess, diagnostics_values, domain_id, ros_client, stamped
from sensor_msgs.msg import Image, LaserScan, PointCloud2

from dap_core.model import save_model
from dap_ros import conversions as conv

pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(
        importlib.util.find_spec("dap_core.runtime") is None,
        reason="dap_core.runtime (the Predictor) is not in this tree yet",
    ),
]

H, W = 128, 256
TINY_LAYERS = (0, 2, 3, 4)  # the fixture model's intermediate_layer_idx
WAIT_S = 60.0  # model loading (torch, weights) on a busy 2-core machine


@pytest.fixture(scope="module")
def tiny_weights(official_fixtures, tmp_path_factory):
    from dap_core.model.official import load_official

    model = load_official(official_fixtures / "tiny_weights.safetensors", layer_indices=TINY_LAYERS)
    directory = tmp_path_factory.mktemp("tiny_dap")
    save_model(model, directory)
    return directory, model.config


@pytest.mark.slow  # loads torch and the model in the node process: ~20 s on 2 busy cores
def test_every_topic_publishes_with_the_real_model(tiny_weights, tmp_path):
    weights, config = tiny_weights
    namespace = f"/model{os.getpid()}"
    domain = domain_id(__name__)
    params = {
        "weights": str(weights),
        "backend": "torch",
        "threads": 1,
        "input_height": 64,
        "cloud_stride": 4,
        "scan_beams": 90,
    }
    outputs = {
        "depth/image": Image,
        "range_mask/image": Image,
        "points": PointCloud2,
        "scan": LaserScan,
        "depth/colored": Image,
    }
    node = NodeProcess(domain, tmp_path / "model.log", params, namespace=namespace)
    with node, ros_client(domain) as client:
        publisher = client.publisher(Image, f"{namespace}/image")
        inbox = {name: client.inbox(kind, f"{namespace}/{name}") for name, kind in outputs.items()}
        diagnostics = client.inbox(DiagnosticArray, "/diagnostics", qos=10)
        assert node.wait_for_log("ready:", WAIT_S), node.log()
        assert client.wait_until(lambda: publisher.get_subscription_count() > 0, WAIT_S)
        rgb = np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)
        got = {}
        for sec in range(500, 505):  # best effort: resend until one frame came out everywhere
            publisher.publish(conv.rgb_to_msg(rgb, stamped(Image(), sec).header))
            got = {name: box.with_stamp(sec, 0, WAIT_S / 5) for name, box in inbox.items()}
            if all(got.values()):
                break
        assert all(got.values()), (sorted(k for k, v in got.items() if v is None), node.log())
        report = diagnostics.wait_for(lambda m: m[-1] if m else None, WAIT_S)
        assert node.alive(), node.log()

    depth = conv.image_to_numpy(got["depth/image"])
    assert (got["depth/image"].encoding, depth.shape) == ("32FC1", (H, W))
    finite = depth[np.isfinite(depth)]
    assert finite.size > 0 and finite.min() > 0 and finite.max() <= config.max_range_m
    assert not np.isnan(depth).any()  # the model always gives a range: nothing is invalid
    mask = conv.image_to_numpy(got["range_mask/image"])
    assert mask.shape == (H, W) and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask == 0, np.isposinf(depth))  # outside the mask = no return
    cloud = got["points"]
    assert (cloud.height, cloud.width, cloud.point_step) == (H // 4, W // 4, 16)
    scan = got["scan"]
    assert len(scan.ranges) == 90 and scan.angle_increment == pytest.approx(2 * math.pi / 90)
    colored = got["depth/colored"]
    assert (colored.encoding, colored.width) == ("rgb8", W)
    stamps = {(m.header.stamp.sec, m.header.frame_id) for m in got.values()}
    assert len(stamps) == 1 and stamps.pop()[1] == "pano_link"
    assert diagnostics_values(report)["backend"] == "torch"
