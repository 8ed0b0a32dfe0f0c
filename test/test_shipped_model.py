"""The shipped weights (weights/dap_small): intact, within size, and actually using the image.

Accuracy is measured on held-out synthetic panoramas (the evaluation seeds, never trained on)
at the model input, against two references computed here: an image-blind prior (the per-pixel
median log range of 64 training panoramas, i.e. the best a model can do that ignores the image)
and the numbers in weights/dap_small/README.md, with margins for this smaller sample.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dap_core.data.synthetic import SyntheticPanoramaDataset
from dap_core.metrics import depth_metrics, mask_metrics
from dap_core.model import load_model
from dap_core.train.tasks import predict_range

EVAL_SEED_OFFSET = 900_000  # the held-out seeds of the training configs' evaluation
N_EVAL = 16  # panoramas per domain (8 indoor, 8 outdoor)
# Measured on these 16 + 16 panoramas (harder than the 64 of the README table): AbsRel 0.324
# sim and 0.389 real_like against the prior's 1.067, mask IoU 0.979 / 0.960. The bounds leave
# about 10 % for float noise across thread counts and catch any real regression of the file or
# of preprocessing (earlier shipped weights scored 0.338 / 0.415, which these bounds still
# admit, then 0.398 / 0.540 and 1.4-1.6 on real_like, which they do not).
MAX_ABS_REL_VS_PRIOR = 0.42
MAX_ABS_REL = {"sim": 0.36, "real_like": 0.43}
MIN_MASK_IOU = 0.9


@pytest.fixture(scope="module")
def shipped(repo_root):
    return load_model(repo_root / "weights" / "dap_small").eval()


@pytest.fixture(scope="module")
def image_blind_prior(shipped):
    height, width = shipped.config.input_size
    train = SyntheticPanoramaDataset(64, height, width, "sim", seed_offset=0)
    logs = [
        np.log(np.clip(np.nan_to_num(train[i]["range_m"][0].numpy(), posinf=100.0), 0.1, 100.0))
        for i in range(len(train))
    ]
    return np.exp(np.median(np.stack(logs), axis=0))


def test_weights_are_finite_small_and_shaped_as_documented(repo_root, shipped):
    files = sorted((repo_root / "weights" / "dap_small").iterdir())
    assert sum(f.stat().st_size for f in files) <= 25 * 2**20
    assert all(torch.isfinite(t).all() for t in shipped.state_dict().values())
    assert shipped.config.input_size == (96, 192)
    assert shipped.config.mask_thresholds == (100,)


@pytest.mark.parametrize("domain", ["sim", "real_like"])
def test_beats_the_image_blind_prior_and_finds_the_sky(shipped, image_blind_prior, domain):
    height, width = shipped.config.input_size
    data = SyntheticPanoramaDataset(N_EVAL, height, width, domain, seed_offset=EVAL_SEED_OFFSET)
    model_abs_rel, prior_abs_rel, ious = [], [], []
    for i in range(len(data)):
        item = data[i]
        with torch.no_grad():
            pred, masks = predict_range(shipped, item["rgb"][None], (100,))
        gt, valid = item["range_m"][0].numpy(), item["valid"][0].numpy()
        model_abs_rel.append(
            depth_metrics(pred[0, 0].numpy(), gt, valid, max_range_m=100.0)["abs_rel"]
        )
        prior_abs_rel.append(
            depth_metrics(image_blind_prior, gt, valid, max_range_m=100.0)["abs_rel"]
        )
        ious.append(mask_metrics(masks[100][0, 0].numpy(), gt, valid, threshold_m=100)["iou"])
    model, prior = float(np.mean(model_abs_rel)), float(np.mean(prior_abs_rel))
    print(
        f"{domain}: AbsRel {model:.3f} (image-blind prior {prior:.3f}), 100 m mask IoU "
        f"{np.mean(ious):.3f}"
    )
    assert math.isfinite(model)
    assert model <= MAX_ABS_REL_VS_PRIOR * prior
    assert model <= MAX_ABS_REL[domain]
    assert float(np.mean(ious)) >= MIN_MASK_IOU
