"""The errors training raises."""

from __future__ import annotations

from typing import Any

__all__ = ["CheckpointError", "NonFiniteError"]


class NonFiniteError(FloatingPointError):
    """The loss or a gradient was NaN or infinite; training stopped before applying it.

    Attributes:
      step: the step whose loss or gradient was not finite (its update was
        *not* applied: ``state.step == step``).
      loss: the loss of that step (may be finite when only a gradient was not).
      state: the last good :class:`TrainState` (after ``step`` updates).
      checkpoint_step: the newest checkpoint on disk, untouched, or None.
    """

    def __init__(self, message: str, *, step: int, loss: float, state: Any, checkpoint_step: int | None):
        super().__init__(message)
        self.step = step
        self.loss = loss
        self.state = state
        self.checkpoint_step = checkpoint_step


class CheckpointError(RuntimeError):
    """No usable checkpoint, or a checkpoint that does not match the model being trained."""
