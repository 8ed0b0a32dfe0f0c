"""Distillation: a teacher DAP's labels on unlabeled panoramas train a smaller student.

Owns `dap distill`'s two phases, on the stage-3 machinery of dap_core.train:
1. Label. The teacher (any DAP weights: a directory, .safetensors or the official .pth)
   labels every panorama of the image folder at the training size with `tasks.pseudo_label`
   (range in metres, +inf where its 100 m mask says "beyond"; the mask probability is kept
   too). Each label is one .npz file in a cache keyed by the teacher (hash of its weight files
   and input size) and the image (hash of its training-size pixels), written atomically: the
   teacher runs once per image, a killed run resumes with the images not yet labeled, and a
   second student trained on the same images reuses the labels. Under torchrun each rank
   labels the images ≡ rank (mod world).
2. Train. The student (model section of the config) is trained by the one `Trainer` with
   `DepthTask` (the stage losses, checkpoints, resume, DDP) on the cached labels, and saved
   with `save_model` under OUT/model: the node loads it with `weights:=OUT/model`.
   With distill.feature_weight > 0 the task adds a feature loss against the teacher run on
   every batch (`dap_core.feature_distill`).
   With --init-from-teacher the student starts from the teacher's tensors
   (`init_from_teacher`): the blocks of distill.teacher_blocks (default: the first, the last
   and evenly spaced ones between), the leading channels of narrower layers.
Nothing is unpickled: labels are read with np.load(allow_pickle=False).
`teacher_agreement` measures a trained student against its teacher on one frame.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dap_core.files import atomic_write, atomic_write_bytes, sha256_file

__all__ = [
    "DistillReport",
    "LabelCache",
    "TeacherLabels",
    "image_key",
    "init_from_teacher",
    "label_images",
    "run_distill",
    "teacher_agreement",
    "teacher_key",
]

LABELS_MANIFEST = "labels.json"


def _weight_files(weights: Path) -> list[Path]:
    if weights.is_dir():
        files = sorted(p for p in weights.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"teacher weights directory {weights} is empty")
        return files
    if not weights.is_file():
        raise FileNotFoundError(f"teacher weights {weights} not found")
    return [weights]


def teacher_key(weights: str | Path, input_size: tuple[int, int]) -> str:
    """Identity of a teacher: its weight files' bytes and its input size (16 hex digits)."""
    digest = hashlib.sha256()
    for path in _weight_files(Path(weights)):
        digest.update(path.name.encode())
        digest.update(sha256_file(path).encode())
    digest.update(repr(tuple(input_size)).encode())
    return digest.hexdigest()[:16]


def image_key(rgb: torch.Tensor) -> str:
    """Identity of a training image: the bytes of its [3, H, W] float pixels (24 hex digits)."""
    pixels = np.ascontiguousarray(rgb.detach().cpu().numpy().astype(np.float32))
    digest = hashlib.sha256(repr(pixels.shape).encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()[:24]


class LabelCache:
    """Teacher labels on disk: ROOT/<teacher key>/<image key[:2]>/<image key>.npz."""

    def __init__(self, root: str | Path, teacher: str) -> None:
        self.dir = Path(root) / teacher
        self.teacher = teacher

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npz"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def put(self, key: str, range_m: np.ndarray, within: np.ndarray) -> None:
        """range float16 metres (+inf = beyond), within uint8 (probability x 255)."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            range_m=np.asarray(range_m, np.float16),
            within=np.round(np.clip(within, 0.0, 1.0) * 255).astype(np.uint8),
        )
        atomic_write_bytes(self.path(key), buffer.getvalue())

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(range float32 [H, W] metres, within probability float32 [H, W])."""
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                return data["range_m"].astype(np.float32), data["within"] / np.float32(255)
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"teacher label {path} is unreadable ({err}); delete it") from err


@dataclass
class DistillReport:
    images: int = 0
    labeled: int = 0  # labels the teacher computed in this run
    cached: int = 0  # labels found in the cache
    steps: int = 0
    model_dir: str = ""
    last_logs: dict[str, float] = field(default_factory=dict)  # the last step's losses


@torch.no_grad()
def label_images(
    teacher,
    dataset,
    cache: LabelCache,
    *,
    env,
    device: torch.device,
    batch_size: int = 4,
    log=print,
) -> tuple[list[str], DistillReport]:
    """Label every item of `dataset` not yet in `cache`; returns (image keys, report)."""
    from dap_core.train.distributed import barrier
    from dap_core.train.tasks import pseudo_label

    report = DistillReport(images=len(dataset))
    teacher = teacher.to(device).eval()
    keys: list[str] = [""] * len(dataset)
    todo: list[tuple[int, torch.Tensor]] = []

    def flush() -> None:
        if not todo:
            return
        rgb = torch.stack([t for _, t in todo]).to(device)
        label, _, within = pseudo_label(teacher, rgb)
        for row, (index, _) in enumerate(todo):
            cache.put(keys[index], label[row, 0].cpu().numpy(), within[row, 0].cpu().numpy())
        report.labeled += len(todo)
        todo.clear()

    for index in range(len(dataset)):
        rgb = dataset[index]["rgb"]
        keys[index] = image_key(rgb)
        if index % env.world_size != env.rank:
            continue
        if cache.has(keys[index]):
            report.cached += 1
            continue
        todo.append((index, rgb))
        if len(todo) >= batch_size:
            flush()
    flush()
    barrier(env)
    if env.is_main:
        log(f"teacher labels: {report.labeled} computed, {report.cached} from the cache")
    return keys, report


def student_block_sources(student_depth: int, teacher_depth: int) -> list[int]:
    """Teacher block each student block starts from: the first and the last, the others
    evenly spaced between (4 of 8 -> 0, 2, 5, 7). The first is kept because the features
    depend on it most: of the shipped model, 0, 2, 5, 7 leave the head inputs 0.14 (relative
    squared error) from the teacher's, the every-other 1, 3, 5, 7 0.45."""
    if not 0 < student_depth <= teacher_depth:
        raise ValueError(f"a student of {student_depth} blocks cannot map {teacher_depth}")
    if student_depth == 1:
        return [teacher_depth - 1]
    step = (teacher_depth - 1) / (student_depth - 1)
    return [math.floor(i * step + 0.5) for i in range(student_depth)]  # half up, not to even


def block_sources(blocks, student_depth: int, teacher_depth: int) -> list[int]:
    """The teacher block of each student block: `blocks` (distill.teacher_blocks) checked,
    or when None `student_block_sources`."""
    if blocks is None:
        return student_block_sources(student_depth, teacher_depth)
    return check_block_sources(blocks, student_depth, teacher_depth)


def check_block_sources(blocks, student_depth: int, teacher_depth: int) -> list[int]:
    """`blocks` (teacher block per student block) as a list, or a ValueError saying why not."""
    blocks = [int(b) for b in blocks]
    if len(blocks) != student_depth:
        raise ValueError(
            f"teacher_blocks {blocks}: the student has {student_depth} blocks, "
            f"so it needs {student_depth} blocks"
        )
    if blocks != sorted(set(blocks)):
        raise ValueError(f"teacher_blocks {blocks} must be strictly increasing")
    if blocks and not (blocks[0] >= 0 and blocks[-1] < teacher_depth):
        last = teacher_depth - 1
        raise ValueError(
            f"teacher_blocks {blocks}: the teacher has {teacher_depth} blocks (0-{last})"
        )
    return blocks


@torch.no_grad()
def rank_mlp_units(teacher, images: torch.Tensor) -> list[torch.Tensor]:
    """Per teacher block, its MLP hidden units ordered most important first, measured on
    `images` (model inputs [B, 3, H, W]): unit j's importance is its mean |GELU activation|
    times the norm of what it adds to the residual stream (layer scale times fc2's column
    j). Why: a student with a narrower MLP (smaller ffn_ratio) that keeps these units drops
    the least of each block's output, where the leading slice drops units at random."""
    blocks = teacher.backbone.blocks
    sums = [torch.zeros(b.mlp.fc1.out_features) for b in blocks]
    counts = [0] * len(blocks)

    def hook(index: int):  # type: ignore[no-untyped-def]
        def record(_module, _inputs, output: torch.Tensor) -> None:
            flat = output.detach().abs().reshape(-1, output.shape[-1])
            sums[index] += flat.sum(0).float().cpu()
            counts[index] += flat.shape[0]

        return record

    handles = [b.mlp.act.register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    was_training = teacher.training
    try:
        teacher.eval()
        teacher.backbone.intermediate_layers(images)
    finally:
        for handle in handles:
            handle.remove()
        teacher.train(was_training)
    order = []
    for block, total, count in zip(blocks, sums, counts, strict=True):
        out = block.mlp.fc2.weight.detach().float().cpu() * block.ls2.gamma.detach().cpu()[:, None]
        importance = total / max(count, 1) * out.norm(dim=0)
        order.append(torch.argsort(importance, descending=True, stable=True))
    return order


RANKING_IMAGES = 16  # images rank_mlp_units sees in run_distill: one forward of the teacher
MLP_HIDDEN_AXIS = {"mlp.fc1.weight": 0, "mlp.fc1.bias": 0, "mlp.fc2.weight": 1}


def _ranked_mlp_slice(parts: list[str], tensor, found, mlp_order):  # type: ignore[no-untyped-def]
    """The teacher tensor `found` cut to `tensor`'s shape keeping the ranked MLP units of
    its block (sorted, so the kept units stay in the teacher's order), or None where the
    tensor is not a narrower MLP one."""
    axis = MLP_HIDDEN_AXIS.get(".".join(parts[3:]))
    if mlp_order is None or axis is None or tensor.shape[axis] >= found.shape[axis]:
        return None
    keep = torch.sort(mlp_order[int(parts[2])][: tensor.shape[axis]]).values
    picked = found.index_select(axis, keep.to(found.device))
    if picked.shape != tensor.shape:
        return None
    return picked


@torch.no_grad()
def init_from_teacher(student, teacher, blocks=None, mlp_order=None) -> tuple[int, int]:
    """Start the student from the teacher's tensors; returns (tensors copied, student tensors).

    ViT blocks are mapped by `blocks` (the teacher block of each student block, increasing;
    the config's distill.teacher_blocks), or when None by `student_block_sources`. Which
    blocks matter: of the shipped 8-block model, a 5-block student copying blocks 0, 1, 2, 4,
    7 starts with head inputs 0.04 (relative squared error) from the teacher's, the default
    0, 2, 4, 5, 7 at 0.11 and 1, 2, 4, 5, 7 (without the first block) at 0.38.
    A tensor of the same name and shape is copied; one that is narrower in some dimension
    (a 16-wide fusion convolution of a 32-wide teacher) takes the teacher's leading slice,
    i.e. the student keeps the teacher's first channels of each channel space, consistently
    across the layers that share it (channel pruning without a ranking). Tensors larger than
    the teacher's keep their initialisation. A shared-head student (`shared_head`) takes its
    one head from the teacher's depth head; its output layer's mask rows are derived from the
    depth row (`_shared_output_channels`). Why: a student trained from random weights needs
    far more steps than a CPU affords to follow the teacher closely; this start already
    computes a reduced copy of its function.
    `mlp_order` (`rank_mlp_units`): a narrower student MLP keeps its teacher block's most
    important hidden units instead of the leading ones.
    """
    sources = block_sources(blocks, student.config.depth, teacher.config.depth)
    theirs = teacher.state_dict()
    mine = student.state_dict()
    copied = 0
    for name, tensor in mine.items():
        source = name
        parts = name.split(".")
        if parts[:2] == ["backbone", "blocks"]:
            parts[2] = str(sources[int(parts[2])])
            source = ".".join(parts)
        found = theirs.get(source)
        if found is None or found.ndim != tensor.ndim:
            continue
        if parts[:2] == ["backbone", "blocks"]:
            ranked = _ranked_mlp_slice(parts, tensor, found, mlp_order)
            if ranked is not None:
                tensor.copy_(ranked)
                copied += 1
                continue
        if all(m <= t for m, t in zip(tensor.shape, found.shape, strict=True)):
            tensor.copy_(found[tuple(slice(0, m) for m in tensor.shape)])
            copied += 1
    if student.config.shared_head and not teacher.config.shared_head:
        copied += _shared_output_channels(student, theirs, mine)
    return copied, len(mine)


SHARED_OUTPUT = "heads.depth.scratch.output_conv2.2."  # the head's last 1x1 convolution
MASK_START_SLOPE = 4.0  # logit units per depth-logit unit of the derived mask channels


def _shared_output_channels(student, theirs: dict, mine: dict) -> int:
    """A shared head's output layer from the teacher's depth head: row 0 is the teacher's
    depth row; each mask row starts as "the depth channel says nearer than T" (T capped at
    95 % of max_range_m, where the sky sits), a steep decreasing function of the same
    depth logit, because a mask head's own output row reads its own hidden channels and
    means nothing on the depth head's. Returns the student tensors filled (0 or 2)."""

    weight, bias = mine[SHARED_OUTPUT + "weight"], mine[SHARED_OUTPUT + "bias"]
    w0, b0 = theirs.get(SHARED_OUTPUT + "weight"), theirs.get(SHARED_OUTPUT + "bias")
    if w0 is None or b0 is None or w0.shape[1] < weight.shape[1]:
        return 0
    w0 = w0[0, : weight.shape[1]]
    weight[0], bias[0] = w0, b0[0]
    config = student.config
    for row, threshold in enumerate(config.mask_thresholds, start=1):
        fraction = min(threshold / config.max_range_m, 0.95)
        cut = math.log(fraction / (1 - fraction))
        weight[row] = -MASK_START_SLOPE * w0
        bias[row] = MASK_START_SLOPE * (cut - b0[0])
    return 2


class TeacherLabels(Dataset):
    """Images of `source` with the cached teacher range as the label (every pixel valid)."""

    kind = "pseudo"

    def __init__(self, source, cache: LabelCache, keys: list[str]) -> None:
        missing = [k for k in keys if not cache.has(k)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} teacher label(s) missing in {cache.dir}")
        self.source, self.cache, self.keys = source, cache, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.source[index])
        range_m, _ = self.cache.get(self.keys[index])
        label = torch.from_numpy(range_m)[None]
        if label.shape[-2:] != item["rgb"].shape[-2:]:
            raise ValueError(f"teacher label {self.keys[index]} does not fit the image size")
        item["range_m"] = label
        item["valid"] = torch.ones_like(label, dtype=torch.bool)
        item["labeled"] = True
        item["domain"] = "pseudo"
        return item


def run_distill(
    cfg,
    teacher_weights: str | Path,
    images: str | Path,
    env,
    *,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    init_student: bool = False,
) -> DistillReport:
    """Label `images` with the teacher, train the config's student on them, save it.

    `init_student`: start the student from the teacher's tensors (`init_from_teacher`);
    runtime.threads of the config applies to labelling and training alike."""
    from dap_core.data.datasets import build_dataset
    from dap_core.model import load_model, save_model
    from dap_core.train.config import dump_config
    from dap_core.train.distributed import barrier
    from dap_core.train.run_identity import prepare_run_dir
    from dap_core.train.tasks import DepthTask, build_model
    from dap_core.train.trainer import Trainer, resolve_device

    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    out = Path(cfg.output_dir)
    log = print if env.is_main else (lambda *_: None)
    source = build_dataset({"type": "unlabeled", "root": str(images), "size": list(cfg.data.size)})
    if len(source) == 0:
        raise ValueError(f"no panoramas found in {images}")
    teacher = load_model(teacher_weights)
    key = teacher_key(teacher_weights, teacher.config.input_size)
    if env.is_main:
        # The run is this config and this teacher: OUT holding another student is refused
        # (with --resume too) instead of being reported, or overwritten, as this one.
        identity = {**cfg.to_dict(), "teacher_key": key}
        prepare_run_dir(out, identity, env.world_size, resume=resume, log=log)
        atomic_write_bytes(out / "config.yaml", dump_config(cfg).encode())
    barrier(env)
    cache = LabelCache(cache_dir or out / "labels", key)
    device = resolve_device(cfg, env)
    keys, report = label_images(
        teacher, source, cache, env=env, device=device, batch_size=cfg.curation.batch_size, log=log
    )
    if env.is_main:
        manifest = {"teacher": str(teacher_weights), "teacher_key": key, "images": keys}
        atomic_write(out / LABELS_MANIFEST, lambda f: f.write(json.dumps(manifest).encode()))
    final = out / "model"
    if resume and (final / "config.json").is_file():
        log(f"{final} exists: training already complete")
        report.model_dir = str(final)
        return report
    model = build_model(cfg, cfg.resolve(cfg.model.init))
    if init_student:
        chosen = block_sources(cfg.distill.teacher_blocks, model.config.depth, teacher.config.depth)
        order = None
        if model.config.ffn_ratio < teacher.config.ffn_ratio:
            count = min(RANKING_IMAGES, len(source))
            images = torch.stack([source[i]["rgb"] for i in range(count)]).to(device)
            order = rank_mlp_units(teacher.to(device), images)
            log(f"student MLP units: the teacher's most active on {count} images")
        copied, total = init_from_teacher(model, teacher, chosen, order)
        log(
            f"student: {copied} of {total} tensors start from the teacher's "
            f"(blocks {', '.join(map(str, chosen))})"
        )
    if cfg.distill.feature_weight > 0:
        from dap_core.feature_distill import FeatureDistillTask

        task = FeatureDistillTask(cfg, model, teacher)
    else:
        task = DepthTask(cfg, model)
    del teacher  # the task holds it only for feature distillation
    trainer = Trainer(
        cfg,
        task,
        TeacherLabels(source, cache, keys),
        env=env,
        run_dir=out,
        steps=cfg.schedule.max_steps,
        batch_size=cfg.schedule.batch_size,
    )
    result = trainer.fit(resume=resume)
    report.steps, report.last_logs = result.steps, dict(result.last_logs)
    if env.is_main:
        save_model(model, final)
        log(f"student: {result.steps} steps in {result.elapsed_s:.0f} s; saved to {final}")
    barrier(env)
    report.model_dir = str(final)
    return report


def teacher_agreement(student, teacher, threshold_m: int = 100) -> dict[str, float | None]:
    """How closely a student's `Prediction` follows its teacher's on one frame.

    abs_rel: mean |r_s - r_t| / r_t over the pixels the teacher places within `threshold_m`
    (its gated range, as the labels it trains on; the student's raw range there, clipped to
    the threshold as `depth_metrics` clips). mask_iou: IoU of the two models' within-threshold
    maps (1.0 when both are empty). A frame the teacher sees as all beyond has abs_rel None
    (n_pixels 0), never NaN.
    """
    from dap_core.metrics import depth_metrics

    reference = teacher.gated_range(threshold_m)
    depth = depth_metrics(student.range_m, reference, max_range_m=float(threshold_m))
    mine, theirs = student.within(threshold_m), teacher.within(threshold_m)
    union = int(np.sum(mine | theirs))
    iou = float(np.sum(mine & theirs)) / union if union else 1.0
    n = depth["n_pixels"]
    return {"abs_rel": depth["abs_rel"] if n else None, "mask_iou": iou, "n_pixels": n}
