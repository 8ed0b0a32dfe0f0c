"""Training data: a resumable, rank-sharded sample stream and per-sample seeded augmentation.

The stream is a deterministic function of (seed, step): global step s uses positions
[s·B·world, (s+1)·B·world) of an endless sequence of per-epoch permutations, and rank r takes
its B consecutive positions. Every position also carries its own augmentation seed. So the
data position in a checkpoint is just the step, resuming replays exactly the same samples and
augmentations, and the result does not depend on DataLoader workers.

A sample a reader cannot use arrives as a skipped item (`datasets.skipped_item`), and so does
a labeled training sample without one valid ground-truth pixel (it would train nothing):
`collate` drops them from the batch and lists them under "skipped", so a batch may be short
(or empty) but never holds a stand-in sample counted twice; the trainer reports them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from dap_core.data.datasets import SKIPPED, is_skipped, skipped_item
from dap_core.train.distributed import DistEnv


def sample_seed(seed: int, position: int) -> int:
    """A 32-bit seed for the sample at a global stream position (SeedSequence hashing)."""
    return int(np.random.SeedSequence([seed, position]).generate_state(1)[0])


class StreamSampler:
    """Endless batches of (dataset index, augmentation seed) for one rank from `start_step`."""

    def __init__(
        self, length: int, batch_size: int, env: DistEnv, seed: int, start_step: int = 0
    ) -> None:
        if length <= 0:
            raise ValueError("the training dataset is empty")
        self.length = length
        self.batch_size = batch_size
        self.env = env
        self.seed = seed
        self.start_step = start_step
        self._perm_epoch = -1
        self._perm = np.arange(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm = rng.permutation(self.length)
            self._perm_epoch = epoch
        return self._perm

    def batch(self, step: int) -> list[tuple[int, int]]:
        """The (index, seed) pairs this rank reads at global step `step`."""
        global_batch = self.batch_size * self.env.world_size
        first = step * global_batch + self.env.rank * self.batch_size
        out = []
        for pos in range(first, first + self.batch_size):
            epoch, offset = divmod(pos, self.length)
            out.append((int(self._permutation(epoch)[offset]), sample_seed(self.seed, pos)))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


class Augmented(Dataset):
    """Wraps a dataset: item (index, seed) -> the sample, augmented with that seed."""

    def __init__(self, dataset: Dataset, augment) -> None:
        self.dataset = dataset
        self.augment = augment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        item = self.dataset[index]
        if is_skipped(item):
            return item
        if item.get("labeled", True) and not bool(item["valid"].any()):
            reason = f"{item['name']}: no valid ground-truth pixel (every value missing or 0)"
            return skipped_item(item["name"], index, reason)
        if self.augment is None:
            return item
        return self.augment(item, torch.Generator().manual_seed(seed))


class PairedForCritic(Dataset):
    """Labeled items, each with an unlabeled image attached as "fake_rgb" (critic training).

    The unlabeled partner of labeled index i is a fixed pseudo-random index, so the pairing
    is deterministic and resumable like every other sample.
    """

    def __init__(self, labeled: Dataset, unlabeled: Dataset) -> None:
        if len(unlabeled) == 0:
            raise ValueError("the unlabeled dataset is empty")
        self.labeled = labeled
        self.unlabeled = unlabeled

    def __len__(self) -> int:
        return len(self.labeled)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.labeled[index])
        partner = (index * 2654435761 + 12345) % len(self.unlabeled)  # Knuth's multiplier
        fake = self.unlabeled[partner]
        if is_skipped(item) or is_skipped(fake):
            return item if is_skipped(item) else skipped_item(item["name"], index, fake[SKIPPED])
        fake_rgb = fake["rgb"]
        if fake_rgb.shape != item["rgb"].shape:
            raise ValueError(
                f"unlabeled image size {tuple(fake_rgb.shape)} differs from the labeled "
                f"{tuple(item['rgb'].shape)}; give both datasets the same size"
            )
        item["fake_rgb"] = fake_rgb
        return item


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep strings and other values as lists. Skipped items are dropped and
    their reasons listed under "skipped" ("file: cause"); `batch_size` says how many remain."""
    kept = [it for it in items if not is_skipped(it)]
    out: dict[str, Any] = {SKIPPED: [it[SKIPPED] for it in items if is_skipped(it)]}
    for key in kept[0] if kept else ():
        values = [it[key] for it in kept]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    out["batch_size"] = len(kept)
    return out


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    env: DistEnv,
    seed: int,
    start_step: int,
    augment=None,
    num_workers: int = 0,
) -> DataLoader:
    """An endless DataLoader that starts at `start_step` (see module docstring)."""
    sampler = StreamSampler(len(dataset), batch_size, env, seed, start_step)
    return DataLoader(
        Augmented(dataset, augment),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        persistent_workers=num_workers > 0,
        # Its own generator: creating the iterator must not consume the global torch RNG,
        # whose state the checkpoint restores.
        generator=torch.Generator().manual_seed(seed),
    )


def concat(datasets: Sequence[Dataset]) -> Dataset:
    """One dataset over several (a single one is returned as is)."""
    if not datasets:
        raise ValueError("no training datasets configured")
    return datasets[0] if len(datasets) == 1 else ConcatDataset(list(datasets))
