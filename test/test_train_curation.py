"""Curation: top-K per class, resumable scoring manifest, pseudo-label shards, classifiers."""

from __future__ import annotations

import copy
import json
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from train_utils import TINY_MODEL, write_folder_dataset

from dap_core.data.datasets import Dap2mFolder, HiddenLabels
from dap_core.train.config import config_from_dict
from dap_core.train.curation import (
    PseudoLabelDataset,
    build_classifier,
    depth_heuristic,
    score_dataset,
    select_top_k,
    write_pseudo_labels,
)
from dap_core.train.discriminator import DepthCritic
from dap_core.train.distributed import DistEnv
from dap_core.train.stages import critic_dataset, curation_summary
from dap_core.train.tasks import SKY_DECISION, build_model, pseudo_label


def rows(*spec):
    return [{"index": i, "scene": s, "score": sc} for i, (s, sc) in enumerate(spec)]


def test_top_k_per_class_by_count_and_fraction():
    r = rows(("indoor", 0.1), ("indoor", 0.9), ("outdoor", 0.5), ("indoor", 0.9), ("outdoor", 0.7))
    # indoor by score: 1 (0.9, lower index wins the tie), 3 (0.9), 0 (0.1); outdoor: 4, 2
    assert select_top_k(r, {"indoor": 2, "outdoor": 1}) == [1, 3, 4]
    assert select_top_k(r, {"indoor": 1.0, "outdoor": 0.5}) == [0, 1, 3, 4]
    assert select_top_k(r, {"indoor": 0}) == []
    with pytest.raises(ValueError, match="unknown classes"):
        select_top_k(r, {"kitchen": 1})


def test_curation_summary_compares_hidden_error_of_both_sides():
    r = rows(("indoor", 0.9), ("indoor", 0.1), ("outdoor", 0.5))
    for row, err in zip(r, (0.1, 0.5, 0.3), strict=True):
        row["hidden_abs_rel"] = err
    s = curation_summary(r, [0, 2])
    assert s["selected_hidden_abs_rel"] == pytest.approx(0.2)
    assert s["rejected_hidden_abs_rel"] == pytest.approx(0.5)
    assert s["indoor_selected"] == 1 and s["outdoor_scored"] == 1


def test_depth_heuristic_classifier():
    pred = torch.full((3, 1, 4, 8), 3.0)
    pred[1] = 20.0  # median beyond the largest room
    within = torch.ones(3, 1, 4, 8)
    within[2, 0, 0, :2] = 0.0  # 2 of 32 pixels of sky = 6 %
    batch = {"scene": ["", "", ""], "name": ["a", "b", "c"]}
    assert depth_heuristic(batch, pred, {100: within}) == ["indoor", "outdoor", "outdoor"]
    assert build_classifier("auto")(
        dict(batch, scene=["outdoor", "", ""]), pred, {100: within}
    ) == [
        "outdoor",
        "outdoor",
        "outdoor",
    ]
    with pytest.raises(ValueError, match="no indoor/outdoor metadata"):
        build_classifier("metadata")(batch, pred, {100: within})
    assert build_classifier("dap_core.train.curation:depth_heuristic") is depth_heuristic
    with pytest.raises(ValueError, match="unknown scene classifier"):
        build_classifier("magic")


class CountingDataset(HiddenLabels):
    def __init__(self, dataset):
        super().__init__(dataset)
        self.reads = []

    def __getitem__(self, index):
        self.reads.append(index)
        return super().__getitem__(index)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = write_folder_dataset(tmp_path_factory.mktemp("data"), 5)
    cfg = config_from_dict({"model": TINY_MODEL, "data": {"size": [32, 64]}})
    labeler = build_model(cfg).eval()
    critic = DepthCritic(channels=8, layers=2, use_rgb=False, max_range_m=100.0)
    return root, labeler, critic


def test_scoring_resumes_after_an_interrupted_manifest(tmp_path, tiny):
    root, labeler, critic = tiny

    def score(dataset, directory):
        return score_dataset(
            labeler,
            critic,
            dataset,
            directory,
            env=DistEnv(),
            device=torch.device("cpu"),
            batch_size=2,
        )

    full = CountingDataset(Dap2mFolder(root, size=(32, 64)))
    reference = score(full, tmp_path / "a")
    assert [r["index"] for r in reference] == [0, 1, 2, 3, 4]
    assert all(0 < r["score"] < 1 and r["hidden_abs_rel"] > 0 for r in reference)
    # A run killed after two samples, in the middle of writing the third line:
    part = tmp_path / "b" / "manifest.rank0.jsonl"
    part.parent.mkdir()
    # key.json is written before the first row, so a killed run has it.
    (part.parent / "key.json").write_text((tmp_path / "a" / "key.json").read_text())
    part.write_text("".join(json.dumps(r) + "\n" for r in reference[:2]) + '{"index": 2, "sc')
    resumed_ds = CountingDataset(Dap2mFolder(root, size=(32, 64)))
    resumed = score(resumed_ds, tmp_path / "b")
    assert sorted(resumed_ds.reads) == [2, 3, 4]  # scored only what was missing
    assert [r["index"] for r in resumed] == [0, 1, 2, 3, 4]
    for a, b in zip(reference, resumed, strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)
    merged = (tmp_path / "b" / "manifest.jsonl").read_text().splitlines()
    assert len(merged) == 5


def test_pseudo_label_shards_hold_the_labelers_output(tmp_path, tiny):
    root, labeler, _ = tiny
    source = HiddenLabels(Dap2mFolder(root, size=(32, 64)))
    out = write_pseudo_labels(
        labeler,
        source,
        [4, 0, 2],
        tmp_path / "p",
        env=DistEnv(),
        device=torch.device("cpu"),
        batch_size=2,
        shard_size=2,
    )
    assert sorted(p.name for p in out.glob("shard_*")) == [
        "shard_00000.json",
        "shard_00000.npy",
        "shard_00001.json",
        "shard_00001.npy",
    ]
    ds = PseudoLabelDataset(out, source)
    assert len(ds) == 3
    expected, _, _ = pseudo_label(labeler, torch.stack([source[i]["rgb"] for i in (0, 2, 4)]))
    for pos in range(3):
        item = ds[pos]
        assert item["valid"].all() and item["labeled"] and item["domain"] == "pseudo"
        # float16 storage: ~1e-3 relative; +inf sky survives
        torch.testing.assert_close(item["range_m"], expected[pos], rtol=2e-3, atol=1e-3)
    # Resumable per shard: a complete shard is not rewritten, a missing one is.
    kept = (out / "shard_00000.npy").stat().st_mtime_ns
    (out / "shard_00001.json").unlink()
    write_pseudo_labels(
        labeler,
        source,
        [4, 0, 2],
        out,
        env=DistEnv(),
        device=torch.device("cpu"),
        batch_size=2,
        shard_size=2,
    )
    assert (out / "shard_00000.npy").stat().st_mtime_ns == kept
    assert (out / "shard_00001.json").is_file()


def test_a_labeler_labels_larger_panoramas_at_its_own_input_size(tiny):
    _, labeler, _ = tiny  # trained size 32x64
    rgb = torch.rand(2, 3, 64, 128, generator=torch.Generator().manual_seed(0))
    seen = []
    hook = labeler.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[-2:]))
    try:
        label, raw, within = pseudo_label(labeler, rgb)
        _, own_raw, own_within = pseudo_label(
            labeler, F.interpolate(rgb, size=(32, 64), mode="bilinear", antialias=True)
        )
    finally:
        hook.remove()
    assert seen == [(32, 64), (32, 64)]  # never run at twice its size
    assert label.shape == raw.shape == within.shape == (2, 1, 64, 128)
    up = partial(F.interpolate, size=(64, 128), mode="bilinear", align_corners=False)
    torch.testing.assert_close(raw, up(own_raw))
    torch.testing.assert_close(within, up(own_within))
    # The sky gate is decided on the resized probability, so it stays a clean +inf / finite split.
    assert torch.equal(torch.isinf(label), within < SKY_DECISION)


def test_critic_fakes_rgb_critic_gets_mismatched_labeled_pairs():
    # Each "image" is filled with its own index, so the pairing can be read off the pixels.
    labeled = [{"rgb": torch.full((3, 2, 4), float(i))} for i in range(16)]
    unlabeled = [{"rgb": torch.full((3, 2, 4), 100.0 + i)} for i in range(5)]

    def section(**kw):
        return config_from_dict({"discriminator": kw}).discriminator

    rgb_critic = critic_dataset(section(use_rgb=True, fakes="labeled"), labeled, unlabeled)
    partners = [int(rgb_critic[i]["fake_rgb"][0, 0, 0]) for i in range(16)]
    # fakes come from the labeled set, never from the panorama itself, and every labeled
    # panorama serves as a fake exactly once (a permutation without fixed points)
    assert all(p != i for i, p in enumerate(partners))
    assert sorted(partners) == list(range(16))
    assert all(int(rgb_critic[i]["rgb"][0, 0, 0]) == i for i in range(16))

    depth_critic = critic_dataset(section(use_rgb=False, fakes="labeled"), labeled, unlabeled)
    assert depth_critic is labeled  # predictions of the same images, no partner image
    cross = critic_dataset(section(use_rgb=False, fakes="unlabeled"), labeled, unlabeled)
    assert all(float(cross[i]["fake_rgb"][0, 0, 0]) >= 100.0 for i in range(16))


def _label(labeler, source, indices, out, shard_size=2):
    return write_pseudo_labels(
        labeler,
        source,
        indices,
        out,
        env=DistEnv(),
        device=torch.device("cpu"),
        batch_size=2,
        shard_size=shard_size,
    )


def test_pseudo_labels_of_another_selection_are_rebuilt_not_reused(tmp_path, tiny):
    root, labeler, _ = tiny
    source = HiddenLabels(Dap2mFolder(root, size=(32, 64)))
    out = _label(labeler, source, [0, 1, 3, 4], tmp_path / "p")
    # Stage 2 again with another top_k: another selection in the same directory.
    _label(labeler, source, [0, 2, 3], out)
    data = PseudoLabelDataset(out, source)
    assert sorted(i for _, _, i in data.entries) == [0, 2, 3]
    assert not (out / "shard_00002.json").exists()
    expected, _, _ = pseudo_label(labeler, source[2]["rgb"][None])
    got = next(data[p] for p in range(len(data)) if data.entries[p][2] == 2)
    # float16 shards: relative step 2^-11 (< 5e-4) of the range.
    torch.testing.assert_close(got["range_m"], expected[0].float(), rtol=1e-3, atol=1e-3)


def test_pseudo_labels_of_another_labeler_are_rebuilt(tmp_path, tiny):
    root, labeler, _ = tiny
    source = HiddenLabels(Dap2mFolder(root, size=(32, 64)))
    out = _label(labeler, source, [0, 1], tmp_path / "p")
    made = np.load(out / "shard_00000.npy")
    np.save(out / "shard_00000.npy", np.zeros_like(made))  # tells a reused shard apart
    _label(labeler, source, [0, 1], out)
    assert not np.load(out / "shard_00000.npy").any()  # same labeler, same selection: reused
    other = copy.deepcopy(labeler)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05)
    _label(other, source, [0, 1], out)
    assert np.load(out / "shard_00000.npy").any()  # another labeler: relabelled


def test_scores_of_another_critic_are_not_reused(tmp_path, tiny):
    root, labeler, critic = tiny
    dataset = Dap2mFolder(root, size=(32, 64))

    def score(judge):
        return score_dataset(
            labeler, judge, dataset, tmp_path / "c", env=DistEnv(), device=torch.device("cpu")
        )

    first = score(critic)
    other = copy.deepcopy(critic)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1.0)
    second = score(other)
    assert [r["score"] for r in first] != [r["score"] for r in second]
