r"""Training with optax: dropout keys done right, fault-tolerant checkpoints.

The usual dropout bug in JAX is reusing one key at every step (the same units
are dropped every time, and dropout degenerates into a fixed sub-network).
Here the key of step ``s`` is always

.. math:: k_s = \mathrm{fold\_in}(k_{\mathrm{base}}, s),

a pure function of the base key stored in the :class:`TrainState` and the step
number, and the batch of step ``s`` is a pure function of the data key and
``s`` (the epoch's order is ``permutation(fold_in(data_key, epoch))``). So a
run is reproducible bit for bit, and a run that was interrupted and resumed
from a checkpoint ends with exactly the parameters and the history of an
uninterrupted one.

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
>>> trained = trainer.model_from(state)  # the nnx model holding the trained parameters

Contents: :class:`Trainer` (train/eval steps and the :meth:`Trainer.fit` loop),
:class:`TrainState`, :class:`Checkpointer` (orbax-checkpoint with verification
and fall-back), :func:`max_norm`, :func:`write_history`, and the errors
:class:`NonFiniteError`, :class:`CheckpointError`.
"""

from jaxdrop.training._checkpoint import Checkpointer
from jaxdrop.training._constraints import cross_entropy_loss, is_kernel, max_norm
from jaxdrop.training._errors import CheckpointError, NonFiniteError
from jaxdrop.training._history import write_history
from jaxdrop.training._state import TrainState
from jaxdrop.training._trainer import Trainer

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
