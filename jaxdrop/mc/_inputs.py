"""Input checks shared by the MC-dropout functions: sample stacks and class labels."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxdrop import _checks

__all__ = ["SAMPLE_SIGNATURE", "all_in_range", "float_samples", "labels_array"]


SAMPLE_SIGNATURE = "f, key, x, num_samples"


def float_samples(samples: Any, fn: str, min_ndim: int = 1) -> jax.Array:
    s = _checks.float_array(samples, f"mc.{fn}", "samples")
    if s.ndim < min_ndim:
        raise ValueError(
            f"jaxdrop.mc.{fn}: `samples` must have a leading axis of T Monte Carlo samples "
            f"(as returned by jaxdrop.mc.sample){' and a trailing class axis' if min_ndim > 1 else ''}; "
            f"got shape {s.shape}."
        )
    if s.shape[0] == 0:
        raise ValueError(f"jaxdrop.mc.{fn}: `samples` holds no samples (leading axis of size 0).")
    return s.astype(jnp.promote_types(s.dtype, jnp.float32))


def all_in_range(labels: jax.Array, num_classes: int) -> jax.Array:
    """Whether every label is a valid class index (checked at run time under ``jit``)."""
    return jnp.all((labels >= 0) & (labels < num_classes))


def labels_array(labels: Any, batch_shape: tuple[int, ...], num_classes: int, fn: str) -> jax.Array:
    lab = labels if isinstance(labels, jax.Array) else jnp.asarray(labels)
    if not jnp.issubdtype(lab.dtype, jnp.integer):
        raise TypeError(
            f"jaxdrop.mc.{fn}: `labels` must be integer class indices, got dtype {lab.dtype}. "
            "For one-hot labels pass labels.argmax(-1)."
        )
    if lab.shape != batch_shape:
        raise ValueError(
            f"jaxdrop.mc.{fn}: `labels` of shape {lab.shape} does not match the probabilities' batch "
            f"shape {batch_shape} (probabilities have shape batch + (num_classes,))."
        )
    if _checks.is_concrete(lab) and lab.size and (int(lab.min()) < 0 or int(lab.max()) >= num_classes):
        raise ValueError(
            f"jaxdrop.mc.{fn}: `labels` must lie in [0, {num_classes}) for {num_classes} classes, "
            f"got values in [{int(lab.min())}, {int(lab.max())}]."
        )
    return lab
