"""Training with optax: dropout keys done right, fault-tolerant checkpoints.

The usual dropout bug in JAX is reusing one key at every step (the same units
are dropped every time, and dropout degenerates into a fixed sub-network).
Here the key of step ``s`` is always

.. math:: k_s = \\mathrm{fold\\_in}(k_{\\mathrm{base}}, s),

a pure function of the base key stored in the :class:`TrainState` and the step
number, and the batch of step ``s`` is a pure function of the data key and
``s`` (the epoch's order is ``permutation(fold_in(data_key, epoch))``). So a
run is reproducible bit for bit, and a run that was interrupted and resumed
from a checkpoint ends with exactly the parameters of an uninterrupted one.

>>> import jax, optax
>>> from flax import nnx
>>> from jaxdrop import data, models, training
>>> ds = data.digits()
>>> model = models.MLP(64, (32,), rngs=nnx.Rngs(0))
>>> trainer = training.Trainer(model, optax.adam(1e-2), max_norm=3.0)
>>> state = trainer.init(jax.random.key(0))
>>> state, history = trainer.fit(state, ds, batch_size=128, epochs=2, progress=False)
>>> int(state.step), len(history), history[-1]["loss"] < history[0]["loss"]
(28, 2, True)

Contents: :class:`Trainer` (train/eval steps and the :meth:`Trainer.fit` loop),
:class:`TrainState`, :class:`Checkpointer` (orbax-checkpoint with verification
and fall-back), :func:`max_norm`, and the errors :class:`NonFiniteError`,
:class:`CheckpointError`.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import math
import os
import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen, nnx, struct

from jaxdrop import prng
from jaxdrop.data import Dataset, epoch_permutation, num_batches

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "NonFiniteError",
    "TrainState",
    "Trainer",
    "cross_entropy_loss",
    "is_kernel",
    "max_norm",
    "write_history",
]

PyTree = Any
Batch = tuple[Any, Any]


# --------------------------------------------------------------------------- errors


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


class _CorruptCheckpoint(Exception):
    pass


# --------------------------------------------------------------------------- state


class TrainState(struct.PyTreeNode):
    """Everything a run needs to continue: a pytree of arrays (jit- and orbax-friendly).

    Attributes:
      step: int32 scalar, the number of updates applied so far.
      params: trainable parameters (a nested dict of arrays).
      model_state: non-trainable model variables (batch statistics...), ``{}`` if none.
      opt_state: the optax optimizer state.
      key: raw key data (``jax.random.key_data``) of the base dropout key; step
        ``s`` uses ``fold_in(key, s)`` (:meth:`dropout_key`).
      data_key: raw key data of the key that orders the training examples.
      key_impl: the PRNG implementation of both keys (static).

    >>> import jax, jax.numpy as jnp
    >>> base = jax.random.key(7)
    >>> s = TrainState(step=jnp.array(3), params={}, model_state={}, opt_state=(),
    ...                key=jax.random.key_data(base), data_key=jax.random.key_data(base))
    >>> bool(jnp.all(jax.random.key_data(s.dropout_key()) == jax.random.key_data(jax.random.fold_in(base, 3))))
    True
    """

    step: jax.Array
    params: PyTree
    model_state: PyTree
    opt_state: PyTree
    key: jax.Array
    data_key: jax.Array
    key_impl: str = struct.field(pytree_node=False, default="threefry2x32")

    def base_key(self) -> jax.Array:
        """The base dropout key as a typed key."""
        return jax.random.wrap_key_data(self.key, impl=self.key_impl)

    def shuffle_key(self) -> jax.Array:
        """The data-order key as a typed key."""
        return jax.random.wrap_key_data(self.data_key, impl=self.key_impl)

    def dropout_key(self, step: Any = None) -> jax.Array:
        """The dropout key of ``step`` (default: the current step): ``fold_in(base_key, step)``."""
        return jax.random.fold_in(self.base_key(), self.step if step is None else step)


# --------------------------------------------------------------------------- losses, constraints


def cross_entropy_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Mean softmax cross-entropy with integer labels: :math:`-\frac1B\sum_b \log \mathrm{softmax}(z_b)_{y_b}`.

    >>> import jax.numpy as jnp
    >>> float(cross_entropy_loss(jnp.zeros((2, 4)), jnp.array([0, 3])))  # log 4
    1.3862943649291992
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _path_names(path: Sequence[Any]) -> list[str]:
    out = []
    for p in path:
        for attr in ("key", "name", "idx"):
            if hasattr(p, attr):
                out.append(str(getattr(p, attr)))
                break
    return out


def is_kernel(path: Sequence[Any], leaf: Any) -> bool:
    """Default filter for max-norm and weight decay: leaves named ``kernel`` with ``ndim >= 2``.

    That is every ``Dense``/``Linear`` kernel ``(in, out)`` and ``Conv`` kernel
    ``(..., in, out)`` in Flax (linen and NNX); biases and normalisation
    scales are excluded.

    >>> import jax, jax.numpy as jnp
    >>> p = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
    >>> [is_kernel(path, leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(p)[0]]
    [False, True]
    """
    names = _path_names(path)
    return bool(names) and names[-1] == "kernel" and jnp.ndim(leaf) >= 2


def max_norm(
    params: PyTree,
    c: float,
    *,
    filter: Callable[[Sequence[Any], Any], bool] = is_kernel,
) -> PyTree:
    r"""Project every unit's incoming weight vector onto the L2 ball of radius ``c``.

    The max-norm constraint of Srivastava et al. (2014, sec. 5.1), used with
    dropout: for a kernel :math:`W` of shape ``(..., in, out)`` (Flax's layout,
    ``y = x @ W``), column :math:`w_j = W[..., j]` holds the weights *into* unit
    :math:`j`, and

    .. math::

        w_j \leftarrow \begin{cases} c\, w_j / \lVert w_j \rVert_2 & \lVert w_j \rVert_2 > c \\
        w_j & \text{otherwise,} \end{cases}

    with the norm over all axes but the last (the whole receptive field of a
    conv filter). A projection applied after each update, not a penalty; the
    paper's typical ``c`` is 3 to 4. Leaves for which ``filter(path, leaf)`` is
    False (default :func:`is_kernel`: biases...) are returned unchanged, and so
    are columns already inside the ball, bit for bit.

    >>> import jax.numpy as jnp
    >>> p = {"kernel": jnp.array([[3.0, 0.1], [4.0, 0.0]]), "bias": jnp.array([10.0, 10.0])}
    >>> q = max_norm(p, 2.0)
    >>> q["kernel"].tolist(), q["bias"].tolist()
    ([[1.2000000476837158, 0.10000000149011612], [1.600000023841858, 0.0]], [10.0, 10.0])
    """
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c <= 0:
        raise ValueError(f"jaxdrop.training.max_norm: the radius c must be a positive finite number, got {c!r}.")

    def project(path: Sequence[Any], w: Any) -> Any:
        if not filter(path, w):
            return w
        axes = tuple(range(w.ndim - 1))
        norm = jnp.sqrt(jnp.sum(jnp.square(w.astype(jnp.float32)), axis=axes, keepdims=True))
        scale = (c / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny)).astype(w.dtype)
        return jnp.where(norm > c, w * scale, w)

    return jax.tree_util.tree_map_with_path(project, params)


def _tree_all_finite(tree: PyTree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.stack(leaves).all() if leaves else jnp.array(True)


# --------------------------------------------------------------------------- model adapters


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class _NnxAdapter:
    """Runs an ``nnx.Module`` functionally on (params, model_state) pure dicts."""

    def __init__(self, model: nnx.Module, scheduled: bool):
        graphdef, params, rng_state, rest = nnx.split(model, nnx.Param, nnx.RngState, ...)  # type: ignore[misc]
        self.graphdef = graphdef
        self.params = nnx.to_pure_dict(params)
        self.rng_state = nnx.to_pure_dict(rng_state)
        self.model_state = nnx.to_pure_dict(rest)
        call = type(model).__call__
        self.pass_det = _accepts(call, "deterministic")
        self.pass_rngs = _accepts(call, "rngs")
        # Streams that layers hold for randomness at call time ('dropout', or 'default' when the
        # model was built with nnx.Rngs(seed)): reseeded from the step key at every step, or
        # every step would reuse the stream state captured here, i.e. the same masks.
        self.stream_tags = sorted(
            {
                node.tag
                for _, node in nnx.iter_graph(model)
                if isinstance(node, nnx.RngStream) and getattr(node, "tag", "params") != "params"
            }
        )
        if scheduled and not _accepts(call, "rate"):
            raise TypeError(
                f"jaxdrop.training.Trainer: rate_schedule needs a model whose __call__ takes a `rate` keyword "
                f"(a traced dropout rate); {type(model).__name__}.__call__ does not. See jaxdrop.models.MLP."
            )

    def init(self, key: jax.Array, sample_input: Any) -> tuple[PyTree, PyTree]:
        del key, sample_input  # an NNX model is already initialised
        return self.params, self.model_state

    def apply(
        self, params: PyTree, model_state: PyTree, x: Any, key: jax.Array | None, train: bool, rate: Any
    ) -> tuple[jax.Array, PyTree]:
        model = nnx.merge(self.graphdef, params, self.rng_state, model_state)
        if train and key is not None and self.stream_tags:
            # 'dropout' takes the step key itself; any other stream a key derived from it and its tag.
            stream_keys: dict[str, Any] = {
                tag: key if tag == "dropout" else jax.random.fold_in(key, zlib.crc32(tag.encode()) & 0x7FFFFFFF)
                for tag in self.stream_tags
            }
            nnx.reseed(model, **stream_keys)
        model = nnx.view(model, raise_if_not_found=False, deterministic=not train, use_running_average=not train)
        kwargs: dict[str, Any] = {}
        if self.pass_det:
            kwargs["deterministic"] = not train
        if self.pass_rngs and train and key is not None:
            kwargs["rngs"] = nnx.Rngs(dropout=key)
        if rate is not None:
            kwargs["rate"] = rate
        logits = model(x, **kwargs)
        rest = nnx.state(model, nnx.Not(nnx.Any(nnx.Param, nnx.RngState)))
        return logits, nnx.to_pure_dict(rest)


class _LinenAdapter:
    """Runs a ``linen.Module`` with ``deterministic`` and the ``'dropout'`` RNG collection."""

    def __init__(self, module: linen.Module, scheduled: bool):
        self.module = module
        self.scheduled = scheduled

    def init(self, key: jax.Array, sample_input: Any) -> tuple[PyTree, PyTree]:
        if sample_input is None:
            raise ValueError(
                "jaxdrop.training.Trainer.init: a linen module needs `sample_input` (e.g. x[:1]) to initialise."
            )
        kwargs: dict[str, Any] = {"rate": 0.0} if self.scheduled else {}
        k_params, k_drop = jax.random.split(key)
        variables = self.module.init(
            {"params": k_params, "dropout": k_drop}, jnp.asarray(sample_input), deterministic=True, **kwargs
        )
        variables = dict(variables)
        params = variables.pop("params", {})
        return params, variables

    def apply(
        self, params: PyTree, model_state: PyTree, x: Any, key: jax.Array | None, train: bool, rate: Any
    ) -> tuple[jax.Array, PyTree]:
        kwargs: dict[str, Any] = {"rate": rate} if rate is not None else {}
        rngs = {"dropout": key} if (train and key is not None) else {}
        variables = {"params": params, **model_state}
        if train and model_state:
            logits, updates = self.module.apply(
                variables, x, deterministic=False, rngs=rngs, mutable=list(model_state), **kwargs
            )
            return logits, {**model_state, **updates}  # type: ignore[dict-item]
        logits = self.module.apply(variables, x, deterministic=not train, rngs=rngs, **kwargs)
        return logits, model_state  # type: ignore[return-value]


# --------------------------------------------------------------------------- checkpoints


def _fingerprint(tree: PyTree) -> str:
    leaves, treedef = jax.tree.flatten(tree)
    desc = str(treedef) + "|" + ";".join(f"{np.shape(x)}:{np.dtype(jnp.result_type(x))}" for x in leaves)
    return hashlib.sha256(desc.encode()).hexdigest()[:16]


def _checksum(tree: PyTree) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.ascontiguousarray(np.asarray(leaf))
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

        if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 2:
            raise ValueError(
                f"jaxdrop.training.Checkpointer: max_to_keep must be an int >= 2 (one to fall back to if "
                f"the newest is corrupt), got {max_to_keep!r}."
            )
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
        record["fingerprint"] = _fingerprint(state)
        record["checksum"] = _checksum(state)
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
            raise _CorruptCheckpoint(f"{type(e).__name__}: {e}") from e
        if not isinstance(meta, dict) or "checksum" not in meta or "fingerprint" not in meta:
            raise _CorruptCheckpoint("its metadata record is incomplete")
        if meta["fingerprint"] != _fingerprint(template):
            raise CheckpointError(
                f"jaxdrop.training: checkpoint {step} in {self.directory} was written for a different model, "
                f"optimizer or state structure (fingerprint {meta['fingerprint']}, expected "
                f"{_fingerprint(template)}). Use another checkpoint directory, or rebuild the same model "
                f"and optimizer to resume."
            )
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template))
            )["state"]
        except Exception as e:
            raise _CorruptCheckpoint(f"{type(e).__name__}: {str(e)[:500]}") from e
        if _checksum(restored) != meta["checksum"]:
            raise _CorruptCheckpoint("its arrays do not match the checksum recorded when it was saved")
        restored = template.replace(**{f: getattr(restored, f) for f in _STATE_FIELDS})
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
            except _CorruptCheckpoint as e:
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
        try:
            os.rename(src, dst)
        except OSError:
            return "(could not move it)"
        self._manager.reload()
        return dst

    def close(self) -> None:
        self._manager.close()


_STATE_FIELDS = ("step", "params", "model_state", "opt_state", "key", "data_key")


# --------------------------------------------------------------------------- history


def write_history(history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Write a metrics history (a list of flat dicts) as ``.json`` or ``.csv`` (by extension).

    CSV columns are the union of the records' keys, in order of appearance.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "history.csv")
    >>> write_history([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}], path)
    >>> print(open(path).read().strip())
    epoch,loss
    1,0.5
    2,0.25
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        with open(path, "w") as f:
            json.dump(list(history), f, indent=1)
    elif ext == ".csv":
        fields: list[str] = []
        for rec in history:
            fields += [k for k in rec if k not in fields]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(history)
    else:
        raise ValueError(f"jaxdrop.training.write_history: {path!r} must end in .json or .csv.")


# --------------------------------------------------------------------------- trainer


def _as_dataset(data: Any, what: str) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        return Dataset(x, y, int(y.max()) + 1 if y.size and y.dtype.kind in "iu" else 0, what)
    raise TypeError(f"jaxdrop.training: `{what}` must be a jaxdrop.data.Dataset or an (x, y) tuple, got {type(data)}.")


class Trainer:
    r"""Train a Flax (NNX or linen) classifier with optax, with correct dropout keys.

    The training step (jitted once) computes, for state ``s`` and batch ``(x, y)``:

    .. math::

        k = \mathrm{fold\_in}(k_{\mathrm{base}}, s.\mathrm{step}),\quad
        g = \nabla_\theta\, \ell(f_\theta(x; k, \mathrm{rate}), y),\quad
        \theta' = \Pi_c(\theta + \mathrm{optax}(g)),

    where :math:`\Pi_c` is the optional max-norm projection (:func:`max_norm`)
    and the optimizer is ``optimizer`` preceded by optional global-norm
    clipping (``clip_norm``) and weight decay (``weight_decay``: an L2 term
    ``weight_decay * w`` added to the gradient of each kernel, before
    ``optimizer``; for decoupled decay pass ``optax.adamw`` instead).

    Models:
      * ``flax.nnx.Module`` (already initialised): called as
        ``model(x, deterministic=..., rngs=nnx.Rngs(dropout=k))`` (each keyword
        only if ``__call__`` accepts it), after ``nnx.view(model,
        deterministic=..., use_running_average=...)`` and, for layers that hold
        their own RNG stream, ``nnx.reseed(model, dropout=k)`` (a stream of
        another tag, e.g. ``default`` from ``nnx.Rngs(seed)``, gets a key folded
        from ``k`` and the tag), so no step replays another's masks. So
        stock ``nnx.Dropout``/``nnx.BatchNorm`` models and jaxdrop's own
        :mod:`jaxdrop.models` work as they are.
      * ``flax.linen.Module``: ``module.apply(variables, x, deterministic=...,
        rngs={"dropout": k})``, non-``params`` collections (``batch_stats``)
        updated in training.

    Args:
      model: the model (see above).
      optimizer: an ``optax.GradientTransformation`` (``optax.sgd(0.1,
        momentum=0.9)``, ``optax.adam(1e-3)``...).
      loss_fn: ``loss_fn(logits, labels) -> scalar``; default
        :func:`cross_entropy_loss` (integer labels). Accuracy is reported for
        integer labels.
      clip_norm: clip gradients to this global L2 norm (``optax.clip_by_global_norm``).
      weight_decay: L2 coefficient on kernels (see above).
      max_norm: radius ``c`` of the max-norm constraint (Srivastava et al.
        2014 use 3 to 4), applied after each update to leaves selected by
        ``max_norm_filter`` (default :func:`is_kernel`).
      rate_schedule: a function ``step -> dropout rate`` (any optax schedule, or
        :func:`jaxdrop.curriculum_schedule`...). Its value, a traced scalar, is
        passed as ``rate=`` to the model at every step, so the rate changes
        without recompiling; the model must take a call-time ``rate`` (as
        :mod:`jaxdrop.models` do). Logged as ``rate`` in the history.
      on_nonfinite: ``"raise"`` (default): a NaN/inf loss or gradient stops
        training with :class:`NonFiniteError` naming the step, before the update
        is applied or anything is saved, so the newest checkpoint is the last
        good state. ``"skip"``: the update is skipped (parameters, optimizer
        and model state unchanged, as ``optax.apply_if_finite`` does), the step
        counter advances, and the epoch's ``skipped`` count records it.

    >>> import jax, optax
    >>> from flax import nnx
    >>> from jaxdrop.models import MLP
    >>> trainer = Trainer(MLP(64, (32,), rngs=nnx.Rngs(0)), optax.sgd(0.1, momentum=0.9), max_norm=3.0)
    >>> state = trainer.init(jax.random.key(0))
    >>> int(state.step), {k: v["kernel"].shape for k, v in state.params["layers"].items()}
    (0, {0: (64, 32), 1: (32, 10)})

    Then ``state, history = trainer.fit(state, dataset, epochs=..., checkpoint_dir=...)``
    (see the module example), or call the jitted ``trainer.train_step(state, x, y)``
    and ``trainer.evaluate(state, dataset)`` yourself.
    """

    def __init__(
        self,
        model: Any,
        optimizer: optax.GradientTransformation,
        *,
        loss_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
        clip_norm: float | None = None,
        weight_decay: float | None = None,
        max_norm: float | None = None,
        max_norm_filter: Callable[[Sequence[Any], Any], bool] = is_kernel,
        rate_schedule: Callable[[Any], Any] | None = None,
        on_nonfinite: Literal["raise", "skip"] = "raise",
    ):
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(
                f"jaxdrop.training.Trainer: on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}."
            )
        if not isinstance(optimizer, optax.GradientTransformation):
            raise TypeError(
                f"jaxdrop.training.Trainer: optimizer must be an optax.GradientTransformation "
                f"(e.g. optax.adam(1e-3)), got {type(optimizer).__name__}."
            )
        for name, value in (("clip_norm", clip_norm), ("weight_decay", weight_decay), ("max_norm", max_norm)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0
            ):
                raise ValueError(f"jaxdrop.training.Trainer: {name} must be a non-negative number, got {value!r}.")
        if max_norm is not None and max_norm <= 0:
            raise ValueError(f"jaxdrop.training.Trainer: max_norm must be positive, got {max_norm!r}.")
        if rate_schedule is not None and not callable(rate_schedule):
            raise TypeError("jaxdrop.training.Trainer: rate_schedule must be a function step -> rate.")
        scheduled = rate_schedule is not None
        if isinstance(model, nnx.Module):
            self._adapter: _NnxAdapter | _LinenAdapter = _NnxAdapter(model, scheduled)
        elif isinstance(model, linen.Module):
            self._adapter = _LinenAdapter(model, scheduled)
        else:
            raise TypeError(
                f"jaxdrop.training.Trainer: model must be a flax.nnx.Module or flax.linen.Module, "
                f"got {type(model).__name__}."
            )
        self.model = model
        self.loss_fn = loss_fn or cross_entropy_loss
        self.max_norm = None if max_norm is None else float(max_norm)
        self.max_norm_filter = max_norm_filter
        self.rate_schedule = rate_schedule
        self.on_nonfinite = on_nonfinite
        parts = []
        if clip_norm is not None:
            parts.append(optax.clip_by_global_norm(float(clip_norm)))
        if weight_decay:
            parts.append(
                optax.add_decayed_weights(
                    float(weight_decay), mask=lambda p: jax.tree_util.tree_map_with_path(is_kernel, p)
                )
            )
        self.tx = optax.chain(*parts, optimizer) if parts else optimizer
        self.train_step = jax.jit(self._train_step)
        self._eval_batch = jax.jit(self._eval_batch_impl)
        self._predict = jax.jit(self._predict_impl)

    # -- state ---------------------------------------------------------------

    def init(self, key: Any, *, sample_input: Any = None) -> TrainState:
        """A fresh :class:`TrainState`.

        ``key`` is split three ways: parameter initialisation (linen only; an
        NNX model arrives initialised), the base dropout key, and the data-order
        key. ``sample_input`` (a batch, e.g. ``x[:1]``) is needed for linen.
        """
        key = prng.as_key(key, fn="training.Trainer.init", signature="key, *, sample_input")
        impl = str(jax.random.key_impl(key))
        k_init, k_drop, k_data = jax.random.split(key, 3)
        params, model_state = self._adapter.init(k_init, sample_input)
        params = jax.tree.map(jnp.asarray, params)
        return TrainState(
            step=jnp.array(0, jnp.int32),
            params=params,
            model_state=jax.tree.map(jnp.asarray, model_state),
            opt_state=self.tx.init(params),
            key=jax.random.key_data(k_drop),
            data_key=jax.random.key_data(k_data),
            key_impl=impl,
        )

    # -- steps ---------------------------------------------------------------

    def _metrics(self, logits: jax.Array, y: jax.Array) -> jax.Array:
        if jnp.issubdtype(y.dtype, jnp.integer) and logits.ndim == y.ndim + 1:
            return jnp.mean(jnp.argmax(logits, -1) == y)
        return jnp.array(jnp.nan, jnp.float32)

    def _train_step(self, state: TrainState, x: jax.Array, y: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        key = state.dropout_key()
        rate = None if self.rate_schedule is None else jnp.asarray(self.rate_schedule(state.step), jnp.float32)

        def loss_of(params: PyTree) -> tuple[jax.Array, tuple[jax.Array, PyTree]]:
            logits, new_ms = self._adapter.apply(params, state.model_state, x, key, True, rate)
            return self.loss_fn(logits, y), (logits, new_ms)

        (loss, (logits, new_ms)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        finite = jnp.isfinite(loss) & _tree_all_finite(grads)
        updates, new_opt = self.tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        if self.max_norm is not None:
            new_params = max_norm(new_params, self.max_norm, filter=self.max_norm_filter)
        if self.on_nonfinite == "skip":

            def keep_if_finite(new: PyTree, old: PyTree) -> PyTree:
                return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)

            new_params = keep_if_finite(new_params, state.params)
            new_opt = keep_if_finite(new_opt, state.opt_state)
            new_ms = keep_if_finite(new_ms, state.model_state)
        new_state = state.replace(step=state.step + 1, params=new_params, opt_state=new_opt, model_state=new_ms)
        metrics = {
            "loss": loss,
            "accuracy": self._metrics(logits, y),
            "finite": finite,
        }
        if rate is not None:
            metrics["rate"] = rate
        return new_state, metrics

    def _predict_impl(self, state: TrainState, x: jax.Array) -> jax.Array:
        logits, _ = self._adapter.apply(state.params, state.model_state, x, None, False, None)
        return logits

    def _eval_batch_impl(
        self, state: TrainState, x: jax.Array, y: jax.Array, weight: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        logits = self._predict_impl(state, x)
        per_example = jax.vmap(lambda lo, yy: self.loss_fn(lo[None], yy[None]))(logits, y)
        correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
        return jnp.sum(per_example * weight), jnp.sum(correct * weight)

    def predict(self, state: TrainState, x: Any) -> jax.Array:
        """Logits with dropout off (evaluation mode), jitted."""
        return self._predict(state, jnp.asarray(x))

    def evaluate(self, state: TrainState, data: Any, *, batch_size: int = 1000) -> dict[str, float]:
        """Mean loss, accuracy and error (= 1 - accuracy) over ``data`` with dropout off.

        Batches of exactly ``batch_size`` examples (the last one, or a smaller
        dataset, padded and masked), so one compilation serves every dataset.
        """
        ds = _as_dataset(data, "data")
        n = len(ds)
        if n == 0:
            raise ValueError("jaxdrop.training.Trainer.evaluate: empty dataset.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"jaxdrop.training.Trainer.evaluate: batch_size must be a positive int, got {batch_size!r}.")
        bs = batch_size
        loss_sum, correct = 0.0, 0.0
        for start in range(0, n, bs):
            xb, yb = ds.x[start : start + bs], ds.y[start : start + bs]
            m = len(yb)
            w = np.ones(bs, np.float32)
            if m < bs:
                pad = bs - m
                xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
                yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
                w[m:] = 0.0
            ls, c = self._eval_batch(state, xb, yb, w)
            loss_sum += float(ls)
            correct += float(c)
        acc = correct / n
        return {"loss": loss_sum / n, "accuracy": acc, "error": 1.0 - acc}

    # -- loop ----------------------------------------------------------------

    def fit(
        self,
        state: TrainState,
        train: Any,
        *,
        batch_size: int = 100,
        epochs: int | None = 1,
        steps: int | None = None,
        shuffle: bool = True,
        eval_data: Mapping[str, Any] | None = None,
        eval_every: int = 1,
        eval_batch_size: int = 1000,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        save_every: int | None = None,
        max_to_keep: int = 3,
        resume: bool = True,
        on_save: Callable[[int], Any] | None = None,
        progress: bool = True,
        desc: str | None = None,
        history_path: str | os.PathLike[str] | None = None,
    ) -> tuple[TrainState, list[dict[str, Any]]]:
        """Train until ``state.step`` reaches the target; return ``(state, history)``.

        Step ``s`` uses the batch ``s % steps_per_epoch`` of epoch
        ``s // steps_per_epoch`` (example order
        ``permutation(fold_in(data_key, epoch))``, incomplete last batch dropped)
        and the dropout key ``fold_in(base_key, s)``. Nothing depends on where a
        run started, so resuming from a checkpoint reproduces the uninterrupted
        run bit for bit.

        Args:
          state: the starting state (from :meth:`init`); also the template a
            checkpoint is restored into.
          train: a :class:`jaxdrop.data.Dataset` or an ``(x, y)`` tuple of arrays.
          batch_size: examples per step.
          epochs: train for ``epochs * steps_per_epoch`` steps in total...
          steps: ...or exactly this many steps in total (overrides ``epochs``).
            Both count from step 0, so a resumed run stops at the same place.
          shuffle: reshuffle each epoch (else the stored order).
          eval_data: ``{"name": dataset}`` evaluated with dropout off every
            ``eval_every`` epochs (and at the end); adds ``name_loss``,
            ``name_accuracy`` and ``name_error`` to the history.
          checkpoint_dir: save checkpoints here (see :class:`Checkpointer`)
            every ``save_every`` steps (default: every epoch) and at the end.
          resume: if ``checkpoint_dir`` holds checkpoints, continue from the
            newest good one (with its history). ``resume=False`` with existing
            checkpoints raises :class:`CheckpointError` rather than overwrite.
          on_save: called with the step after each checkpoint is written.
          progress: show a tqdm progress bar (loss, accuracy); False = silent.
          desc: the bar's label.
          history_path: also write the history to this ``.json`` or ``.csv``
            file (at the end, or when training stops on an error).

        Returns:
          The final state and the history: one record per epoch (and one at the
          end of a partial epoch) with ``epoch`` (fractional for a partial one),
          ``step``, ``loss`` and ``accuracy`` (means over the epoch's training
          batches, dropout on), ``skipped`` (non-finite steps skipped),
          ``rate`` (with a ``rate_schedule``: the rate at the epoch's last
          step), and the evaluations.

        Raises:
          NonFiniteError: a non-finite loss or gradient with ``on_nonfinite="raise"``.
          CheckpointError: see ``resume`` and :meth:`Checkpointer.restore_latest`.
        """
        from tqdm.auto import tqdm

        ds = _as_dataset(train, "train")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"jaxdrop.training.Trainer.fit: batch_size must be a positive int, got {batch_size!r}.")
        spe = num_batches(len(ds), batch_size)
        if spe == 0:
            raise ValueError(
                f"jaxdrop.training.Trainer.fit: batch_size={batch_size} is larger than the training set "
                f"({len(ds)} examples)."
            )
        if steps is None:
            if epochs is None or isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
                raise ValueError(f"jaxdrop.training.Trainer.fit: epochs must be a non-negative int, got {epochs!r}.")
            total = epochs * spe
        else:
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
                raise ValueError(f"jaxdrop.training.Trainer.fit: steps must be a non-negative int, got {steps!r}.")
            total = steps
        save_every = spe if save_every is None else save_every
        if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
            raise ValueError(f"jaxdrop.training.Trainer.fit: save_every must be a positive int, got {save_every!r}.")
        if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
            raise ValueError(f"jaxdrop.training.Trainer.fit: eval_every must be a positive int, got {eval_every!r}.")
        evals = {name: _as_dataset(d, name) for name, d in (eval_data or {}).items()}

        history: list[dict[str, Any]] = []
        acc: dict[str, Any] = {"loss": 0.0, "accuracy": 0.0, "n": 0, "skipped": 0}
        ckpt: Checkpointer | None = None
        if checkpoint_dir is not None:
            ckpt = Checkpointer(checkpoint_dir, max_to_keep=max_to_keep)
            if resume:
                found = ckpt.restore_latest(state)
                if found is not None:
                    state, meta = found
                    history = list(meta.get("history", []))
                    acc = dict(meta.get("epoch_acc", acc))
            elif ckpt.steps():
                raise CheckpointError(
                    f"jaxdrop.training.Trainer.fit: {ckpt.directory} already holds checkpoints "
                    f"{ckpt.steps()}; pass resume=True to continue from them, or use an empty directory."
                )

        def save(s: TrainState) -> None:
            if ckpt is not None:
                ckpt.save(s, {"history": history, "epoch_acc": acc})
                if on_save is not None:
                    on_save(int(s.step))

        def record(s: TrainState, step: int) -> None:
            n = max(acc["n"], 1)
            rec: dict[str, Any] = {
                "epoch": step / spe if step % spe else step // spe,
                "step": step,
                "loss": acc["loss"] / n,
                "accuracy": acc["accuracy"] / n,
                "skipped": acc["skipped"],
            }
            if self.rate_schedule is not None:
                rec["rate"] = acc["rate"]
            for name, d in evals.items():
                for k, v in self.evaluate(s, d, batch_size=eval_batch_size).items():
                    rec[f"{name}_{k}"] = v
            history.append(rec)
            acc.update(loss=0.0, accuracy=0.0, n=0, skipped=0)

        start = int(state.step)
        if start > total:
            warnings.warn(
                f"jaxdrop.training.Trainer.fit: the state is already at step {start}, beyond the {total} steps "
                f"asked for; returning it unchanged.",
                RuntimeWarning,
                stacklevel=2,
            )
        bar = tqdm(total=total, initial=min(start, total), disable=not progress, desc=desc, unit="step", leave=True)
        order: np.ndarray | None = None
        order_epoch = -1
        try:
            step = start
            while step < total:
                epoch, b = divmod(step, spe)
                if order_epoch != epoch:
                    order = epoch_permutation(state.shuffle_key(), len(ds), epoch) if shuffle else np.arange(len(ds))
                    order_epoch = epoch
                assert order is not None
                idx = order[b * batch_size : (b + 1) * batch_size]
                new_state, m = self.train_step(state, ds.x[idx], ds.y[idx])
                loss, finite = float(m["loss"]), bool(m["finite"])
                if not finite and self.on_nonfinite == "raise":
                    latest = ckpt.latest_step() if ckpt is not None else None
                    where = (
                        f"the newest checkpoint (step {latest} in {ckpt.directory}) is untouched"
                        if ckpt is not None and latest is not None
                        else "no checkpoint was written"
                    )
                    raise NonFiniteError(
                        f"jaxdrop.training: non-finite {'loss' if not math.isfinite(loss) else 'gradient'} "
                        f"(loss={loss}) at step {step} (epoch {epoch}, batch {b}); training stopped without "
                        f"applying that update; {where}. The last good state is this error's `.state`. "
                        f"Lower the learning rate, add clip_norm, check the data, or pass on_nonfinite='skip'.",
                        step=step,
                        loss=loss,
                        state=state,
                        checkpoint_step=latest,
                    )
                state = new_state
                step += 1
                if finite:
                    acc["loss"] += loss
                    acc["accuracy"] += float(m["accuracy"])
                    acc["n"] += 1
                else:
                    acc["skipped"] += 1
                if self.rate_schedule is not None:
                    acc["rate"] = float(m["rate"])
                bar.update(1)
                if progress:
                    bar.set_postfix(loss=f"{loss:.4f}", acc=f"{float(m['accuracy']):.3f}", refresh=False)
                if (step % spe == 0 and (step // spe) % eval_every == 0) or step == total:
                    record(state, step)
                if step % save_every == 0 or step == total:
                    save(state)
        finally:
            bar.close()
            if ckpt is not None:
                ckpt.close()
            if history_path is not None:
                write_history(history, history_path)
        return state, history
