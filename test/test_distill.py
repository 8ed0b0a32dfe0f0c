"""`dap distill` with the shipped model as teacher and a tiny student, on tiny panoramas."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dap_core.distill import LabelCache, run_distill, teacher_key
from dap_core.train.config import load_config
from dap_core.train.distributed import DistEnv

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGES = 6


@pytest.fixture(scope="module")
def panoramas(tmp_path_factory):
    from dap_core.data.synthetic import generate_panorama

    root = tmp_path_factory.mktemp("panoramas")
    for i in range(IMAGES):
        sample = generate_panorama(700_000 + i, 32, 64, domain="real_like")
        cv2.imwrite(str(root / f"p{i}.png"), cv2.cvtColor(sample.rgb, cv2.COLOR_RGB2BGR))
    return root


def _cfg(repo_root, out, steps=3):
    return load_config(
        repo_root / "training" / "distill" / "tiny.yaml",
        [f"output_dir={out}", f"schedule.max_steps={steps}", "curation.batch_size=2"],
    )


def _env() -> DistEnv:
    return DistEnv()  # one process


def test_teacher_labels_once_and_student_loads_in_the_runtime_and_node(
    repo_root, tmp_path, panoramas
):
    teacher = repo_root / "weights" / "dap_small"
    cache = tmp_path / "labels"
    first = run_distill(
        _cfg(repo_root, tmp_path / "a"), teacher, panoramas, _env(), cache_dir=cache
    )
    assert (first.labeled, first.cached, first.steps) == (IMAGES, 0, 3)
    # A second student on the same images: the teacher does not run again.
    second = run_distill(
        _cfg(repo_root, tmp_path / "b", steps=1), teacher, panoramas, _env(), cache_dir=cache
    )
    assert (second.labeled, second.cached) == (0, IMAGES)

    from dap_core.runtime import Predictor
    from dap_ros.params import Settings
    from dap_ros.predictors import dap_head_predictors

    student = tmp_path / "a" / "model"
    rgb = np.zeros((32, 64, 3), np.uint8)
    prediction = Predictor(student, backend="torch", warmup=False).predict(rgb)
    assert prediction.range_m.shape == (32, 64) and np.isfinite(prediction.range_m).all()
    settings = Settings.defaults().replaced({"weights": str(student), "backend": "torch"})
    node_predictor = dap_head_predictors(settings).get(100)  # what the node builds
    assert node_predictor.predict(rgb).range_m.shape == (32, 64)


def test_a_run_killed_while_labelling_resumes_with_the_rest(
    repo_root, tmp_path, panoramas, monkeypatch
):
    import dap_core.train.tasks as tasks

    real = tasks.pseudo_label
    calls = []

    def dies_on_second_batch(model, rgb):
        calls.append(len(rgb))
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill between two batches of 2
        return real(model, rgb)

    monkeypatch.setattr(tasks, "pseudo_label", dies_on_second_batch)
    teacher = repo_root / "weights" / "dap_small"
    cfg = _cfg(repo_root, tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_distill(cfg, teacher, panoramas, _env())
    monkeypatch.setattr(tasks, "pseudo_label", real)
    report = run_distill(cfg, teacher, panoramas, _env(), resume=True)
    assert (report.labeled, report.cached) == (IMAGES - 2, 2)
    assert not list((tmp_path / "run" / "labels").rglob(".*.tmp"))  # no half-written label


def test_teacher_key_follows_the_weights_and_a_corrupt_label_is_one_clear_error(
    repo_root, tmp_path
):
    copy = tmp_path / "teacher"
    shutil.copytree(repo_root / "weights" / "dap_small", copy)
    before = teacher_key(copy, (96, 192))
    assert teacher_key(copy, (128, 256)) != before
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
    assert teacher_key(copy, (96, 192)) != before
    cache = LabelCache(tmp_path / "labels", before)
    cache.put("ab" * 12, np.full((4, 8), np.inf, np.float32), np.zeros((4, 8)))
    range_m, within = cache.get("ab" * 12)
    assert np.isposinf(range_m).all() and (within == 0).all()
    cache.path("ab" * 12).write_bytes(b"not a label")
    with pytest.raises(ValueError, match="unreadable"):
        cache.get("ab" * 12)


def test_cli_distils_a_bag_topic(repo_root, tmp_path):
    sys.path.insert(0, str(repo_root / "test"))
    from bag_helpers import write_bag

    from dap_core.data.synthetic import generate_panorama

    frames = [generate_panorama(800_000 + i, 32, 64, domain="real_like").rgb for i in range(4)]
    bag = write_bag(tmp_path / "bag", frames, compressed="png")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "dap_core.cli", "distill", "--config"]
    command += [str(repo_root / "training" / "distill" / "tiny.yaml")]
    command += ["--teacher", str(repo_root / "weights" / "dap_small"), "--bag", str(bag)]
    command += ["--set", f"output_dir={out}", "--set", "schedule.max_steps=2"]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=repo_root,
    )
    assert done.returncode == 0, done.stderr
    assert "4 panoramas from" in done.stdout
    assert (out / "model" / "model.safetensors").is_file()


def test_labelling_and_training_run_on_the_configs_thread_count(
    repo_root, tmp_path, panoramas, monkeypatch
):
    import torch

    import dap_core.train.tasks as tasks

    real, seen = tasks.pseudo_label, []

    def recording(model, rgb):
        seen.append(torch.get_num_threads())
        return real(model, rgb)

    monkeypatch.setattr(tasks, "pseudo_label", recording)
    torch.set_num_threads(2)  # what torch picks on this machine; the config says 1
    try:
        run_distill(
            _cfg(repo_root, tmp_path / "run", steps=1),
            repo_root / "weights" / "dap_small",
            panoramas,
            _env(),
        )
        assert seen and set(seen) == {1}
    finally:
        torch.set_num_threads(1)


def test_a_smaller_student_keeps_the_first_last_and_evenly_spaced_blocks_and_first_channels(
    repo_root,
):
    import torch

    from dap_core.distill import init_from_teacher, student_block_sources
    from dap_core.model import DAP, load_model

    teacher = load_model(repo_root / "weights" / "dap_small")
    config = teacher.config.replace(
        depth=4, layer_indices=(0, 1, 2, 3), head_features=16, head_hidden=8
    )
    student = DAP(config)
    copied, total = init_from_teacher(student, teacher)
    assert copied == total  # every tensor is as wide as the teacher's or narrower
    # Block 0 is always kept: without it the shipped model's head inputs move 3-4x further.
    assert student_block_sources(4, 8) == [0, 2, 5, 7]
    assert student_block_sources(5, 8) == [0, 2, 4, 5, 7]  # 1.75, 3.5, 5.25 round half up
    assert student_block_sources(1, 8) == [7] and student_block_sources(8, 8) == list(range(8))
    for mine, theirs in zip(student.backbone.blocks, [0, 2, 5, 7], strict=True):
        assert torch.equal(mine.mlp.fc1.weight, teacher.backbone.blocks[theirs].mlp.fc1.weight)
    assert torch.equal(
        student.backbone.patch_embed.proj.weight, teacher.backbone.patch_embed.proj.weight
    )
    assert torch.equal(
        student.heads["mask_100"].projects[3].weight, teacher.heads["mask_100"].projects[3].weight
    )
    # 16-wide fusion convolutions take the teacher's first 16 channels in and out.
    fusion = teacher.heads["depth"].scratch.refinenet1.resConfUnit1.conv1.weight[:16, :16]
    assert torch.equal(student.heads["depth"].scratch.refinenet1.resConfUnit1.conv1.weight, fusion)
    wider = DAP(teacher.config.replace(head_features=64))
    before = wider.heads["depth"].scratch.layer1_rn.weight.clone()
    init_from_teacher(wider, teacher)  # wider than the teacher: left as initialised
    assert torch.equal(wider.heads["depth"].scratch.layer1_rn.weight, before)
    with pytest.raises(ValueError, match="cannot map"):
        student_block_sources(9, 8)


def test_a_student_starts_from_the_teacher_blocks_it_is_given(repo_root):
    """distill.teacher_blocks: which teacher blocks the student's blocks copy, e.g. the first
    block, which an evenly spaced choice drops and which the teacher's features need most."""
    import torch

    from dap_core.distill import init_from_teacher
    from dap_core.model import DAP, load_model

    teacher = load_model(repo_root / "weights" / "dap_small")
    student = DAP(teacher.config.replace(depth=4, layer_indices=(0, 1, 2, 3)))
    copied, total = init_from_teacher(student, teacher, blocks=(0, 3, 4, 7))
    assert copied == total
    for mine, theirs in zip(student.backbone.blocks, (0, 3, 4, 7), strict=True):
        assert torch.equal(mine.attn.qkv.weight, teacher.backbone.blocks[theirs].attn.qkv.weight)
    for blocks, why in (
        ((0, 3, 7), "4 blocks"),
        ((0, 4, 3, 7), "increasing"),
        ((0, 3, 4, 8), "teacher has 8"),
    ):
        with pytest.raises(ValueError, match=why):
            init_from_teacher(student, teacher, blocks=blocks)
    cfg = load_config(
        repo_root / "training" / "distill" / "tiny.yaml", ["distill.teacher_blocks=[0,3,4,7]"]
    )
    assert cfg.distill.teacher_blocks == (0, 3, 4, 7)
    with pytest.raises(ValueError, match=r"distill\.teacher_blocks"):
        load_config(
            repo_root / "training" / "distill" / "tiny.yaml", ["distill.teacher_blocks=[0,x]"]
        )


def test_teacher_agreement_is_absrel_on_the_teachers_within_pixels_and_mask_iou():
    from dap_core.distill import teacher_agreement
    from dap_core.prediction import Prediction

    h, w = 4, 8
    within = np.ones((h, w), np.float32)
    within[:, w // 2 :] = 0.0  # the teacher: right half beyond 100 m
    teacher = Prediction(np.full((h, w), 10.0, np.float32), {100: within})
    student_mask = np.ones((h, w), np.float32)
    student_mask[:, 3 * w // 4 :] = 0.0  # the student: only the right quarter beyond
    student = Prediction(np.full((h, w), 11.0, np.float32), {100: student_mask})
    agree = teacher_agreement(student, teacher)
    # 11 and 10 are exact in float32 and the mean runs in float64: 0.1 to rounding (1e-12).
    assert agree["abs_rel"] == pytest.approx(0.1, abs=1e-12)
    assert agree["mask_iou"] == pytest.approx((h * w / 2) / (h * w * 3 / 4))
    assert agree["n_pixels"] == h * w // 2
    sky = Prediction(teacher.range_m, {100: np.zeros((h, w), np.float32)})
    assert teacher_agreement(student, sky)["abs_rel"] is None  # no pixel to compare, no NaN


@pytest.mark.parametrize("name", ["small", "narrow", "shared"])
def test_the_benchmark_students_are_smaller_than_the_shipped_teacher(repo_root, name):
    """training/distill/{small,narrow,shared}.yaml load, build, and really are smaller students."""
    from dap_core.model import load_model
    from dap_core.train.tasks import build_model

    cfg = load_config(repo_root / "training" / "distill" / f"{name}.yaml")
    student = build_model(cfg)
    teacher = load_model(repo_root / "weights" / "dap_small")
    assert tuple(cfg.data.size) == tuple(teacher.config.input_size)  # the teacher's input
    assert student.config.mask_thresholds == teacher.config.mask_thresholds
    count = sum(p.numel() for p in student.parameters())
    assert count < 0.7 * sum(p.numel() for p in teacher.parameters())


def test_a_shared_head_student_starts_as_the_teachers_depth_head(repo_root):
    import torch

    from dap_core.distill import init_from_teacher
    from dap_core.model import DAP, load_model

    teacher = load_model(repo_root / "weights" / "dap_small").eval()
    student = DAP(teacher.config.replace(shared_head=True)).eval()  # teacher's sizes, one head
    copied, total = init_from_teacher(student, teacher)
    assert copied == total
    x = torch.randn(1, 3, *teacher.config.input_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mine, theirs = student(x), teacher(x)
    assert torch.equal(mine.depth, theirs.depth)  # the same backbone and depth head, exactly
    # The mask channel starts as sigmoid(4 (logit 0.95 - logit depth)): "within 100 m" where
    # the teacher's depth is under 95 m. atol 1e-4: the logit recomputed from float32 depth
    # carries ~6e-8 / (1 - depth) relative error, times the slope 4 and sigmoid' <= 1/4.
    depth = theirs.depth[0, 0].double()
    logit = torch.log(depth / (1 - depth))
    expected = torch.sigmoid(4.0 * (math.log(0.95 / 0.05) - logit))
    torch.testing.assert_close(mine.masks[100][0, 0].double(), expected, atol=1e-4, rtol=0)


# ------------------------------------------------------------- feature distillation
def test_feature_loss_is_the_mean_relative_squared_error_of_the_four_grids():
    import torch

    from dap_core.feature_distill import feature_distill_loss

    teacher = [torch.full((2, 8, 3, 4), 2.0) for _ in range(4)]
    student = [t.clone() for t in teacher]
    assert feature_distill_loss(student, teacher).item() == 0.0
    # Grid 0 off by 1 everywhere: |1|^2 / |2|^2 = 0.25 there, 0 in the other three.
    student[0] = student[0] + 1.0
    assert feature_distill_loss(student, teacher).item() == 0.25 / 4
    with pytest.raises(ValueError, match=r"student grid 1 .* teacher's"):
        feature_distill_loss([student[0], student[1][:, :4], *student[2:]], teacher)


def test_feature_distill_task_adds_the_feature_loss_of_the_students_head_inputs(repo_root):
    """A student that is the teacher has no feature loss; a 4-block student has, its gradient
    reaches the student's backbone, and the teacher gets none."""
    import torch

    from dap_core.distill import init_from_teacher
    from dap_core.feature_distill import FeatureDistillTask
    from dap_core.model import DAP, load_model
    from dap_core.train.tasks import DepthTask

    cfg = load_config(
        repo_root / "training" / "distill" / "shared.yaml", ["distill.feature_weight=2.0"]
    )
    teacher = load_model(repo_root / "weights" / "dap_small").eval()
    rng = torch.Generator().manual_seed(0)
    batch = {
        "rgb": torch.rand(2, 3, *teacher.config.input_size, generator=rng),
        "range_m": torch.rand(2, 1, *teacher.config.input_size, generator=rng) * 50 + 1,
    }
    batch["valid"] = torch.ones_like(batch["range_m"], dtype=torch.bool)
    twin = DAP(teacher.config.replace(shared_head=True))
    init_from_teacher(twin, teacher)
    total, logs, _ = FeatureDistillTask(cfg, twin, teacher).step(twin, batch)
    plain, plain_logs, _ = DepthTask(cfg, twin).step(twin, batch)
    assert logs["feature"] == 0.0 and torch.equal(total, plain)

    student = DAP(teacher.config.replace(shared_head=True, depth=4, layer_indices=(0, 1, 2, 3)))
    init_from_teacher(student, teacher)
    total, logs, _ = FeatureDistillTask(cfg, student, teacher).step(student, batch)
    plain, plain_logs, _ = DepthTask(cfg, student).step(student, batch)
    assert logs["feature"] > 0
    assert logs["total"] == pytest.approx(plain_logs["total"] + 2.0 * logs["feature"], rel=1e-5)
    total.backward()
    assert student.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_feature_distillation_needs_the_teachers_width(repo_root):
    from dap_core.feature_distill import FeatureDistillTask
    from dap_core.model import DAP, load_model

    cfg = load_config(
        repo_root / "training" / "distill" / "tiny.yaml", ["distill.feature_weight=1.0"]
    )
    teacher = load_model(repo_root / "weights" / "dap_small")
    narrow = DAP(teacher.config.replace(embed_dim=96))
    with pytest.raises(ValueError, match=r"embed_dim 96 .* teacher's 192"):
        FeatureDistillTask(cfg, narrow, teacher)
    with pytest.raises(ValueError, match=r"distill\.feature_weight"):
        load_config(repo_root / "training" / "distill" / "tiny.yaml", ["distill.feature_weight=-1"])


def test_a_feature_distilled_run_trains_and_logs_its_feature_loss(repo_root, tmp_path, panoramas):
    cfg = load_config(
        repo_root / "training" / "distill" / "tiny.yaml",
        [
            f"output_dir={tmp_path / 'f'}",
            "schedule.max_steps=2",
            "curation.batch_size=2",
            "distill.feature_weight=1.0",
            "model.overrides.embed_dim=192",  # the teacher's width, so its grids compare
            "model.overrides.num_heads=3",
        ],
    )
    teacher = repo_root / "weights" / "dap_small"
    report = run_distill(cfg, teacher, panoramas, _env(), init_student=True)
    assert report.steps == 2 and report.last_logs["feature"] > 0
    assert (tmp_path / "f" / "model" / "config.json").is_file()


def test_a_run_without_progress_bar_prints_a_line_every_log_every_steps(
    repo_root, tmp_path, panoramas, capsys
):
    """runtime.progress false (a batch job's log file): each log_every steps still says where
    the run is, with its losses and pace; the bar would otherwise be the only progress."""
    cfg = load_config(
        repo_root / "training" / "distill" / "tiny.yaml",
        [
            f"output_dir={tmp_path / 'p'}",
            "schedule.max_steps=4",
            "schedule.log_every=2",
            "curation.batch_size=2",
            "runtime.progress=false",
        ],
    )
    run_distill(cfg, repo_root / "weights" / "dap_small", panoramas, _env())
    lines = [line for line in capsys.readouterr().out.splitlines() if "] step " in line]
    assert [line.split("] step ")[1].split()[0] for line in lines] == ["2/4", "4/4"], lines
    assert all(" total " in line and " s/step" in line for line in lines), lines


def test_an_output_dir_holding_another_student_is_refused_not_reused(
    repo_root, tmp_path, panoramas
):
    """A finished student in OUT: --resume with another config (or another teacher) must not
    report it as this run's, and a new run must not write over it."""
    from dap_core.train.run_identity import RunDirError

    teacher = repo_root / "weights" / "dap_small"
    out = tmp_path / "out"
    run_distill(_cfg(repo_root, out, steps=1), teacher, panoramas, _env())
    weights = (out / "model" / "model.safetensors").read_bytes()
    other = load_config(
        repo_root / "training" / "distill" / "tiny.yaml",
        [f"output_dir={out}", "schedule.max_steps=1", "model.overrides.head_features=16"],
    )
    with pytest.raises(
        RunDirError,
        match=r"holds another run \(config differs in .*model\.overrides\.head_features",
    ):
        run_distill(other, teacher, panoramas, _env(), resume=True)
    with pytest.raises(RunDirError, match="holds another run; continue it with --resume"):
        run_distill(_cfg(repo_root, out, steps=1), teacher, panoramas, _env())
    other_teacher = tmp_path / "teacher"
    shutil.copytree(teacher, other_teacher)
    (other_teacher / "model.safetensors").write_bytes(
        (teacher / "model.safetensors").read_bytes()[:-4] + b"\0\0\0\0"
    )
    with pytest.raises(RunDirError, match="teacher"):
        run_distill(_cfg(repo_root, out, steps=1), other_teacher, panoramas, _env(), resume=True)
    assert (out / "model" / "model.safetensors").read_bytes() == weights
    again = run_distill(_cfg(repo_root, out, steps=1), teacher, panoramas, _env(), resume=True)
    assert again.model_dir == str(out / "model")  # the same run: complete, reused


def test_a_narrower_mlp_keeps_the_teachers_most_important_units(repo_root):
    import torch

    from dap_core.distill import init_from_teacher, rank_mlp_units
    from dap_core.model import DAP, load_model

    teacher = load_model(repo_root / "weights" / "dap_small").eval()
    images = torch.randn(2, 3, 96, 192, generator=torch.Generator().manual_seed(0))
    block = teacher.backbone.blocks[3]
    # Hand-made importance in block 3: unit 5 silenced (fc1 row and bias zero, GELU(0) = 0),
    # unit 7 the only one writing to the residual stream with a large fc2 column.
    block.mlp.fc1.weight.data[5] = 0.0
    block.mlp.fc1.bias.data[5] = 0.0
    block.mlp.fc2.weight.data[:, 7] *= 1000.0
    order = rank_mlp_units(teacher, images)
    assert len(order) == teacher.config.depth
    assert order[3][0] == 7 and order[3][-1] == 5
    assert sorted(order[3].tolist()) == list(range(block.mlp.fc1.out_features))

    student = DAP(teacher.config.replace(depth=4, layer_indices=(0, 1, 2, 3), ffn_ratio=2.0))
    copied, total = init_from_teacher(student, teacher, [0, 3, 4, 7], order)
    assert copied == total
    keep = torch.sort(order[3][:384]).values
    mine = student.backbone.blocks[1].mlp  # from teacher block 3
    assert torch.equal(mine.fc1.weight, block.mlp.fc1.weight[keep])
    assert torch.equal(mine.fc1.bias, block.mlp.fc1.bias[keep])
    assert torch.equal(mine.fc2.weight, block.mlp.fc2.weight[:, keep])
    assert torch.equal(mine.fc2.bias, block.mlp.fc2.bias)
    assert 7 in keep and 5 not in keep
    # Without a ranking the leading units are kept, as before.
    init_from_teacher(student, teacher, [0, 3, 4, 7])
    assert torch.equal(mine.fc1.weight, block.mlp.fc1.weight[:384])


def test_a_narrower_mlp_student_is_ranked_on_the_runs_images(
    repo_root, tmp_path, panoramas, capsys
):
    cfg = load_config(
        repo_root / "training" / "distill" / "tiny.yaml",
        [
            f"output_dir={tmp_path / 'r'}",
            "schedule.max_steps=1",
            "curation.batch_size=2",
            "model.overrides.embed_dim=192",
            "model.overrides.num_heads=3",
            "model.overrides.ffn_ratio=2.0",  # the teacher's is 4
        ],
    )
    run_distill(cfg, repo_root / "weights" / "dap_small", panoramas, _env(), init_student=True)
    out = capsys.readouterr().out
    assert f"student MLP units: the teacher's most active on {IMAGES} images" in out
