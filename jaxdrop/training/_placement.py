"""Data parallelism over a device mesh that may span several processes (``jax.distributed``).

The training state is replicated on every device of the mesh; each global batch
is split along one mesh axis (the *data axis*). Every process loads only the
rows of the batch its own devices hold and the global array is assembled with
:func:`jax.make_array_from_process_local_data`, so the global batch (the same
examples in the same order) and hence the result do not depend on how many
processes there are.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["DataParallel", "host_value", "layout"]


def host_value(leaf: Any) -> np.ndarray:
    """A leaf as a NumPy array on every process: replicated arrays from a local copy, others gathered."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_shards[0].data)
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(leaf)


def layout(mesh: Mesh | None, data_axis: str | None) -> dict[str, Any]:
    """A JSON description of where a run trains (recorded in its checkpoints)."""
    if mesh is None:
        return {"processes": jax.process_count(), "data_devices": 1}
    return {"processes": jax.process_count(), "data_devices": int(mesh.shape[data_axis]), "mesh": dict(mesh.shape)}


class DataParallel:
    """The state replicated over ``mesh``, batches split along ``data_axis``, from every process's own rows."""

    def __init__(self, mesh: Any, data_axis: Any, fn: str):
        if not isinstance(mesh, Mesh):
            raise TypeError(
                f"jaxdrop.{fn}: `mesh` must be a jax.sharding.Mesh (e.g. jax.make_mesh((jax.device_count(),), "
                f"('data',))), got {type(mesh).__name__}."
            )
        if data_axis not in mesh.axis_names:
            raise ValueError(
                f"jaxdrop.{fn}: `data_axis`={data_axis!r} is not an axis of the mesh (its axes: {mesh.axis_names})."
            )
        n = jax.process_count()
        procs = sorted({d.process_index for d in mesh.devices.flat})
        if procs != list(range(n)):
            raise ValueError(
                f"jaxdrop.{fn}: the mesh holds devices of process(es) {procs}, but this run has {n} processes "
                f"(jax.process_count()); every process must take part with its devices. Build the mesh from "
                f"jax.devices() (all processes' devices), not jax.local_devices(), and launch every process "
                f"with the same num_processes."
            )
        self.mesh = mesh
        self.axis = str(data_axis)
        self.size = int(mesh.shape[data_axis])
        self.replicated = NamedSharding(mesh, P())
        self.split = NamedSharding(mesh, P(self.axis))

    def describe(self) -> str:
        n = jax.process_count()
        return f"the {self.size} devices of mesh axis {self.axis!r} ({n} process{'es' if n > 1 else ''})"

    def check_batch(self, batch_size: int, fn: str, name: str) -> None:
        """A batch must split into equal parts over the data axis."""
        if batch_size % self.size:
            lower = batch_size - batch_size % self.size
            raise ValueError(
                f"jaxdrop.{fn}: `{name}`={batch_size} does not split evenly over {self.describe()}: "
                f"use a multiple of {self.size} (e.g. {lower or self.size} or {lower + self.size})."
            )

    @functools.lru_cache(maxsize=16)  # noqa: B019 - a handful of batch sizes per Trainer
    def local_rows(self, batch_size: int) -> tuple[int, int]:
        """``(start, stop)``: the rows of a global batch that this process's devices hold."""
        index = self.split.addressable_devices_indices_map((batch_size,))
        firsts = [s[0] for s in index.values() if s is not None]
        rows = sorted({(r.start or 0, batch_size if r.stop is None else r.stop) for r in firsts})
        start, stop = rows[0][0], rows[-1][1]
        covered = sum(b - a for a, b in rows)
        if covered != stop - start:
            raise ValueError(
                f"jaxdrop.training: this process's devices hold the non-contiguous rows {rows} of each batch: "
                f"order the mesh's devices by process (e.g. jax.make_mesh, or np.array(jax.devices())) so that "
                f"each process holds one contiguous slice."
            )
        return start, stop

    def replicate(self, tree: Any) -> Any:
        """Every leaf replicated on the mesh (from this process's host value; all processes must agree)."""

        def put(leaf: Any) -> Any:
            if isinstance(leaf, jax.Array) and leaf.sharding.is_equivalent_to(self.replicated, leaf.ndim):
                return leaf
            value = host_value(leaf)
            return jax.make_array_from_callback(value.shape, self.replicated, lambda idx: value[idx])

        return jax.tree.map(put, tree)

    def batch(self, local: np.ndarray, batch_size: int) -> jax.Array:
        """The global batch array from this process's rows ``local`` (see :meth:`local_rows`)."""
        local = np.asarray(local)
        return jax.make_array_from_process_local_data(self.split, local, (batch_size, *local.shape[1:]))
