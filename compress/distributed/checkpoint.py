"""Epoch checkpoints of a job that several ranks train.

Each rank keeps its own state (`rank-R/epoch-E/` under the fit's folder): DDP ranks
hold the same weights, but GPipe ranks each hold the optimizer state of their own
stage only, so rank 0's state alone cannot restart rank 1.

A `kill -9` can land while one rank has written epoch E and another has not, so a
rank drops epoch E-1 only after every rank has written E (an all-reduce after the
save), and a resume starts from the newest epoch that every rank holds whole.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from compress.distributed.session import Session
from compress.training.checkpoint import EpochCheckpoint

_PREFIX = "epoch-"


def _all_min(value: int) -> int:
    tensor = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


class RankCheckpoint(EpochCheckpoint):
    """The epoch state of this rank, saved and resumed in step with the other ranks.

    Args:
        folder: the fit's checkpoint folder (the same path on every rank: the ranks of
            one `compress run --nproc N` share the run folder).
        session: this rank's place in the process group.

    Example:
        >>> checkpoint = RankCheckpoint(run / ".resume/train-ab12/fit-1", session)  # doctest: +SKIP
    """

    def __init__(self, folder: str | Path, session: Session):
        super().__init__(folder)
        self.own = self.folder / f"rank-{session.rank}"

    def _epochs(self) -> list[int]:
        found = []
        for path in self.own.glob(f"{_PREFIX}*"):
            suffix = path.name[len(_PREFIX) :]
            if suffix.isdigit():
                found.append(int(suffix))
        return sorted(found)

    def _at(self, epoch: int) -> EpochCheckpoint:
        return EpochCheckpoint(self.own / f"{_PREFIX}{epoch}")

    def save(self, epoch: int, fingerprint: str, **state) -> None:
        target = self._at(epoch)
        if self.usable:
            target.save(epoch, fingerprint, **state)
        # every rank takes part, so a rank whose state cannot be stored stops them all
        everyone_saved = _all_min(int(self.usable and target.usable)) == 1
        if not everyone_saved and self.off_reason is None:
            self.off_reason = target.off_reason or "another rank's state cannot be stored"
        self.usable = everyone_saved
        if everyone_saved:  # epoch `epoch` is whole on every rank: older ones can go
            for older in self._epochs():
                if older < epoch:
                    shutil.rmtree(self._at(older).folder, ignore_errors=True)

    def load(self, fingerprint: str):
        """This rank's state at the newest epoch all ranks hold whole, or None on all."""
        whole = {e: s for e in self._epochs() if (s := self._at(e).load(fingerprint)) is not None}
        common = _all_min(max(whole, default=0))
        # a rank lacking that epoch (it kept only a newer one) makes every rank start over
        if common == 0 or _all_min(int(common in whole)) == 0:
            return None
        return whole[common]
