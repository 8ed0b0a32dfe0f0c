"""End to end: the tiny three-stage run on synthetic data, with the real-like labels hidden.

"sim" panoramas are the labeled set; "real_like" panoramas are the unlabeled set, and their
ground truth is used only to measure (via `HiddenLabels.ground_truth`). The run is
deterministic (one thread, seeded stream), so its numbers are reproducible; they are printed
and recorded in training/README.md.
"""

from __future__ import annotations

import json

import pytest
from train_utils import run_train

from dap_core.train.config import load_config

# (a) Curation: the kept pseudo labels must be clearly better than the rejected ones, not
# merely equal. 0.85: with the default critic (RGB + gated label, mismatched labeled fakes) the
# ratio was 0.41 on this run and 0.35 and 0.06 with whole-pipeline seeds 1 and 2; with the
# earlier constant learning rate, 0.48-0.62 across stage-2 seeds 0-7 (training/README.md). The
# depth-only critic it replaced ranged 0.83-1.76.
CURATION_RATIO = 0.85


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tiny_three_stage_run_curates_and_improves_on_real_like(repo_root, tmp_path):
    runs = tmp_path
    for stage in (1, 2, 3):
        extra = [
            "--set",
            f"output_dir={runs}/stage{stage}",
            "--set",
            f"previous={runs}/stage{stage - 1}",
        ]
        if stage == 3:
            extra += ["--set", f"model.init={runs}/stage2/model"]
        run_train(repo_root / f"training/tiny/stage{stage}.yaml", *extra, timeout=800)

    # Each run's resolved config reads back as the config it ran (a rerun from the run itself).
    for s in (1, 2, 3):
        saved = load_config(runs / f"stage{s}/config.yaml")
        assert saved.stage == s and saved.output_dir == f"{runs}/stage{s}"

    evals = {s: json.loads((runs / f"stage{s}/eval.json").read_text()) for s in (1, 2, 3)}
    summary = json.loads((runs / "stage2/curation/summary.json").read_text())
    print("\nstage  domain     abs_rel  rmse_m  delta1")
    for s in (1, 2, 3):
        for domain in ("sim", "real_like"):
            e = evals[s][domain]
            print(f"{s:5d}  {domain:9s}  {e['abs_rel']:.4f}  {e['rmse']:6.3f}  {e['delta1']:.4f}")
    sel, rej = summary["selected_hidden_abs_rel"], summary["rejected_hidden_abs_rel"]
    print(f"pseudo labels, true AbsRel: selected {sel:.4f}, rejected {rej:.4f}")

    # Pipeline mechanics: every unlabeled sample scored, K per class kept, all labeled in stage 3.
    assert summary["scored"] == 64 and summary["selected"] == 32
    assert summary["indoor_selected"] == summary["outdoor_selected"] == 16
    stage3_index = json.loads((runs / "stage3/pseudo/index.json").read_text())
    assert stage3_index["samples"] == 64

    # (a) the critic's top-K have lower true error than the rejected pseudo labels
    assert sel <= CURATION_RATIO * rej
    # (b) stage 3 at least as accurate as the stage-1 labeler on the real-like domain in every
    # accuracy metric: AbsRel and RMSE no higher, δ1 no lower. No extra margin: on this run
    # (seed 0) stage 3 is 31 % lower in AbsRel, 4.4 % lower in RMSE and 9 % higher in δ1, and
    # the same direction held for whole-pipeline seeds 1 and 2 (training/README.md).
    s1, s3 = evals[1]["real_like"], evals[3]["real_like"]
    assert s3["abs_rel"] <= s1["abs_rel"]
    assert s3["rmse"] <= s1["rmse"]
    assert s3["delta1"] >= s1["delta1"]
