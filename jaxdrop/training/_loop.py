"""The fit loop's bookkeeping: its validated plan, its history and running sums, and input coercion."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxdrop import _checks
from jaxdrop.data import Dataset

__all__ = ["Log", "Plan", "as_dataset", "option"]


def as_dataset(data: Any, what: str) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        return Dataset(x, y, int(y.max()) + 1 if y.size and y.dtype.kind in "iu" else 0, what)
    raise TypeError(f"jaxdrop.training: `{what}` must be a jaxdrop.data.Dataset or an (x, y) tuple, got {type(data)}.")


def option(value: Any, name: str, fn: str = "training.Trainer") -> float | None:
    """An optional finite number >= 0 (clip_norm, weight_decay, max_norm)."""
    if value is None:
        return None
    if not _checks.is_concrete(value):
        raise TypeError(f"jaxdrop.{fn}: `{name}` must be a Python number, got a traced value.")
    return float(_checks.nonnegative(value, fn, name))


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one :meth:`Trainer.fit` call does, validated."""

    data: Dataset
    batch_size: int
    steps_per_epoch: int
    total: int
    shuffle: bool
    save_every: int
    eval_every: int
    evals: dict[str, Dataset]
    eval_batch_size: int

    def epoch_value(self, step: int) -> float | int:
        """The epoch a record at ``step`` closes: an int at an epoch's end, else a fraction."""
        return step / self.steps_per_epoch if step % self.steps_per_epoch else step // self.steps_per_epoch

    def closes_record(self, step: int) -> bool:
        """Whether a history record is written after ``step`` steps (every ``eval_every`` epochs)."""
        spe = self.steps_per_epoch
        return step % spe == 0 and (step // spe) % self.eval_every == 0


@dataclasses.dataclass
class Log:
    """The history and the running sums of the record being accumulated.

    Both are saved in every checkpoint, so a resumed run continues the very record
    it was interrupted in and its history equals the uninterrupted run's.
    """

    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    sums: dict[str, Any] = dataclasses.field(default_factory=lambda: {"loss": 0.0, "accuracy": 0.0, "n": 0, "skipped": 0})

    def add(self, metrics: Mapping[str, Any], finite: bool, loss: float) -> None:
        if finite:
            self.sums["loss"] += loss
            self.sums["accuracy"] += float(metrics["accuracy"])
            self.sums["n"] += 1
        else:
            self.sums["skipped"] += 1
        if "rate" in metrics:
            self.sums["rate"] = float(metrics["rate"])

    def record(self, step: int, epoch: float | int, evaluations: Mapping[str, float]) -> dict[str, Any]:
        """The record closing at ``step`` (the means since the last one)."""
        n = max(self.sums["n"], 1)
        rec: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "loss": self.sums["loss"] / n,
            "accuracy": self.sums["accuracy"] / n,
            "skipped": self.sums["skipped"],
        }
        if "rate" in self.sums:
            rec["rate"] = self.sums["rate"]
        rec.update(evaluations)
        return rec

    def commit(self, rec: dict[str, Any]) -> None:
        self.history.append(rec)
        self.sums = {"loss": 0.0, "accuracy": 0.0, "n": 0, "skipped": 0}

    def meta(self) -> dict[str, Any]:
        return {"history": self.history, "epoch_acc": self.sums}
