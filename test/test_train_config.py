"""Stage configs, the resumable sample stream, and evaluation tables."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch
from train_utils import TINY_MODEL, write_folder_dataset

from dap_core.train.config import config_from_dict, dump_config, load_config
from dap_core.train.data import StreamSampler
from dap_core.train.distributed import DistEnv
from dap_core.train.evaluate import evaluate_model, format_table
from dap_core.train.tasks import build_augment, build_model
from dap_core.train.trainer import lr_factor

SHIPPED = [
    "training/stage1.yaml",
    "training/stage2.yaml",
    "training/stage3.yaml",
    "training/tiny/stage1.yaml",
    "training/tiny/stage2.yaml",
    "training/tiny/stage3.yaml",
    "training/shipped/stage1.yaml",
    "training/shipped/stage1b.yaml",
    "training/shipped/stage1c.yaml",
    "training/shipped/stage2.yaml",
    "training/shipped/stage3.yaml",
    "training/shipped/stage2r2.yaml",
    "training/shipped/stage3r2.yaml",
    "training/shipped/stage3h.yaml",
]


@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_configs_load(repo_root, path):
    cfg = load_config(repo_root / path)
    assert cfg.stage == int(re.search(r"stage(\d)\w*\.yaml$", path).group(1))
    assert all(s % 16 == 0 for s in cfg.data.size)


@pytest.mark.parametrize("path", ["training/shipped/stage3h.yaml", "training/tiny/stage2.yaml"])
def test_a_runs_resolved_config_reads_back_as_the_same_config(repo_root, tmp_path, path):
    cfg = load_config(repo_root / path)
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(cfg))
    again = load_config(saved)
    assert again.source == str(saved)
    assert {**again.to_dict(), "source": None} == {**cfg.to_dict(), "source": None}
    assert saved.read_text().startswith(f"# resolved from {repo_root / path}\n")


def test_base_merge_overrides_and_strictness(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "stage: 1\nschedule: {batch_size: 3, max_steps: 10}\noptim: {lr_decoder: 1.0e-4}\n"
    )
    (tmp_path / "b.yaml").write_text(
        "base: a.yaml\nstage: 2\nprevious: x\nschedule: {max_steps: 20}\n"
    )
    cfg = load_config(tmp_path / "b.yaml", ["optim.lr_backbone=2e-4", "seed=7"])
    assert cfg.schedule.batch_size == 3 and cfg.schedule.max_steps == 20  # merged per section
    assert cfg.optim.lr_backbone == 2e-4 and isinstance(cfg.optim.lr_backbone, float)
    assert cfg.optim.lr_decoder == 1e-4 and cfg.seed == 7
    with pytest.raises(ValueError, match="unknown key"):
        load_config(tmp_path / "a.yaml", ["schedule.max_step=3"])
    with pytest.raises(ValueError, match="needs 'previous'"):
        config_from_dict({"stage": 3})
    with pytest.raises(ValueError, match="use_rgb: false"):
        config_from_dict({"discriminator": {"use_rgb": True, "fakes": "unlabeled"}})
    with pytest.raises(ValueError, match="expected a number"):
        config_from_dict({"optim": {"lr_decoder": "fast"}})
    with pytest.raises(ValueError, match=r"optim\.decay"):
        config_from_dict({"optim": {"decay": "linear"}})
    with pytest.raises(ValueError, match="camera_effects"):
        config_from_dict({"data": {"camera_effects": 1.5}})


def test_learning_rate_warmup_then_cosine_to_the_floor():
    optim = config_from_dict(
        {"optim": {"warmup_steps": 10, "decay": "cosine", "min_lr_ratio": 0.1}}
    ).optim
    total = 111  # steps 0..110: warm-up 0..9, cosine over 10..110
    assert lr_factor(optim, 0, total) == pytest.approx(0.1)
    assert lr_factor(optim, 9, total) == pytest.approx(1.0)
    assert lr_factor(optim, 10, total) == pytest.approx(1.0)
    assert lr_factor(optim, 60, total) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert lr_factor(optim, 110, total) == pytest.approx(0.1)
    factors = [lr_factor(optim, s, total) for s in range(10, total)]
    assert all(a >= b for a, b in itertools.pairwise(factors))
    constant = config_from_dict({"optim": {"warmup_steps": 4}}).optim
    assert [lr_factor(constant, s, 50) for s in (0, 3, 4, 49)] == [0.25, 1.0, 1.0, 1.0]


def test_camera_effects_reach_the_augmentation_only_when_asked():
    assert build_augment(config_from_dict({"data": {"camera_effects": 0.0}})).camera is None
    data = {"camera_effects": 0.6, "camera_shading_ev": 1.5}
    camera = build_augment(config_from_dict({"data": data})).camera
    assert camera is not None and camera.p == 0.6 and camera.shading_ev == 1.5
    assert camera.lamps_p == 0.0  # lamp relighting is opt-in
    lamps = build_augment(config_from_dict({"data": {**data, "camera_lamps": 0.5}})).camera
    assert lamps.lamps_p == 0.5
    with pytest.raises(ValueError, match="camera_lamps"):
        config_from_dict({"data": {"camera_lamps": 1.5}})


def test_stream_shards_ranks_and_resumes_exactly():
    single = StreamSampler(10, 4, DistEnv(), seed=3)
    r0 = StreamSampler(10, 2, DistEnv(0, 0, 2), seed=3)
    r1 = StreamSampler(10, 2, DistEnv(1, 1, 2), seed=3)
    for step in range(6):
        # two ranks of batch 2 read exactly the global batch of 4, rank 0 first
        assert r0.batch(step) + r1.batch(step) == single.batch(step)
    # every epoch is a permutation: 10 samples, 4 per step -> epoch 0 = positions 0..9
    seen = [i for step in range(3) for i, _ in single.batch(step)][:10]
    assert sorted(seen) == list(range(10))
    # seeds differ per position, also for a repeated index in the next epoch
    seeds = [s for step in range(5) for _, s in single.batch(step)]
    assert len(set(seeds)) == len(seeds)
    resumed = StreamSampler(10, 4, DistEnv(), seed=3, start_step=4)
    assert next(iter(resumed)) == single.batch(4)


def test_evaluate_model_matches_metrics_by_hand(tmp_path):
    from dap_core.data.datasets import Dap2mFolder
    from dap_core.metrics import depth_metrics
    from dap_core.train.tasks import predict_range

    root = write_folder_dataset(tmp_path / "d", 3)
    ds = Dap2mFolder(root, size=(32, 64))
    model = build_model(config_from_dict({"model": TINY_MODEL, "data": {"size": [32, 64]}}))
    result = evaluate_model(model, ds, batch_size=2)
    with torch.no_grad():
        pred, _ = predict_range(model.eval(), torch.stack([ds[i]["rgb"] for i in range(3)]))
    by_hand = [depth_metrics(pred[i, 0], ds[i]["range_m"][0], max_range_m=100.0) for i in range(3)]
    assert result["images"] == 3
    assert result["abs_rel"] == pytest.approx(np.mean([m["abs_rel"] for m in by_hand]), rel=1e-5)
    assert result["rmse"] == pytest.approx(np.mean([m["rmse"] for m in by_hand]), rel=1e-5)
    assert "abs_rel@10m" in result and "mask_iou@100m" in result
    table = format_table({"folder": result})
    assert table.splitlines()[0].startswith("| dataset | images | abs_rel | rmse (m)")
    assert "| folder | 3 |" in table
    official = evaluate_model(model, ds, batch_size=2, official=True)
    # official "rmse" is the mean absolute error in units of 100 m
    assert official["rmse"] == pytest.approx(official["abs_"], rel=1e-5)


def test_unknown_top_level_key_lists_the_sections_too():
    with pytest.raises(ValueError, match="unknown key") as caught:
        config_from_dict({"optimiser": {"lr": 1e-3}})
    message = str(caught.value)
    for section in ("data", "schedule", "optim", "eval"):
        assert f"'{section}'" in message
