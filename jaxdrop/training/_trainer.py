"""The Trainer: jitted train and eval steps and the fit loop (validate, resume, epochs, non-finite guard)."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from jaxdrop import _checks, prng
from jaxdrop.data import epoch_permutation, num_batches
from jaxdrop.training._adapters import LinenAdapter, NnxAdapter, RateFilter, make_adapter
from jaxdrop.training._checkpoint import Checkpointer
from jaxdrop.training._constraints import cross_entropy_loss, is_kernel, max_norm, tree_all_finite
from jaxdrop.training._errors import CheckpointError, NonFiniteError
from jaxdrop.training._history import write_history
from jaxdrop.training._loop import Log, Plan, as_dataset, option
from jaxdrop.training._placement import DataParallel, host_value, layout
from jaxdrop.training._state import PyTree, TrainState

__all__ = ["Trainer"]

_FIT = "training.Trainer.fit"


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
        ``model(x, <flag>=..., rngs=nnx.Rngs(dropout=k))`` (``rngs`` only if
        ``__call__`` accepts it; ``<flag>`` see ``train_flag``), after ``nnx.view(model,
        deterministic=..., use_running_average=...)`` and, for layers that hold
        their own RNG stream, ``nnx.reseed(model, dropout=k)`` (a stream of
        another tag, e.g. ``default`` from ``nnx.Rngs(seed)``, gets a key folded
        from ``k`` and the tag), so no step replays another's masks. So
        stock ``nnx.Dropout``/``nnx.BatchNorm`` models and jaxdrop's own
        :mod:`jaxdrop.models` work as they are.
      * ``flax.linen.Module``: ``module.apply(variables, x, <flag>=...,
        rngs={"dropout": k})``, non-``params`` collections (``batch_stats``)
        updated in training.

      :meth:`model_from` gives the trained model back (an nnx model, or a bound
      linen module), parameters and model state both.

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
        :func:`jaxdrop.curriculum_schedule`...). Its value is a traced scalar, so
        the rate changes without recompiling. It reaches the model as a call-time
        ``rate=`` if ``__call__`` takes one (as :mod:`jaxdrop.models` do) and no
        ``rate_filter`` is given; otherwise it becomes the ``rate`` of every layer
        ``rate_filter`` selects (default: all of jaxdrop's ``linen``/``nnx``
        dropout layers). Logged as ``rate`` in the history.
      rate_filter: ``filter(layer) -> bool``, the layers a ``rate_schedule``
        drives (e.g. ``lambda m: isinstance(m, jaxdrop.nnx.Dropout)``).
      train_flag: the keyword of the model's ``__call__`` that switches training
        and evaluation. ``"auto"`` (default) finds ``deterministic`` (True in
        evaluation), ``train``, ``training`` or ``is_training`` (True in
        training), or passes ``deterministic`` to a ``**kwargs``; a model that
        takes none of them is called without one (its nnx layers are still
        switched by ``nnx.view``). A name of your own is True in training, unless
        it reads like ``deterministic``/``eval``/``inference``. ``None``: pass
        nothing.
      on_nonfinite: ``"raise"`` (default): a NaN/inf loss or gradient stops
        training with :class:`NonFiniteError` naming the step, before the update
        is applied or anything is saved, so the newest checkpoint is the last
        good state. ``"skip"``: the update is skipped (parameters, optimizer
        and model state unchanged, as ``optax.apply_if_finite`` does), the step
        counter advances, and the epoch's ``skipped`` count records it.
      mesh: train data-parallel on this ``jax.sharding.Mesh``, which may span
        several processes (``jax.distributed``; see ``docs/multihost.md``). The
        state is replicated on every device; each batch is split along
        ``data_axis`` and every process loads only the rows its own devices
        hold (``jax.make_array_from_process_local_data``), so the global batches
        are those of a one-process run, in the same order. ``batch_size`` and
        ``eval_batch_size`` must be multiples of the data axis' size. Every
        process runs the same :meth:`fit` call (same data, same key);
        checkpoints are written by all of them together (orbax) and hold the
        replicated state, so they restore on any layout. ``None`` (default):
        one device.
      data_axis: the mesh axis the batch is split along (default ``"data"``);
        the state is replicated along every axis.

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
        rate_filter: RateFilter | None = None,
        train_flag: str | Literal["auto"] | None = "auto",
        on_nonfinite: Literal["raise", "skip"] = "raise",
        mesh: jax.sharding.Mesh | None = None,
        data_axis: str = "data",
    ):
        fn = "training.Trainer"
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"jaxdrop.{fn}: `on_nonfinite` must be 'raise' or 'skip', got {on_nonfinite!r}.")
        if not isinstance(optimizer, optax.GradientTransformation):
            raise TypeError(
                f"jaxdrop.{fn}: `optimizer` must be an optax.GradientTransformation "
                f"(e.g. optax.adam(1e-3)), got {type(optimizer).__name__}."
            )
        clip = option(clip_norm, "clip_norm")
        decay = option(weight_decay, "weight_decay")
        radius = option(max_norm, "max_norm")
        if radius is not None and radius <= 0:
            raise ValueError(f"jaxdrop.{fn}: `max_norm` must be positive, got {max_norm!r}.")
        if rate_schedule is not None:
            _checks.function(rate_schedule, fn + "(rate_schedule=...)", "step")
        if rate_filter is not None:
            _checks.function(rate_filter, fn + "(rate_filter=...)", "layer")
        if train_flag is not None and not isinstance(train_flag, str):
            raise TypeError(f"jaxdrop.{fn}: `train_flag` must be 'auto', a keyword name or None, got {train_flag!r}.")
        self._adapter: NnxAdapter | LinenAdapter = make_adapter(model, rate_schedule is not None, train_flag, rate_filter)
        self.model = model
        self.loss_fn = loss_fn or cross_entropy_loss
        self.max_norm = radius
        self.max_norm_filter = max_norm_filter
        self.rate_schedule = rate_schedule
        self.on_nonfinite = on_nonfinite
        parts = []
        if clip is not None:
            parts.append(optax.clip_by_global_norm(clip))
        if decay:
            parts.append(optax.add_decayed_weights(decay, mask=lambda p: jax.tree_util.tree_map_with_path(is_kernel, p)))
        self.tx = optax.chain(*parts, optimizer) if parts else optimizer
        self._dp = None if mesh is None else DataParallel(mesh, data_axis, fn)
        self.mesh = mesh
        self.data_axis = data_axis
        if self._dp is None:
            self.train_step = jax.jit(self._train_step)
            self._eval_batch = jax.jit(self._eval_batch_impl)
        else:
            # Outputs replicated: the parameters stay identical on every device and process.
            self.train_step = jax.jit(self._train_step, out_shardings=self._dp.replicated)
            self._eval_batch = jax.jit(self._eval_batch_impl, out_shardings=self._dp.replicated)
        self._predict = jax.jit(self._predict_impl)

    # -- state ---------------------------------------------------------------

    def init(self, key: ArrayLike, *, sample_input: Any = None) -> TrainState:
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

    def place(self, state: TrainState) -> TrainState:
        """``state`` replicated on every device of the Trainer's mesh (unchanged without a mesh).

        With several processes each must pass the same state (e.g. from
        :meth:`init` with the same key); :meth:`fit` places its state itself.
        """
        return state if self._dp is None else self._dp.replicate(state)

    def model_from(self, state: TrainState) -> Any:
        """The trained model: ``state``'s parameters and model state (batch statistics...) in the model.

        For an nnx model, a new ``nnx.Module`` (the one given to the Trainer is not
        changed); switch it with ``model.eval()`` or call it with
        ``deterministic=True``. For a linen module, the module bound to
        ``{"params": ..., **model_state}``: call it directly, or take
        ``.variables`` for ``module.apply``.

        >>> import jax, optax
        >>> from flax import nnx
        >>> from jaxdrop.models import MLP
        >>> trainer = Trainer(MLP(4, (8,), 3, rngs=nnx.Rngs(0)), optax.sgd(0.1))
        >>> state = trainer.init(jax.random.key(0))
        >>> model = trainer.model_from(state)
        >>> model(jax.numpy.ones((2, 4)), deterministic=True).shape
        (2, 3)
        """
        return self._adapter.model(state.params, state.model_state)

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
        finite = jnp.isfinite(loss) & tree_all_finite(grads)
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
        metrics = {"loss": loss, "accuracy": self._metrics(logits, y), "finite": finite}
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

    def predict(self, state: TrainState, x: ArrayLike) -> jax.Array:
        """Logits with dropout off (evaluation mode), jitted."""
        return self._predict(state, jnp.asarray(x))

    def evaluate(self, state: TrainState, data: Any, *, batch_size: int = 1000) -> dict[str, float]:
        """Mean loss, accuracy and error (= 1 - accuracy) over ``data`` with dropout off.

        Batches of exactly ``batch_size`` examples (the last one, or a smaller
        dataset, padded and masked), so one compilation serves every dataset.
        With a mesh, each batch is split over the data axis like training
        batches (``batch_size`` a multiple of its size); every process passes
        the same ``data``.
        """
        ds = as_dataset(data, "data")
        n = len(ds)
        if n == 0:
            raise ValueError("jaxdrop.training.Trainer.evaluate: `data` is an empty dataset.")
        bs = _checks.count(batch_size, "training.Trainer.evaluate", "batch_size")
        dp = self._dp
        if dp is not None:
            dp.check_batch(bs, "training.Trainer.evaluate", "batch_size")
            state = dp.replicate(state)
            lo, hi = dp.local_rows(bs)
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
            batch: tuple[Any, ...] = (xb, yb, w)
            if dp is not None:  # this process's rows of the (padded) global batch
                batch = tuple(dp.batch(a[lo:hi], bs) for a in batch)
            ls, c = self._eval_batch(state, *batch)
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
          ValueError: with a mesh, a ``batch_size`` or ``eval_batch_size`` that
            does not split evenly over the data axis; with several processes
            (``jax.distributed``), a Trainer without a mesh.
        """
        if self._dp is None and jax.process_count() > 1:
            raise ValueError(
                f"jaxdrop.{_FIT}: this program runs as {jax.process_count()} processes (jax.distributed), but the "
                f"Trainer has no mesh, so every process would train alone on its own devices. Pass "
                f"Trainer(..., mesh=jax.make_mesh((jax.device_count(),), ('data',))) to train data-parallel."
            )
        plan = self._plan(
            train, batch_size, epochs, steps, shuffle, eval_data, eval_every, eval_batch_size, save_every
        )
        state = self.place(state)
        ckpt, state, log = self._resume(state, checkpoint_dir, max_to_keep, resume)
        start = int(state.step)
        if start > plan.total:
            warnings.warn(
                f"jaxdrop.{_FIT}: the state is already at step {start}, beyond the {plan.total} steps "
                f"asked for; returning it unchanged.",
                RuntimeWarning,
                stacklevel=2,
            )
        from tqdm.auto import tqdm

        bar = tqdm(total=plan.total, initial=min(start, plan.total), disable=not progress, desc=desc, unit="step")
        history = log.history
        try:
            step = start
            while step < plan.total:
                state, step = self._epoch(state, step, plan, log, ckpt, bar, on_save)
            if start <= plan.total and plan.total > 0 and (not log.history or log.history[-1]["step"] != plan.total):
                # The end falls inside a record's span: close a partial record for this call's
                # result only; checkpoints keep the running sums so a resume continues them.
                final = log.record(plan.total, plan.epoch_value(plan.total), self._evaluations(state, plan))
                history = [*log.history, final]
        finally:
            bar.close()
            if ckpt is not None:
                ckpt.close()
            if history_path is not None:
                write_history(history, history_path)
        return state, history

    def _plan(
        self,
        train: Any,
        batch_size: Any,
        epochs: Any,
        steps: Any,
        shuffle: Any,
        eval_data: Mapping[str, Any] | None,
        eval_every: Any,
        eval_batch_size: Any,
        save_every: Any,
    ) -> Plan:
        """Validate :meth:`fit`'s arguments into a :class:`Plan`."""
        ds = as_dataset(train, "train")
        bs = _checks.count(batch_size, _FIT, "batch_size")
        ebs = _checks.count(eval_batch_size, _FIT, "eval_batch_size")
        if self._dp is not None:
            self._dp.check_batch(bs, _FIT, "batch_size")
            if eval_data:
                self._dp.check_batch(ebs, _FIT, "eval_batch_size")
        spe = num_batches(len(ds), bs)
        if spe == 0:
            raise ValueError(
                f"jaxdrop.{_FIT}: `batch_size`={bs} is larger than the training set ({len(ds)} examples)."
            )
        if steps is None:
            if epochs is None:
                raise ValueError(f"jaxdrop.{_FIT}: pass `epochs` or `steps`.")
            total = _checks.integer(epochs, _FIT, "epochs") * spe
        else:
            total = _checks.integer(steps, _FIT, "steps")
        return Plan(
            data=ds,
            batch_size=bs,
            steps_per_epoch=spe,
            total=total,
            shuffle=_checks.flag(shuffle, _FIT, "shuffle"),
            save_every=_checks.count(spe if save_every is None else save_every, _FIT, "save_every"),
            eval_every=_checks.count(eval_every, _FIT, "eval_every"),
            evals={name: as_dataset(d, name) for name, d in (eval_data or {}).items()},
            eval_batch_size=ebs,
        )

    def _resume(
        self, state: TrainState, checkpoint_dir: Any, max_to_keep: int, resume: bool
    ) -> tuple[Checkpointer | None, TrainState, Log]:
        """Open the checkpoint directory and continue from its newest good checkpoint."""
        if checkpoint_dir is None:
            return None, state, Log()
        ckpt = Checkpointer(checkpoint_dir, max_to_keep=max_to_keep)
        if not _checks.flag(resume, _FIT, "resume"):
            if ckpt.steps():
                ckpt.close()
                raise CheckpointError(
                    f"jaxdrop.{_FIT}: {ckpt.directory} already holds checkpoints "
                    f"{ckpt.steps()}; pass resume=True to continue from them, or use an empty directory."
                )
            return ckpt, state, Log()
        found = ckpt.restore_latest(state)
        if found is None:
            return ckpt, state, Log()
        state, meta = found
        here = layout(self.mesh, self.data_axis)
        there = meta.get("layout")
        if there is not None and there.get("data_devices") != here["data_devices"]:
            warnings.warn(
                f"jaxdrop.{_FIT}: resuming from checkpoint {int(state.step)} in {ckpt.directory}, written with the "
                f"batch split over {there.get('data_devices')} device(s) in {there.get('processes')} process(es); "
                f"this run splits it over {here['data_devices']} in {here['processes']}. The run continues "
                f"correctly (same batches, same dropout masks), but the gradient's sum over the batch is rounded "
                f"in another order, so it will not be bit-identical to an uninterrupted run on the old layout.",
                RuntimeWarning,
                stacklevel=3,
            )
        log = Log(history=list(meta.get("history", [])))
        log.sums.update(meta.get("epoch_acc", {}))
        return ckpt, state, log

    def _epoch(
        self,
        state: TrainState,
        step: int,
        plan: Plan,
        log: Log,
        ckpt: Checkpointer | None,
        bar: Any,
        on_save: Callable[[int], Any] | None,
    ) -> tuple[TrainState, int]:
        """Train from ``step`` to the end of its epoch (or of the run)."""
        epoch, first = divmod(step, plan.steps_per_epoch)
        n, bs, dp = len(plan.data), plan.batch_size, self._dp
        # The order from a host copy of the data key: the same on every process.
        data_key = jax.random.wrap_key_data(jnp.asarray(host_value(state.data_key)), impl=state.key_impl)
        order = epoch_permutation(data_key, n, epoch) if plan.shuffle else np.arange(n)
        end = min((epoch + 1) * plan.steps_per_epoch, plan.total)
        for b in range(first, first + end - step):
            idx = order[b * bs : (b + 1) * bs]
            if dp is None:
                x, y = plan.data.x[idx], plan.data.y[idx]
            else:  # only this process's rows of the global batch
                lo, hi = dp.local_rows(bs)
                x, y = dp.batch(plan.data.x[idx[lo:hi]], bs), dp.batch(plan.data.y[idx[lo:hi]], bs)
            state, metrics, loss, finite = self._guarded_step(state, x, y, ckpt, (epoch, b))
            step += 1
            log.add(metrics, finite, loss)
            bar.update(1)
            if not bar.disable:
                bar.set_postfix(loss=f"{loss:.4f}", acc=f"{float(metrics['accuracy']):.3f}", refresh=False)
            if plan.closes_record(step):
                log.commit(log.record(step, plan.epoch_value(step), self._evaluations(state, plan)))
            if ckpt is not None and (step % plan.save_every == 0 or step == plan.total):
                ckpt.save(state, {**log.meta(), "layout": layout(self.mesh, self.data_axis)})
                if on_save is not None:
                    on_save(step)
        return state, step

    def _guarded_step(
        self, state: TrainState, x: Any, y: Any, ckpt: Checkpointer | None, position: tuple[int, int]
    ) -> tuple[TrainState, dict[str, Any], float, bool]:
        """One training step; a non-finite loss or gradient raises :class:`NonFiniteError` (or is skipped)."""
        new_state, metrics = self.train_step(state, x, y)
        loss, finite = float(metrics["loss"]), bool(metrics["finite"])
        if not finite and self.on_nonfinite == "raise":
            step = int(state.step)
            latest = ckpt.latest_step() if ckpt is not None else None
            where = (
                f"the newest checkpoint (step {latest} in {ckpt.directory}) is untouched"
                if ckpt is not None and latest is not None
                else "no checkpoint was written"
            )
            raise NonFiniteError(
                f"jaxdrop.training: non-finite {'loss' if not math.isfinite(loss) else 'gradient'} "
                f"(loss={loss}) at step {step} (epoch {position[0]}, batch {position[1]}); training stopped without "
                f"applying that update; {where}. The last good state is this error's `.state`. "
                f"Lower the learning rate, add clip_norm, check the data, or pass on_nonfinite='skip'.",
                step=step,
                loss=loss,
                state=state,
                checkpoint_step=latest,
            )
        return new_state, metrics, loss, finite

    def _evaluations(self, state: TrainState, plan: Plan) -> dict[str, float]:
        return {
            f"{name}_{k}": v
            for name, d in plan.evals.items()
            for k, v in self.evaluate(state, d, batch_size=plan.eval_batch_size).items()
        }
