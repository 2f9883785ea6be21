"""A tiny, deterministic training run shared by the training tests and run as a subprocess.

``python tests/_train_child.py CHECKPOINT_DIR TOTAL_STEPS`` trains (resuming from
CHECKPOINT_DIR if it holds checkpoints), saving after every step and printing
``saved <step>`` once each checkpoint is on disk, then ``done <step>``.
The kill test SIGKILLs it at random moments and checks that it always resumes.
"""

from __future__ import annotations

import sys

import numpy as np

N_FEATURES, N_CLASSES, N_EXAMPLES, BATCH = 16, 4, 96, 16


def toy_data(nan_from: int | None = None):
    """Four Gaussian blobs in 16-D (float32), labels 0..3; rows >= nan_from are NaN."""
    from jaxdrop.data import Dataset

    rng = np.random.default_rng(0)
    centers = rng.normal(0.0, 1.0, (N_CLASSES, N_FEATURES))
    y = np.arange(N_EXAMPLES) % N_CLASSES
    x = centers[y] + rng.normal(0.0, 1.0, (N_EXAMPLES, N_FEATURES))
    if nan_from is not None:
        x[nan_from:] = np.nan
    return Dataset(x.astype(np.float32), y.astype(np.int32), N_CLASSES, "toy")


def make_model(seed: int = 0, hidden: int = 16):
    from flax import nnx

    from jaxdrop.models import MLP

    return MLP(N_FEATURES, (hidden,), N_CLASSES, rate=0.5, input_rate=0.2, rngs=nnx.Rngs(seed))


def make_trainer(seed: int = 0, **kwargs):
    import optax

    from jaxdrop.training import Trainer

    kwargs.setdefault("max_norm", 1.0)  # small enough to be active (init column norms are about 1)
    return Trainer(make_model(seed), optax.sgd(0.1, momentum=0.9), **kwargs)


def main(argv: list[str]) -> None:
    import jax

    directory, total = argv[0], int(argv[1])
    trainer = make_trainer()
    state = trainer.init(jax.random.key(0))
    state, _ = trainer.fit(
        state,
        toy_data(),
        batch_size=BATCH,
        steps=total,
        checkpoint_dir=directory,
        save_every=1,
        on_save=lambda step: print(f"saved {step}", flush=True),
        progress=False,
    )
    print(f"done {int(state.step)}", flush=True)


if __name__ == "__main__":
    # flax.nnx probes for IPython at import (to colour reprs), which costs about a second
    # per process; the kill test starts several of these, none interactive.
    sys.modules.setdefault("IPython", None)  # type: ignore[arg-type]
    main(sys.argv[1:])
