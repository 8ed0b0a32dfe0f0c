"""Pseudo-label curation (stage 2) and pseudo-label shards (stages 2 and 3).

1. `score_dataset`: the labeler predicts every unlabeled panorama and the critic scores the
   prediction; one JSON line per sample (index, name, scene, score) is appended to a
   per-rank manifest and fsync'ed batch by batch, so an interrupted run resumes where it
   stopped. Under torchrun each rank scores the indices ≡ rank (mod world).
2. The scene class comes from the sample's metadata, else from a pluggable classifier.
3. `select_top_k`: the K best-scored samples of each class (paper: 300K indoor + 300K outdoor).
4. `write_pseudo_labels`: the labeler's range (sky = +inf where its 100 m mask says
   "beyond") for chosen samples, in shards `shard_<k>.npy` (float16 [n, H, W]) with
   `shard_<k>.json` (indices, names) written last, so a shard exists only when complete.
   `PseudoLabelDataset` pairs them with the source images for training.

Both artefacts carry the key of what made them (`artefact_key`: a digest of the labeler's and
critic's weights, the source dataset's size, the selection and shard size) in `key.json`;
a directory made under another key is emptied and rebuilt, never reused (stage 2 run again
with another top_k, or a retrained labeler, gets its own labels).

When the source dataset hides ground truth (`HiddenLabels`), the manifest also records each
pseudo label's true AbsRel as `hidden_abs_rel` — for measuring curation only; nothing in the
pipeline reads it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dap_core.data.datasets import is_skipped
from dap_core.files import atomic_write, atomic_write_bytes
from dap_core.metrics import depth_metrics
from dap_core.train.data import collate
from dap_core.train.discriminator import critic_input
from dap_core.train.distributed import DistEnv, barrier

SCENES = ("indoor", "outdoor")
SKY_DECISION = 0.5  # the 100 m mask below this means "beyond / sky"
# Depth heuristic for the scene class: rooms in the data are at most ~15 m across, so a
# panorama whose median range exceeds this, or with visible sky, is outdoors.
OUTDOOR_MEDIAN_M = 15.0
OUTDOOR_SKY_FRACTION = 0.02

Classifier = Callable[[dict[str, Any], torch.Tensor, Mapping[int, torch.Tensor]], list[str]]


# ----------------------------------------------------------------------------------------------
# Scene classification


def depth_heuristic(batch: dict[str, Any], pred_m: torch.Tensor, masks) -> list[str]:
    """indoor/outdoor from the labeler's own prediction (sky fraction, median range)."""
    out = []
    for b in range(pred_m.shape[0]):
        r = pred_m[b, 0].float()
        sky = float((masks[100][b, 0] < SKY_DECISION).float().mean()) if 100 in masks else 0.0
        outdoor = sky > OUTDOOR_SKY_FRACTION or float(r.median()) > OUTDOOR_MEDIAN_M
        out.append("outdoor" if outdoor else "indoor")
    return out


def build_classifier(spec: str) -> Classifier:
    """ "metadata" | "auto" | "depth" | "package.module:function" (a Classifier)."""
    if spec == "depth":
        return depth_heuristic
    if spec in ("metadata", "auto"):

        def from_metadata(batch, pred_m, masks):
            scenes = list(batch["scene"])
            missing = [i for i, s in enumerate(scenes) if s not in SCENES]
            if missing and spec == "metadata":
                raise ValueError(
                    f"sample {batch['name'][missing[0]]!r} has no indoor/outdoor metadata; "
                    "use curation.classifier: auto or depth"
                )
            if missing:
                guessed = depth_heuristic(batch, pred_m, masks)
                scenes = [s if s in SCENES else g for s, g in zip(scenes, guessed, strict=True)]
            return scenes

        return from_metadata
    if ":" in spec:
        module, func = spec.split(":", 1)
        try:
            return getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"cannot import scene classifier {spec!r}: {err}") from err
    raise ValueError(f"unknown scene classifier {spec!r}; use metadata, auto, depth or mod:func")


# ----------------------------------------------------------------------------------------------
# Cache keys


def module_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state (names, dtypes, shapes, bytes): which weights made a file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def artefact_key(**parts: Any) -> str:
    """A short digest of everything that made a cached artefact."""
    canonical = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def _claim(out_dir: Path, key: str, patterns: Sequence[str], what: str, env: DistEnv) -> None:
    """Make `out_dir` hold artefacts of `key`: when key.json names another key (or is missing
    beside old files), delete the files matching `patterns` first. Rank 0 decides."""
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        record = out_dir / "key.json"
        try:
            old = json.loads(record.read_text()).get("key") if record.is_file() else None
        except (OSError, ValueError):
            old = None
        if old != key:
            stale = [f for pattern in patterns for f in out_dir.glob(pattern)]
            for f in stale:
                f.unlink(missing_ok=True)
            if stale:
                print(
                    f"{out_dir}: {what} were made by another labeler, critic or selection: "
                    f"removed {len(stale)} file(s), rebuilding",
                    flush=True,
                )
            _atomic_text(record, json.dumps({"key": key}))
    barrier(env)


# ----------------------------------------------------------------------------------------------
# Scoring


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (killed mid-write) is dropped."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


@torch.no_grad()
def score_dataset(
    labeler,
    critic,
    dataset,
    out_dir: str | Path,
    *,
    env: DistEnv,
    device: torch.device,
    batch_size: int = 8,
    classifier: Classifier | None = None,
) -> list[dict[str, Any]]:
    """Score every sample (resumable); returns the merged manifest rows sorted by index."""
    from dap_core.train.tasks import normalize_rgb, pseudo_label

    out_dir = Path(out_dir)
    classifier = classifier or build_classifier("auto")
    key = artefact_key(
        labeler=module_digest(labeler),
        critic=module_digest(critic),
        samples=len(dataset),
        classifier=getattr(classifier, "__qualname__", repr(classifier)),
    )
    _claim(out_dir, key, ["manifest*.jsonl"], "scores", env)
    part = out_dir / f"manifest.rank{env.rank}.jsonl"
    kept = _read_jsonl(part)
    if part.is_file():
        # Drop a torn last line before appending, or the next row would be glued to it.
        _atomic_text(part, "".join(json.dumps(r) + "\n" for r in kept))
    done = {row["index"] for row in kept}
    mine = [i for i in range(env.rank, len(dataset), env.world_size) if i not in done]
    labeler = labeler.to(device).eval()
    critic = critic.to(device).eval()
    hidden = getattr(dataset, "ground_truth", None)
    with part.open("a") as f:
        for start in range(0, len(mine), batch_size):
            idx, items = _readable(dataset, mine[start : start + batch_size])
            if not items:
                continue
            batch = collate(items)
            rgb = batch["rgb"].to(device)
            label, raw, within = pseudo_label(labeler, rgb)
            judged = critic_input(critic, label, raw)
            scores = critic.score(judged, normalize_rgb(rgb, labeler.config)).cpu().tolist()
            scenes = classifier(batch, label.cpu(), {100: within.cpu()})
            for b, i in enumerate(idx):
                row = {
                    "index": i,
                    "name": batch["name"][b],
                    "scene": scenes[b],
                    "scene_from": "metadata" if batch["scene"][b] in SCENES else "classifier",
                    "score": scores[b],
                }
                if hidden is not None:
                    gt = hidden(i)
                    m = depth_metrics(
                        label[b, 0].cpu(),
                        gt["range_m"][0],
                        gt["valid"][0],
                        max_range_m=labeler.config.max_range_m,
                    )
                    row["hidden_abs_rel"] = m["abs_rel"]
                f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
    barrier(env)
    rows = [
        r for k in range(env.world_size) for r in _read_jsonl(out_dir / f"manifest.rank{k}.jsonl")
    ]
    rows = sorted({r["index"]: r for r in rows}.values(), key=lambda r: r["index"])
    if env.is_main:
        _atomic_text(out_dir / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    barrier(env)
    return rows


def _readable(dataset, indices: Sequence[int]) -> tuple[list[int], list[dict[str, Any]]]:
    """The indices and items of the samples `dataset` can give; the others (skipped items) are
    named once on stderr and get no score, so they are never selected or pseudo-labeled."""
    kept, items = [], []
    for i in indices:
        item = dataset[i]
        if is_skipped(item):
            print(f"curation: skipped sample {item['skipped']}", file=sys.stderr, flush=True)
            continue
        kept.append(i)
        items.append(item)
    return kept, items


def select_top_k(rows: Sequence[Mapping[str, Any]], top_k: Mapping[str, float]) -> list[int]:
    """Indices of the best-scored K samples per scene class (ties: lower index first).

    K is a count (int, or float > 1) or a fraction of the class (float <= 1.0).
    """
    unknown = sorted(set(top_k) - set(SCENES))
    if unknown:
        raise ValueError(f"curation.top_k has unknown classes {unknown}; use {SCENES}")
    chosen: list[int] = []
    for scene in SCENES:
        group = sorted(
            (r for r in rows if r["scene"] == scene), key=lambda r: (-r["score"], r["index"])
        )
        k = top_k.get(scene, 0)
        count = round(k * len(group)) if isinstance(k, float) and k <= 1.0 else int(k)
        chosen += [r["index"] for r in group[: max(0, count)]]
    return sorted(chosen)


# ----------------------------------------------------------------------------------------------
# Pseudo-label shards


def _atomic_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _atomic_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.save(handle, array))


@torch.no_grad()
def write_pseudo_labels(
    labeler,
    dataset,
    indices: Iterable[int],
    out_dir: str | Path,
    *,
    env: DistEnv,
    device: torch.device,
    batch_size: int = 8,
    shard_size: int = 256,
) -> Path:
    """Label `indices` of `dataset` with `labeler` into shards (resumable per shard)."""
    from dap_core.train.tasks import pseudo_label

    out_dir = Path(out_dir)
    indices = sorted(int(i) for i in indices)
    key = artefact_key(
        labeler=module_digest(labeler),
        samples=len(dataset),
        indices=hashlib.sha256(json.dumps(indices).encode()).hexdigest(),
        shard_size=shard_size,
    )
    _claim(out_dir, key, ["shard_*.npy", "shard_*.json", "index.json"], "pseudo labels", env)
    shards = [indices[k : k + shard_size] for k in range(0, len(indices), shard_size)]
    labeler = labeler.to(device).eval()
    for k in range(env.rank, len(shards), env.world_size):
        meta_path = out_dir / f"shard_{k:05d}.json"
        if meta_path.is_file():
            continue
        ranges, names, labeled = [], [], []
        for start in range(0, len(shards[k]), batch_size):
            idx, items = _readable(dataset, shards[k][start : start + batch_size])
            if not items:
                continue
            batch = collate(items)
            pred, _, _ = pseudo_label(labeler, batch["rgb"].to(device))
            ranges.append(pred[:, 0].cpu().numpy().astype(np.float16))
            names += list(batch["name"])
            labeled += idx
        if not ranges:  # not one sample of the shard could be read: an empty shard
            ranges = [np.zeros((0, 1, 1), np.float16)]
        _atomic_npy(out_dir / f"shard_{k:05d}.npy", np.concatenate(ranges))
        # Only the samples that could be read: rows and indices stay aligned.
        _atomic_text(meta_path, json.dumps({"indices": labeled, "names": names}))
    barrier(env)
    if env.is_main:
        index = {
            "shards": len(shards),
            "samples": len(indices),
            "shard_size": shard_size,
            "key": key,
        }
        _atomic_text(out_dir / "index.json", json.dumps(index))
    barrier(env)
    return out_dir


class PseudoLabelDataset(Dataset):
    """Images of `source` with the pseudo range from shards in `directory` (all pixels valid)."""

    kind = "pseudo"

    def __init__(self, directory: str | Path, source: Dataset) -> None:
        self.directory = Path(directory)
        index_path = self.directory / "index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"pseudo-label index {index_path} not found (incomplete run?)")
        n_shards = json.loads(index_path.read_text())["shards"]
        self.source = source
        self.entries: list[tuple[int, int, int]] = []  # (shard, row, source index)
        for k in range(n_shards):
            meta = json.loads((self.directory / f"shard_{k:05d}.json").read_text())
            self.entries += [(k, row, i) for row, i in enumerate(meta["indices"])]
        self._arrays: dict[int, np.ndarray] = {}
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.entries)

    def _shard(self, k: int) -> np.ndarray:
        if k not in self._arrays:
            self._arrays[k] = np.load(
                self.directory / f"shard_{k:05d}.npy", mmap_mode="r", allow_pickle=False
            )
        return self._arrays[k]

    def __getitem__(self, position: int) -> dict[str, Any]:
        k, row, index = self.entries[position]
        item = dict(self.source[index])
        if is_skipped(item):
            return item
        rng = torch.from_numpy(np.asarray(self._shard(k)[row], dtype=np.float32))[None]
        if rng.shape[-2:] != item["rgb"].shape[-2:]:
            raise ValueError(
                f"pseudo label {self.directory}/shard_{k:05d} row {row} is "
                f"{tuple(rng.shape[-2:])}, "
                f"image is {tuple(item['rgb'].shape[-2:])}: relabel at this size"
            )
        item["range_m"] = rng
        item["valid"] = torch.ones_like(rng, dtype=torch.bool)
        item["labeled"] = True
        item["domain"] = "pseudo"
        return item
