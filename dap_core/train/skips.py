"""Training samples that could not be used: each named once, counted, and held to a limit.

Readers yield a skipped item for a sample they cannot use and leave out samples whose files are
missing when they are built (`dap_core.data.datasets`); `collate` drops skipped items from their
batch (`dap_core.train.data`). The `SkipLedger` owns what follows: the distinct reasons seen so
far ("file: cause", one per sample, however often the sample is drawn again), the fraction of
the training set they make, and the stop when that passes `data.max_skip_fraction` — a run
whose data is mostly unreadable, or has no valid ground truth at all, must not train to a
clean exit learning nothing. Under torchrun the ranks swap their new reasons every step they
have any, so every rank holds the same ledger and stops at the same step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, Dataset

from dap_core.train.distributed import DistEnv


class TooManySkippedError(RuntimeError):
    """More of the training set was unusable than `data.max_skip_fraction` allows."""


def built_without(dataset: Dataset) -> list[str]:
    """Reasons of the samples the datasets left out when they were built (missing files),
    gathered through concatenations and the critic's pairing (its labeled side)."""
    if isinstance(dataset, ConcatDataset):
        return [r for part in dataset.datasets for r in built_without(part)]
    labeled = getattr(dataset, "labeled", None)
    if isinstance(labeled, Dataset):
        return built_without(labeled)
    return list(getattr(dataset, "skipped", None) or [])


class SkipLedger:
    """Distinct unusable samples out of `total`; `check` stops past `max_fraction`."""

    def __init__(self, total: int, max_fraction: float) -> None:
        self.total = max(int(total), 1)
        self.max_fraction = float(max_fraction)
        self._reasons: dict[str, None] = {}  # insertion-ordered set

    @property
    def count(self) -> int:
        return len(self._reasons)

    @property
    def fraction(self) -> float:
        return min(1.0, self.count / self.total)

    @property
    def reasons(self) -> list[str]:
        return list(self._reasons)

    def unseen(self, reasons: Iterable[str]) -> list[str]:
        """The reasons not yet in the ledger, each once, in order."""
        return list(dict.fromkeys(r for r in reasons if r not in self._reasons))

    def add(self, reasons: Iterable[str]) -> list[str]:
        """Record `reasons`; returns the new ones (to be logged once)."""
        new = self.unseen(reasons)
        self._reasons.update(dict.fromkeys(new))
        return new

    def check(self) -> None:
        """Raise `TooManySkippedError` when the skipped fraction passes the limit, or when no
        sample is left at all (whatever the limit: such a run would train nothing)."""
        if self.count >= self.total:
            raise TooManySkippedError(
                f"no training sample can be used ({self.count} of {self.total} skipped); first: "
                f"{next(iter(self._reasons))}"
            )
        if self.count and self.fraction > self.max_fraction:
            raise TooManySkippedError(
                f"{self.count} of {self.total} training samples ({self.fraction:.0%}) could not "
                f"be used, more than data.max_skip_fraction {self.max_fraction:g}; first: "
                f"{next(iter(self._reasons))}"
            )

    def summary(self) -> str:
        return f"skipped {self.count} of {self.total} samples ({self.fraction:.1%})"


def exchange(
    local: Sequence[str], empty: bool, ledger: SkipLedger, env: DistEnv, device: torch.device
) -> tuple[list[str], bool]:
    """(new reasons over all ranks, whether any rank's batch is empty) for this step.

    One small all-reduce per step; the reasons themselves travel only on steps where some rank
    has a new one, so a clean data set costs no object collective.
    """
    mine = ledger.unseen(local)
    if not env.distributed:
        return ledger.add(mine), empty
    counts = torch.tensor([len(mine), int(empty)], device=device, dtype=torch.int64)
    dist.all_reduce(counts)
    if int(counts[0]) > 0:
        gathered: list[list[str] | None] = [None] * env.world_size
        dist.all_gather_object(gathered, mine)
        mine = [r for part in gathered for r in (part or [])]
    return ledger.add(mine), bool(counts[1] > 0)
