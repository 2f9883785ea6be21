"""Verified, crash-safe checkpoints of a TrainState with orbax-checkpoint."""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import _checks
from jaxdrop.training._errors import CheckpointError
from jaxdrop.training._placement import host_value
from jaxdrop.training._state import PyTree, TrainState

__all__ = ["STATE_FIELDS", "Checkpointer", "CorruptCheckpoint", "checksum", "fingerprint"]


class CorruptCheckpoint(Exception):
    """A checkpoint that cannot be read back or does not match its checksum."""


def fingerprint(tree: PyTree) -> str:
    leaves, treedef = jax.tree.flatten(tree)
    desc = str(treedef) + "|" + ";".join(f"{np.shape(x)}:{np.dtype(jnp.result_type(x))}" for x in leaves)
    return hashlib.sha256(desc.encode()).hexdigest()[:16]


def checksum(tree: PyTree) -> str:
    """SHA-256 of every leaf's dtype, shape and bytes; the same on every process of a distributed run."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.ascontiguousarray(host_value(leaf))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class Checkpointer:
    """Periodic, verified, crash-safe checkpoints of a :class:`TrainState` (orbax-checkpoint).

    Each checkpoint is a directory ``<directory>/<step>`` holding the state's
    arrays (``StandardSave``) and a JSON record (training history, a SHA-256
    checksum of every array, a fingerprint of the tree's structure, shapes and
    dtypes). Saves are synchronous. orbax writes a checkpoint into a temporary
    ``<step>.orbax-checkpoint-tmp-*`` directory and renames it into place only
    when complete, so a process killed at any moment, even mid-save, leaves the
    previous checkpoints intact and at worst a temporary directory, which is
    ignored and cleaned up. (No fsync is issued: this protects against the
    process dying, not against the machine losing power.)

    :meth:`restore_latest` loads the newest checkpoint that passes
    verification. A checkpoint that cannot be read or whose checksum does not
    match (truncated or garbled files) is reported with a ``RuntimeWarning``,
    moved aside to ``<directory>/corrupt-<step>-<time>`` (kept for inspection,
    ignored from then on), and the previous one is tried. A checkpoint written
    for a different model or optimizer (another fingerprint) raises
    :class:`CheckpointError` instead, and is left alone.

    In a multi-process run (``jax.distributed``) every process creates the
    Checkpointer and calls :meth:`save` and :meth:`restore_latest` together:
    orbax coordinates the write (each array written once, the checkpoint
    finalised when all processes are done), every process computes the same
    checksum (replicated arrays from their local copy, others gathered), and
    a restore places the arrays like the template's (a checkpoint of
    replicated state written by 2 processes restores in 1, and vice versa).

    Args:
      directory: where the checkpoints live (created if missing).
      max_to_keep: how many recent checkpoints to keep (at least 2, so that
        there is something to fall back to).

    >>> import tempfile, jax, jax.numpy as jnp
    >>> k = jax.random.key_data(jax.random.key(0))
    >>> state = TrainState(step=jnp.array(5), params={"w": jnp.arange(3.0)}, model_state={},
    ...                    opt_state=(), key=k, data_key=k)
    >>> ckpt = Checkpointer(tempfile.mkdtemp())
    >>> ckpt.save(state, {"note": "hello"})
    5
    >>> restored, meta = ckpt.restore_latest(state)
    >>> restored.params["w"].tolist(), meta["note"], ckpt.steps()
    ([0.0, 1.0, 2.0], 'hello', [5])
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_to_keep: int = 3):
        import orbax.checkpoint as ocp

        # At least 2: one to fall back to if the newest is corrupt.
        max_to_keep = _checks.integer(max_to_keep, "training.Checkpointer", "max_to_keep", minimum=2)
        self._ocp = ocp
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def steps(self) -> list[int]:
        """Steps of the finalised checkpoints, oldest first."""
        self._manager.reload()
        return sorted(int(s) for s in self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest finalised checkpoint's step (not verified), or None."""
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, state: TrainState, meta: Mapping[str, Any] | None = None) -> int:
        """Write ``state`` (and the JSON-serialisable ``meta``) as checkpoint ``state.step``; return the step."""
        ocp = self._ocp
        step = int(state.step)
        record = dict(meta or {})
        record["step"] = step
        record["fingerprint"] = fingerprint(state)
        record["checksum"] = checksum(state)
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(record)),
            force=True,
        )
        self._manager.wait_until_finished()
        return step

    def restore(self, template: TrainState, step: int) -> tuple[TrainState, dict[str, Any]]:
        """Load and verify checkpoint ``step`` into the structure of ``template``.

        Raises :class:`CheckpointError` if it was written for another structure,
        and a private corruption error if it is unreadable or fails its checksum
        (:meth:`restore_latest` handles that one).
        """
        ocp = self._ocp
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # unreadable JSON, missing item...
            raise CorruptCheckpoint(f"{type(e).__name__}: {e}") from e
        if not isinstance(meta, dict) or "checksum" not in meta or "fingerprint" not in meta:
            raise CorruptCheckpoint("its metadata record is incomplete")
        if meta["fingerprint"] != fingerprint(template):
            raise CheckpointError(
                f"jaxdrop.training: checkpoint {step} in {self.directory} was written for a different model, "
                f"optimizer or state structure (fingerprint {meta['fingerprint']}, expected "
                f"{fingerprint(template)}). Use another checkpoint directory, or rebuild the same model "
                f"and optimizer to resume."
            )
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template))
            )["state"]
        except Exception as e:
            raise CorruptCheckpoint(f"{type(e).__name__}: {str(e)[:500]}") from e
        if checksum(restored) != meta["checksum"]:
            raise CorruptCheckpoint("its arrays do not match the checksum recorded when it was saved")
        restored = template.replace(**{f: getattr(restored, f) for f in STATE_FIELDS})
        return restored, meta

    def restore_latest(self, template: TrainState) -> tuple[TrainState, dict[str, Any]] | None:
        """The newest good checkpoint as ``(state, meta)``, falling back past corrupt ones; None if there are none."""
        steps = self.steps()
        if not steps:
            return None
        reasons = []
        for step in reversed(steps):
            try:
                return self.restore(template, step)
            except CorruptCheckpoint as e:
                reasons.append(f"step {step}: {e}")
                moved = self._quarantine(step)
                older = [s for s in steps if s < step]
                then = f"falling back to step {older[-1]}" if older else "no older checkpoint to fall back to"
                warnings.warn(
                    f"jaxdrop.training: checkpoint {step} in {self.directory} is corrupt or incomplete ({e}); "
                    f"moved it to {moved}; {then}.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        raise CheckpointError(
            f"jaxdrop.training: none of the checkpoints in {self.directory} could be restored: "
            + "; ".join(reasons)
            + ". They were moved aside (corrupt-*); delete them, or start from scratch with an empty directory."
        )

    def _quarantine(self, step: int) -> str:
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(self.directory, f"corrupt-{step}-{time.time_ns()}")
        multi = jax.process_count() > 1
        if multi:  # every process has found it corrupt (same checksum); process 0 moves it
            self._ocp.multihost.sync_global_processes(f"jaxdrop_quarantine_{step}_found")
        if jax.process_index() == 0:
            try:
                os.rename(src, dst)
            except OSError:
                dst = "(could not move it)"
        else:
            dst = os.path.join(self.directory, f"corrupt-{step}-* (moved by process 0)")
        if multi:
            self._ocp.multihost.sync_global_processes(f"jaxdrop_quarantine_{step}_moved")
        self._manager.reload()
        return dst

    def close(self) -> None:
        self._manager.close()


STATE_FIELDS = ("step", "params", "model_state", "opt_state", "key", "data_key")
