"""The three stages of DAP training (paper §3.2), each a short recipe over the one Trainer.

Stage 1 — Scene-Invariant Labeler: train on the labeled (synthetic indoor + outdoor) data.
Stage 2 — Realism-Invariant Labeler: (a) train the PatchGAN critic with ground truth as
  "real" and the stage-1 labeler's predictions as "fake"; (b) score every unlabeled sample;
  (c) split indoor/outdoor and keep the top-K of each; (d) write their pseudo labels;
  (e) train on labeled + curated pseudo-labeled data, starting from the stage-1 labeler.
Stage 3 — DAP: pseudo-label every unlabeled sample with the stage-2 labeler and train the
  final model on labeled + all pseudo-labeled data.

Layout of `output_dir`: `model/` (final weights, DAP.save), `checkpoints/` and `tensorboard/`
of the main training, `critic/` (stage 2), `curation/` (manifest, selection), `pseudo/`
(shards), `eval.md` / `eval.json`, `config.yaml` (the resolved config), `run.json` (the run's
identity, `dap_core.train.run_identity`). Every phase skips work that is already complete on
disk, so `--resume` after a kill at any point continues; a directory holding another run is
refused (or moved aside on request), and temp files of writes a kill interrupted are removed
when a run starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from dap_core.data.datasets import build_dataset
from dap_core.model import load_model, save_model
from dap_core.train.checkpoint import (
    STEP_PATTERN,
    atomic_save,
    find_checkpoint,
    remove_orphan_temps,
)
from dap_core.train.config import TrainConfig, dump_config
from dap_core.train.data import PairedForCritic, concat
from dap_core.train.distributed import DistEnv, barrier
from dap_core.train.run_identity import prepare_run_dir
from dap_core.train.trainer import Trainer, resolve_device

MODEL_DIR = "model"


def _datasets(cfg: TrainConfig, specs) -> list:
    out = []
    for spec in specs:
        spec = dict(spec)
        spec.setdefault("size", list(cfg.data.size))
        if spec.get("type") != "synthetic":
            spec.setdefault("on_error", cfg.data.on_error)
        out.append(build_dataset(spec))
    return out


def _unlabeled(cfg: TrainConfig):
    if not cfg.data.unlabeled:
        raise ValueError(f"stage {cfg.stage} needs data.unlabeled datasets")
    return concat(_datasets(cfg, cfg.data.unlabeled))


def _load(path: Path):

    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the previous stage first")
    return load_model(path)


def _log(env: DistEnv, message: str) -> None:
    if env.is_main:
        print(message, flush=True)


def _train_depth(cfg: TrainConfig, model, dataset, env: DistEnv, out: Path, resume: bool):
    from dap_core.train.tasks import DepthTask

    final = out / MODEL_DIR
    newest = find_checkpoint(out / "checkpoints")
    done = (
        newest is None
        or int(STEP_PATTERN.fullmatch(newest.name).group(1)) >= cfg.schedule.max_steps
    )
    if resume and (final / "config.json").is_file() and done:
        _log(env, f"[{cfg.name}] {final} exists: training already complete")
        return _load(final)
    trainer = Trainer(
        cfg,
        DepthTask(cfg, model),
        dataset,
        env=env,
        run_dir=out,
        steps=cfg.schedule.max_steps,
        batch_size=cfg.schedule.batch_size,
    )
    result = trainer.fit(resume=resume)
    _log(
        env,
        f"[{cfg.name}] trained {result.steps} steps in {result.elapsed_s:.0f} s "
        f"(stopped by {result.stopped_by}); {result.skip_summary()}",
    )
    if env.is_main:
        save_model(model, final)
    barrier(env)
    return model


def _evaluate(cfg: TrainConfig, model, env: DistEnv, out: Path) -> dict[str, Any]:
    from dap_core.train.evaluate import evaluate_model, format_table, skip_report, write_results

    if not cfg.eval.datasets or not env.is_main:
        return {}
    results = {}
    for spec in cfg.eval.datasets:
        spec = dict(spec)
        name = spec.pop("name", None) or f"{spec.get('type')}:{spec.get('domain', '')}"
        (dataset,) = _datasets(cfg, [spec])
        results[name] = evaluate_model(
            model,
            dataset,
            device=resolve_device(cfg, env),
            batch_size=cfg.eval.batch_size,
            max_samples=cfg.eval.max_samples,
        )
    write_results(results, out)
    print(format_table(results), flush=True)
    for line in skip_report(results):
        print(f"[{cfg.name}] eval: {line}", flush=True)
    return results


def run_stage(
    cfg: TrainConfig, env: DistEnv, *, resume: bool = False, move_aside: bool = False
) -> dict[str, Any]:
    """Run one stage end to end; returns {"model": path, "eval": results, ...}.

    Without `resume` an output_dir holding another run is refused (`move_aside`: renamed);
    with it, one of another identity is refused (see `dap_core.train.run_identity`).
    """
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    if cfg.runtime.deterministic:
        torch.use_deterministic_algorithms(True)
    out = Path(cfg.output_dir)
    if env.is_main:
        prepare_run_dir(
            out, cfg.to_dict(), env.world_size, resume=resume, move_aside=move_aside, log=print
        )
        removed = remove_orphan_temps(out)
        if removed:
            mb = sum(size for _, size in removed) / 1e6
            shown = ", ".join(str(p.relative_to(out)) for p, _ in removed[:3])
            more = f" and {len(removed) - 3} more" if len(removed) > 3 else ""
            print(
                f"[{cfg.name}] removed {len(removed)} temp file(s) of interrupted writes "
                f"({mb:.1f} MB): {shown}{more}",
                flush=True,
            )
        (out / "config.yaml").write_text(dump_config(cfg))
    barrier(env)
    stage = {1: _stage1, 2: _stage2, 3: _stage3}[cfg.stage]
    info = stage(cfg, env, out, resume)
    info["eval"] = _evaluate(cfg, info.pop("trained"), env, out)
    return info


def _stage1(cfg: TrainConfig, env: DistEnv, out: Path, resume: bool) -> dict[str, Any]:
    from dap_core.train.tasks import build_model

    model = build_model(cfg, cfg.resolve(cfg.model.init))
    labeled = concat(_datasets(cfg, cfg.data.labeled))
    model = _train_depth(cfg, model, labeled, env, out, resume)
    return {"model": str(out / MODEL_DIR), "trained": model}


def _stage2(cfg: TrainConfig, env: DistEnv, out: Path, resume: bool) -> dict[str, Any]:
    from dap_core.train.curation import build_classifier, score_dataset, select_top_k
    from dap_core.train.tasks import CriticTask

    inputs = _pseudo_label_inputs(cfg, env)
    device, previous, labeler, labeled, unlabeled = inputs

    # (a) critic: GT "real" vs labeler "fake" (see DiscriminatorSection.fakes)
    critic_task = CriticTask(cfg, labeler)
    d = cfg.discriminator
    critic_path = out / "critic" / "critic.pt"
    if resume and critic_path.is_file():
        critic_task.module.load_state_dict(
            torch.load(critic_path, map_location="cpu", weights_only=True)
        )
    else:
        critic_data = critic_dataset(d, labeled, unlabeled)
        trainer = Trainer(
            cfg,
            critic_task,
            critic_data,
            env=env,
            run_dir=out / "critic",
            steps=d.steps,
            batch_size=d.batch_size,
        )
        result = trainer.fit(resume=resume)
        _log(
            env,
            f"[{cfg.name}] critic: {result.steps} steps, {result.last_logs}; "
            f"{result.skip_summary()}",
        )
        if env.is_main:
            atomic_save(critic_task.module.state_dict(), critic_path)
        barrier(env)
    critic = critic_task.module

    # (b, c) score every unlabeled sample, split by scene class, keep the top K of each
    curation = out / "curation"
    rows = score_dataset(
        labeler,
        critic,
        unlabeled,
        curation,
        env=env,
        device=device,
        batch_size=cfg.curation.batch_size,
        classifier=build_classifier(cfg.curation.classifier),
    )
    chosen = select_top_k(rows, cfg.curation.top_k)
    if env.is_main:
        (curation / "selected.json").write_text(json.dumps(chosen))
        _log(env, f"[{cfg.name}] selected {len(chosen)} of {len(rows)} unlabeled samples")
        summary = curation_summary(rows, chosen)
        (curation / "summary.json").write_text(json.dumps(summary, indent=1))
        if "selected_hidden_abs_rel" in summary:
            _log(
                env,
                f"[{cfg.name}] hidden AbsRel of pseudo labels: selected "
                f"{summary['selected_hidden_abs_rel']:.4f}, rejected "
                f"{summary['rejected_hidden_abs_rel']:.4f}",
            )

    # (d) pseudo labels of the selection; (e) realism-invariant labeler
    init = cfg.resolve(cfg.model.init) or previous / MODEL_DIR
    model = _train_on_pseudo_labels(cfg, env, out, resume, inputs, chosen, init)
    return {"model": str(out / MODEL_DIR), "trained": model, "selected": len(chosen)}


def _stage3(cfg: TrainConfig, env: DistEnv, out: Path, resume: bool) -> dict[str, Any]:
    inputs = _pseudo_label_inputs(cfg, env)
    indices = range(len(inputs.unlabeled))
    model = _train_on_pseudo_labels(
        cfg, env, out, resume, inputs, indices, cfg.resolve(cfg.model.init)
    )
    return {"model": str(out / MODEL_DIR), "trained": model}


class _PseudoLabelInputs(NamedTuple):
    """What stages 2 and 3 start from: the previous stage's model as labeler, and the data."""

    device: torch.device
    previous: Path  # the previous stage's output directory
    labeler: Any  # DAP loaded from previous / MODEL_DIR
    labeled: Any  # the labeled datasets, concatenated
    unlabeled: Any  # the unlabeled dataset to pseudo-label


def _pseudo_label_inputs(cfg: TrainConfig, env: DistEnv) -> _PseudoLabelInputs:
    device = resolve_device(cfg, env)
    previous = cfg.resolve(cfg.previous)
    labeler = _load(previous / MODEL_DIR)
    labeled = concat(_datasets(cfg, cfg.data.labeled))
    return _PseudoLabelInputs(device, previous, labeler, labeled, _unlabeled(cfg))


def _train_on_pseudo_labels(
    cfg: TrainConfig,
    env: DistEnv,
    out: Path,
    resume: bool,
    inputs: _PseudoLabelInputs,
    indices: Iterable[int],
    init: Path | None,
) -> Any:
    """Write the labeler's pseudo labels of `unlabeled[indices]` under out/pseudo, then train
    the model built from `init` on the labeled data plus those pseudo labels; returns it."""
    from dap_core.train.curation import PseudoLabelDataset, write_pseudo_labels
    from dap_core.train.tasks import build_model

    pseudo_dir = write_pseudo_labels(
        inputs.labeler,
        inputs.unlabeled,
        indices,
        out / "pseudo",
        env=env,
        device=inputs.device,
        batch_size=cfg.curation.batch_size,
        shard_size=cfg.curation.shard_size,
    )
    pseudo = PseudoLabelDataset(pseudo_dir, inputs.unlabeled)
    model = build_model(cfg, init)
    return _train_depth(cfg, model, concat([inputs.labeled, pseudo]), env, out, resume)


def critic_dataset(d, labeled, unlabeled):
    """Stage 2's critic training set for discriminator section `d` (fakes from "fake_rgb")."""
    if d.fakes == "unlabeled":
        return PairedForCritic(labeled, unlabeled)
    if d.use_rgb:
        # Mismatched pairs: the fake is the labeler's range of another labeled panorama, judged
        # with this one's image, so "fits the image like GT does" is the only cue left. With
        # the prediction of the same image as fake, the tiny run's ranking was inverted
        # (training/README.md).
        return PairedForCritic(labeled, labeled)
    return labeled


def curation_summary(rows, chosen) -> dict[str, Any]:
    """Counts per class, and (when ground truth was hidden) the true error of each side."""
    chosen_set = set(chosen)
    summary: dict[str, Any] = {"scored": len(rows), "selected": len(chosen_set)}
    for scene in ("indoor", "outdoor"):
        group = [r for r in rows if r["scene"] == scene]
        summary[f"{scene}_scored"] = len(group)
        summary[f"{scene}_selected"] = sum(r["index"] in chosen_set for r in group)
    if rows and all("hidden_abs_rel" in r for r in rows):
        sel = [r["hidden_abs_rel"] for r in rows if r["index"] in chosen_set]
        rej = [r["hidden_abs_rel"] for r in rows if r["index"] not in chosen_set]
        if sel and rej:
            summary["selected_hidden_abs_rel"] = sum(sel) / len(sel)
            summary["rejected_hidden_abs_rel"] = sum(rej) / len(rej)
    return summary
