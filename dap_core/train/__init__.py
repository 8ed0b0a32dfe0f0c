"""Three-stage DAP training: one Trainer, stage recipes, critic, curation, evaluation.

Entry points: `dap train --config training/stage1.yaml` or
`torchrun --nproc_per_node=N -m dap_core.train --config ...`; see `stages.py`.
"""
