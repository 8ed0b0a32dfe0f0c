"""Training configuration: one YAML file per stage, read into frozen dataclasses.

The three stages share every section; they differ only in `stage`, data sources and the
`discriminator` / `curation` sections that stage 2 uses (paper §3.2). Unknown keys are
errors, so a typo in a YAML file never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STAGES = (1, 2, 3)
AMP_MODES = ("auto", "bf16", "off")


@dataclass(frozen=True)
class ModelSection:
    """preset: DAPConfig preset name; overrides: DAPConfig fields; init: weights to start from
    (a DAP directory or .safetensors). start_range_m: for a model trained from scratch, the
    range its depth head predicts at first (the sigmoid's mid-point is D_max / 2 = 50 m, far
    from typical scenes; starting near them saves the first steps)."""

    preset: str = "vits"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    init: str | None = None
    start_range_m: float | None = 8.0


@dataclass(frozen=True)
class DataSection:
    """labeled / unlabeled: lists of dataset specs (see `datasets.build_dataset`).

    size: [H, W] every reader resizes to. augment: colour jitter strength, yaw roll and the
    horizontal flip probability (the paper's augmentations, applied consistently to geometry).
    camera_effects: probability of degrading a training sample's RGB like a consumer 360° camera
    (`dap_core.data.camera_effects`; 0 = off), the sim-to-real augmentation of the labeler;
    camera_shading_ev: strength of its uneven-lighting effect in stops (0 = off);
    camera_lamps: probability of its lamp relighting of enclosed scenes (0 = off).
    on_error: "skip" drops an unreadable or label-less training sample from its batch (logged
    with file and reason, counted once, in TensorBoard and the run summary) and stops the run
    when more than max_skip_fraction of the training set (distinct samples, missing files
    included) proved unusable, or when none is usable (`dap_core.train.skips`); "raise" stops
    at the first one.
    """

    size: tuple[int, int] = (512, 1024)
    labeled: tuple[Mapping[str, Any], ...] = ()
    unlabeled: tuple[Mapping[str, Any], ...] = ()
    color_jitter: float = 0.2
    yaw_roll: bool = True
    hflip_prob: float = 0.5
    camera_effects: float = 0.0
    camera_shading_ev: float = 0.0
    camera_lamps: float = 0.0
    num_workers: int = 0
    on_error: str = "skip"
    max_skip_fraction: float = 0.05


LR_DECAYS = ("none", "cosine")


@dataclass(frozen=True)
class OptimSection:
    """Adam with separate learning rates for the backbone and the decoders (paper §4).

    Linear warm-up over warmup_steps, then constant (decay "none") or a cosine decay to
    min_lr_ratio x the base rate at the run's last step (decay "cosine").
    """

    lr_backbone: float = 5e-6
    lr_decoder: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_steps: int = 0
    decay: str = "none"
    min_lr_ratio: float = 0.0


@dataclass(frozen=True)
class ScheduleSection:
    """batch_size is per process; max_steps and time_budget_s (whichever ends first)."""

    batch_size: int = 2
    max_steps: int = 1000
    time_budget_s: float | None = None
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    preview_every: int = 500


@dataclass(frozen=True)
class RuntimeSection:
    """device: "auto" (cuda when present) or a torch device; amp: "auto" = bf16 on GPU only.
    dist_timeout_s: under torchrun, how long a rank waits for the others (forming the group,
    every collective) before the run fails naming the late rank."""

    device: str = "auto"
    threads: int | None = None
    amp: str = "auto"
    deterministic: bool = False
    progress: bool = True
    tensorboard: bool = True
    dist_timeout_s: float = 600.0


@dataclass(frozen=True)
class DiscriminatorSection:
    """Stage 2's PatchGAN: trained with synthetic GT as "real" and labeler output as "fake".

    use_rgb: condition on the RGB image as well as the depth. steps: training iterations.
    sky: "neutral" (sky carries no signal) or "label" (the critic sees +inf sky); see
    `dap_core.train.discriminator`. scale_jitter: half-width of a random log-scale applied to
    GT and prediction alike (0 = off), so the critic judges structure, not absolute scale.
    fakes: "unlabeled" — the labeler's pseudo labels on the unlabeled set, i.e. the very
    labels the critic will rank (needs use_rgb false: with RGB the critic would tell the
    domains apart by appearance); "labeled" — its predictions on the labeled images.
    pool: average-pool factor applied to the critic's input (low-pass; 1 = off).
    """

    channels: int = 32
    layers: int = 3
    use_rgb: bool = False
    sky: str = "neutral"
    scale_jitter: float = 0.0
    fakes: str = "unlabeled"
    pool: int = 2
    lr: float = 2e-4
    steps: int = 500
    batch_size: int = 4


@dataclass(frozen=True)
class CurationSection:
    """Scoring the unlabeled set and selecting pseudo labels.

    top_k: per scene class ("indoor", "outdoor"); an int count or a float fraction of that
    class. classifier: "metadata" (fail when a sample has none), "auto" (metadata, else the
    depth heuristic), "depth" (the heuristic always) or "module:function".
    """

    top_k: Mapping[str, float] = field(
        default_factory=lambda: {"indoor": 300000, "outdoor": 300000}
    )
    classifier: str = "auto"
    batch_size: int = 8
    shard_size: int = 256


@dataclass(frozen=True)
class EvalSection:
    """Datasets evaluated after training (labels required); max_samples per dataset."""

    datasets: tuple[Mapping[str, Any], ...] = ()
    max_samples: int | None = None
    batch_size: int = 4


@dataclass(frozen=True)
class DistillSection:
    """`dap distill` only. feature_weight: weight of a feature loss that pulls the student's
    four head inputs towards the teacher's (`dap_core.feature_distill.feature_distill_loss`;
    the teacher then runs on every training batch, as augmentation moves the image); 0 = off,
    the student learns from the cached labels alone. teacher_blocks: with --init-from-teacher,
    the teacher block each student block starts from (increasing, one per student block);
    null = the first, the last and evenly spaced ones between
    (`dap_core.distill.student_block_sources`)."""

    feature_weight: float = 0.0
    teacher_blocks: tuple[int, ...] | None = None


@dataclass(frozen=True)
class TrainConfig:
    """One stage of the pipeline. `previous`: output_dir of the stage before (stages 2, 3)."""

    stage: int = 1
    name: str = "stage1"
    output_dir: str = "runs/stage1"
    previous: str | None = None
    seed: int = 0
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    optim: OptimSection = OptimSection()
    schedule: ScheduleSection = ScheduleSection()
    runtime: RuntimeSection = RuntimeSection()
    loss: Mapping[str, Any] = field(default_factory=dict)
    discriminator: DiscriminatorSection = DiscriminatorSection()
    curation: CurationSection = CurationSection()
    eval: EvalSection = EvalSection()
    distill: DistillSection = DistillSection()
    source: str | None = None  # the YAML file this came from (for relative paths)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage}")
        if self.stage > 1 and not self.previous:
            raise ValueError(
                f"stage {self.stage} needs 'previous' (the earlier stage's output_dir)"
            )
        if self.runtime.amp not in AMP_MODES:
            raise ValueError(f"runtime.amp must be one of {AMP_MODES}, got {self.runtime.amp!r}")
        if self.data.on_error not in ("raise", "skip"):
            raise ValueError(f"data.on_error must be 'raise' or 'skip', got {self.data.on_error!r}")
        d = self.discriminator
        if d.fakes not in ("unlabeled", "labeled"):
            raise ValueError(
                f"discriminator.fakes must be 'unlabeled' or 'labeled', got {d.fakes!r}"
            )
        if d.fakes == "unlabeled" and d.use_rgb:
            raise ValueError(
                "discriminator.fakes: unlabeled needs use_rgb: false (real and fake images come "
                "from different domains, an RGB-conditioned critic would judge the domain)"
            )
        if self.schedule.batch_size < 1 or self.schedule.max_steps < 0:
            raise ValueError("schedule.batch_size must be >= 1 and max_steps >= 0")
        if self.optim.decay not in LR_DECAYS:
            raise ValueError(f"optim.decay must be one of {LR_DECAYS}, got {self.optim.decay!r}")
        if not 0.0 <= self.optim.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.optim.min_lr_ratio}")
        if self.data.camera_shading_ev < 0:
            raise ValueError(
                f"data.camera_shading_ev must be >= 0, got {self.data.camera_shading_ev}"
            )
        if not 0.0 <= self.data.camera_lamps <= 1.0:
            raise ValueError(
                f"data.camera_lamps is a probability in [0, 1], got {self.data.camera_lamps}"
            )
        if not 0.0 <= self.data.max_skip_fraction <= 1.0:
            raise ValueError(
                f"data.max_skip_fraction is a fraction in [0, 1], got {self.data.max_skip_fraction}"
            )
        blocks = self.distill.teacher_blocks
        if blocks is not None and not (
            isinstance(blocks, tuple)
            and all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in blocks)
        ):
            raise ValueError(
                f"distill.teacher_blocks must be a list of teacher block numbers, got {blocks!r}"
            )
        if not 0.0 <= self.data.camera_effects <= 1.0:
            raise ValueError(
                f"data.camera_effects is a probability in [0, 1], got {self.data.camera_effects}"
            )

    def resolve(self, path: str | None) -> Path | None:
        """A path from the config; relative paths are relative to the working directory
        (like output_dir), so configs run from the repository root."""
        return None if path is None else Path(path).expanduser()

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


SECTIONS = {
    "model": ModelSection,
    "data": DataSection,
    "optim": OptimSection,
    "schedule": ScheduleSection,
    "runtime": RuntimeSection,
    "discriminator": DiscriminatorSection,
    "curation": CurationSection,
    "eval": EvalSection,
    "distill": DistillSection,
}


# Bounds of numeric values, checked when a config is read: (">=" or ">", bound).
LIMITS: dict[str, tuple[str, float]] = {
    "optim.lr_backbone": (">=", 0),
    "optim.lr_decoder": (">=", 0),
    "optim.weight_decay": (">=", 0),
    "optim.grad_clip": (">=", 0),  # 0 = no clipping
    "optim.warmup_steps": (">=", 0),
    "schedule.max_steps": (">=", 0),
    "schedule.time_budget_s": (">", 0),  # or null for none
    "schedule.log_every": (">=", 1),
    "schedule.checkpoint_every": (">=", 0),  # 0 = only at the end
    "schedule.keep_checkpoints": (">=", 1),
    "schedule.preview_every": (">=", 0),
    "runtime.threads": (">=", 1),
    "runtime.dist_timeout_s": (">", 0),
    "data.num_workers": (">=", 0),
    "data.max_skip_fraction": (">=", 0),
    "discriminator.lr": (">=", 0),
    "discriminator.steps": (">=", 0),
    "discriminator.batch_size": (">=", 1),
    "discriminator.channels": (">=", 1),
    "discriminator.layers": (">=", 1),
    "discriminator.pool": (">=", 1),
    "curation.batch_size": (">=", 1),
    "curation.shard_size": (">=", 1),
    "eval.batch_size": (">=", 1),
    "eval.max_samples": (">=", 1),
    "distill.feature_weight": (">=", 0),
}


def _typed(value: Any, kind: str, where: str) -> Any:
    """`value` as the field's scalar type (int / float / bool / str), or a ValueError."""
    base = kind.split(" ")[0]
    if value is None:
        if "None" in kind:
            return None
        raise ValueError(f"{where}: a value is required, got null")
    if base == "int":
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError as err:
                raise ValueError(f"{where}: expected a number, got {value!r}") from err
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if base == "float":
        # YAML 1.1 reads "2e-4" as a string; numbers must be numbers.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError as err:
                raise ValueError(f"{where}: expected a number, got {value!r}") from err
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if base == "bool" and not isinstance(value, bool):
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    if base == "str" and not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {value!r}")
    return value


def _check_limit(where: str, value: Any) -> None:
    if where not in LIMITS or value is None:
        return
    op, bound = LIMITS[where]
    if (op == ">=" and value < bound) or (op == ">" and value <= bound):
        raise ValueError(f"{where} must be {op} {bound:g}, got {value!r}")


def _size(value: Any, where: str) -> tuple[int, int]:
    ok = (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )
    if not ok:
        raise ValueError(
            f"{where} must be [height, width] in pixels (e.g. [512, 1024]), got {value!r}"
        )
    return (int(value[0]), int(value[1]))


def _model_overrides(value: Any, where: str) -> Mapping[str, Any]:
    from dap_core.model.config import DAPConfig

    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping of DAPConfig fields, got {value!r}")
    known = {f.name for f in dataclasses.fields(DAPConfig)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"{where}: unknown DAPConfig field(s) {unknown}; known: {sorted(known)}")
    return value


def _section(cls, values: Mapping[str, Any] | None, where: str):
    if values is not None and not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a mapping of keys, got {values!r}")
    values = dict(values or {})
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    for key, value in list(values.items()):
        name = f"{where}.{key}"
        kind = str(known[key].type)
        if name == "data.size":
            value = _size(value, name)
        elif name == "model.overrides":
            value = _model_overrides(value, name)
        elif isinstance(value, list):
            value = tuple(value)
        elif kind.split(" ")[0] in ("int", "float", "bool", "str"):
            value = _typed(value, kind, name)
        _check_limit(name, value)
        values[key] = value
    return cls(**values)


def config_from_dict(raw: Mapping[str, Any], source: str | None = None) -> TrainConfig:
    """Build a TrainConfig from a parsed YAML mapping (strict: unknown keys are errors)."""
    raw = dict(raw)
    sections = {}
    for name, cls in SECTIONS.items():
        sections[name] = _section(cls, raw.pop(name, None), name)
    top = {f.name for f in dataclasses.fields(TrainConfig)} - set(SECTIONS) - {"source"}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise ValueError(
            f"training config: unknown key(s) {unknown}; known: {sorted(top)}, "
            f"sections: {sorted(SECTIONS)}"
        )
    return TrainConfig(**raw, **sections, source=source)


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a stage YAML file; `overrides` are "dotted.key=yaml_value" strings (CLI `--set`)."""
    path = Path(path)
    raw = _read_yaml(path)
    for item in overrides or []:
        apply_override(raw, item)
    try:
        return config_from_dict(raw, source=str(path))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err


def dump_config(cfg: TrainConfig) -> str:
    """The whole config as YAML that `load_config` reads back (the file it came from, which is
    not a config key, goes into a comment): what a run writes to its config.yaml."""
    resolved = cfg.to_dict()
    origin = resolved.pop("source", None)
    header = f"# resolved from {origin}\n" if origin else ""
    return header + yaml.safe_dump(resolved, sort_keys=False)


def _read_yaml(path: Path, depth: int = 0) -> dict[str, Any]:
    """A YAML mapping; a top-level `base: other.yaml` (relative to this file) is read first
    and this file's values are merged over it, section by section."""
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: invalid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if depth > 8:
        raise ValueError(f"{path}: 'base' chain is too deep (a cycle?)")
    return _merge(_read_yaml(path.parent / base, depth + 1), raw)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set raw["a"]["b"] = yaml(value) for "a.b=value"."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key.sub=value")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(value)


def _plain(value: Any) -> Any:
    """Tuples and mappings to plain lists and dicts, for YAML/JSON."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
