"""One process of a multi-process jaxdrop run (JAX's distributed runtime, CPU devices, gloo).

``tests/test_multiprocess.py`` starts this file as several processes at once,
each with the environment of :func:`jaxdrop.distributed.worker_env` (process id,
process count, coordinator port, simulated devices per process)::

    python tests/_multiprocess_child.py ROLE OUT_DIR [CHECKPOINT_DIR [COPY_DIR]]

Roles:

* ``main``: masks, MC dropout (and bad input, with a CHECKPOINT_DIR), then ``Trainer.fit`` data-parallel over
  all processes' devices (checkpoint every step in CHECKPOINT_DIR if given,
  printing ``saved <step>``); the test SIGKILLs one process of the 2-process run
  mid-way.
* ``resume``: the same fit, resuming from CHECKPOINT_DIR (the killed run's).
* ``ref``: one process, 8 devices: the 8-device and the 1-device (no mesh) fits,
  masks on 8 devices, and CHECKPOINT_DIR (a copy of the killed run's checkpoints,
  written by 2 processes) restored in this one process.

Process 0 writes ``OUT_DIR/<role>.json``: ``errors`` (check name: message or None),
``digests`` (SHA-256 of gathered outputs, compared across runs by the test),
``info``; and ``OUT_DIR/<role>-params.npz`` (the trained parameters).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
import traceback
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

TOTAL_STEPS = 12  # two epochs of 6 steps
BATCH = 16  # 2 rows per device on 8 devices
EVAL_BATCH = 24  # 16 test examples in one batch of 24: 8 rows of padding, on the last devices
MC_SAMPLES = 8


@functools.cache
def toy_model() -> Any:
    """tests/_train_child.py's MLP with NumPy weights put into an abstract model (no eager
    initialiser compilations, which cost each process a second or two)."""
    import jax
    from _train_child import make_model
    from flax import nnx

    rng = np.random.default_rng(0)
    graphdef, weights = nnx.split(nnx.eval_shape(make_model))
    weights = jax.tree.map(lambda a: (rng.normal(size=a.shape) / np.sqrt(a.shape[0])).astype(a.dtype), weights)
    return nnx.merge(graphdef, weights)


def toy_trainer(**kwargs: Any) -> Any:
    import optax

    from jaxdrop.training import Trainer

    return Trainer(toy_model(), optax.sgd(0.1, momentum=0.9), max_norm=1.0, **kwargs)


def digest(a: Any) -> str:
    a = np.ascontiguousarray(np.asarray(a))
    return hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()[:20]


def flat_params(state: Any) -> dict[str, np.ndarray]:
    import jax

    from jaxdrop.training._placement import host_value

    leaves = jax.tree_util.tree_leaves_with_path(state.params)
    return {jax.tree_util.keystr(p): host_value(v) for p, v in leaves}


def error_text(errs: list[str]) -> str | None:
    return "\n".join(errs) or None


# ------------------------------------------------------------------ masks


def check_masks(results: dict[str, Any], out: str) -> None:
    """Every key-taking function of tests/_sharding_child.py on arrays sharded across processes.

    Process 0 saves the gathered outputs (``masks-<layout>.npz``); the test compares them
    with the one-device outputs it computes itself. Here: the compiled programs must
    contain no collective.
    """
    import jax
    from _sharding_child import CASES, _culprits, _forward, _inputs
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding

    n_proc, n_local = jax.process_count(), jax.local_device_count()
    key = jax.random.key(42)
    cases = list(CASES)
    xs, _ = _inputs(cases)
    devices = np.array(jax.devices())
    errors: dict[str, list[str]] = {c.id: [] for c in cases}
    for name, (mesh, spec, group) in mask_layouts(devices, n_proc, n_local, cases).items():
        shard = {c.id: NamedSharding(mesh, spec(len(c.shape))) for c in group}
        # Each process builds only the blocks of its own devices.
        xs_g = {
            c.id: jax.make_array_from_callback(c.shape, shard[c.id], lambda idx, a=xs[c.id]: a[idx]) for c in group
        }
        compiled = jax.jit(_forward(group, shard)).lower(key, xs_g).compile()
        got = multihost_utils.process_allgather(compiled(key, xs_g), tiled=True)
        if jax.process_index() == 0:
            np.savez(os.path.join(out, f"masks-{name}.npz"), **{cid: np.asarray(v) for cid, v in got.items()})
        what = f"{name} on {n_proc} processes x {n_local} devices"

        def alone(c: Any, xs_g: dict[str, Any] = xs_g, shard: dict[str, Any] = shard) -> str:
            return str(jax.jit(_forward([c], shard)).lower(key, {c.id: xs_g[c.id]}).compile().as_text())

        for cid, errs in _culprits(what, group, "none", compiled.as_text(), alone).items():
            errors[cid] += errs
    for cid, errs in errors.items():
        results["errors"][f"mask[{cid}]"] = error_text(errs)


def mask_layouts(devices: Any, n_proc: int, n_local: int, cases: list[Any]) -> dict[str, Any]:
    """name -> (mesh, spec of a rank, cases): the batch over all devices; the batch over the
    processes and the last axis over each process's devices (cases sharded so without collectives)."""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    return {
        "batch": (Mesh(devices, ("data",)), lambda nd: P("data"), cases),
        "process+feature": (
            Mesh(devices.reshape(n_proc, n_local), ("proc", "dev")),
            lambda nd: P("proc", *([None] * (nd - 2)), "dev"),
            [c for c in cases if c.id in FEATURE_CASES],
        ),
    }


FEATURE_CASES = ("dropout", "dropout-bcast1", "channel_dropout", "alpha_dropout", "gaussian_dropout", "drop_path")


# ------------------------------------------------------------------ MC dropout


def mc_function() -> Any:
    """``f(key, x)`` for jaxdrop.mc: the toy MLP with dropout on (it takes a call-time key)."""
    from flax import nnx

    graphdef, params = nnx.split(toy_model())

    def f(k: Any, x: Any) -> Any:
        return nnx.merge(graphdef, params)(x, deterministic=False, rngs=k)

    return f


def mc_summary(key: Any, x: Any) -> tuple[Any, Any]:
    """MC predictive probabilities (streamed) and the raw passes, from ``mc_function``."""
    from jaxdrop import mc

    f = mc_function()
    return mc.predict_classification(f, key, x, MC_SAMPLES).probs, mc.sample(f, key, x, MC_SAMPLES)


def mc_input() -> np.ndarray:
    from _train_child import toy_data

    return toy_data().x[:16]


def check_mc(results: dict[str, Any], out: str) -> None:
    """jaxdrop.mc on an evaluation batch sharded across processes (each loads its own rows).

    Process 0 saves the gathered result (``mc.npz``); the test compares it with the
    one-device result it computes itself.
    """
    import jax
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    x = mc_input()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    p, n = jax.process_index(), jax.process_count()
    rows = slice(p * len(x) // n, (p + 1) * len(x) // n)
    xg = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), x[rows], x.shape)
    probs, samples = multihost_utils.process_allgather(jax.jit(mc_summary)(jax.random.key(5), xg), tiled=True)
    if p == 0:
        np.savez(os.path.join(out, "mc.npz"), probs=probs, samples=samples)
    results["errors"]["mc"] = None


# ------------------------------------------------------------------ bad input


def check_bad_input(results: dict[str, Any], out: str) -> None:
    """Clear errors for a batch that does not split, a mesh that leaves processes out, no mesh."""
    import jax
    from _train_child import toy_data
    from jax.sharding import Mesh

    errs: list[str] = []
    n_dev = jax.device_count()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    trainer = toy_trainer(mesh=mesh)
    state = trainer.init(jax.random.key(0))

    def expect(what: str, exc: type[Exception], words: list[str], call: Any) -> None:
        try:
            call()
        except exc as e:
            if missing := [w for w in words if w not in str(e)]:
                errs.append(f"{what}: the message lacks {missing}: {e}")
        except Exception as e:
            errs.append(f"{what}: raised {type(e).__name__} instead of {exc.__name__}: {e}")
        else:
            errs.append(f"{what}: no error")

    bad = n_dev + n_dev // 2
    expect(
        "batch not a multiple of the devices",
        ValueError,
        [f"`batch_size`={bad}", f"multiple of {n_dev}"],
        lambda: trainer.fit(state, toy_data(), batch_size=bad, steps=1, progress=False),
    )
    expect(
        "eval batch not a multiple of the devices",
        ValueError,
        ["`eval_batch_size`=20", f"multiple of {n_dev}"],
        lambda: trainer.fit(
            state, toy_data(), batch_size=BATCH, steps=1, eval_data={"t": toy_data()}, eval_batch_size=20, progress=False
        ),
    )
    expect(
        "evaluate, batch not a multiple",
        ValueError,
        ["`batch_size`=20", f"multiple of {n_dev}"],
        lambda: trainer.evaluate(state, toy_data(), batch_size=20),
    )
    expect("no such mesh axis", ValueError, ["'batch'", "not an axis"], lambda: toy_trainer(mesh=mesh, data_axis="batch"))
    if jax.process_count() > 1:
        local = Mesh(np.array(jax.local_devices()), ("data",))
        expect(
            "a mesh of this process's devices only",
            ValueError,
            [f"process(es) [{jax.process_index()}]", f"{jax.process_count()} processes", "jax.devices()"],
            lambda: toy_trainer(mesh=local),
        )
        plain = toy_trainer()
        expect(
            "several processes, no mesh",
            ValueError,
            ["no mesh", "mesh="],
            lambda: plain.fit(plain.init(jax.random.key(0)), toy_data(), batch_size=BATCH, steps=1, progress=False),
        )
    results["errors"]["bad_input"] = error_text(errs)


# ------------------------------------------------------------------ training


def train(results: dict[str, Any], out: str, role: str, ckpt: str | None, *, steps: int, mesh: Any = None) -> Any:
    """Trainer.fit with the toy data; returns the final state."""
    import jax
    from _train_child import toy_data

    trainer = toy_trainer(mesh=mesh)
    data = toy_data()
    state = trainer.init(jax.random.key(0))
    state, history = trainer.fit(
        state,
        data,
        batch_size=BATCH,
        steps=steps,
        eval_data={"test": data[:16]},
        eval_batch_size=EVAL_BATCH,
        checkpoint_dir=ckpt,
        save_every=1,
        on_save=lambda step: print(f"saved {step}", flush=True),
        progress=False,
    )
    results["info"][f"{role}_history"] = history
    return trainer, state


def save_params(out: str, name: str, state: Any) -> None:
    import jax

    params = flat_params(state)
    if jax.process_index() == 0:
        np.savez(os.path.join(out, f"{name}-params.npz"), **params)


def main(argv: list[str]) -> int:
    role, out = argv[0], argv[1]
    ckpt = argv[2] if len(argv) > 2 else None
    start = time.perf_counter()
    from jaxdrop import distributed

    distributed.initialize(initialization_timeout=120)
    import jax
    from jax.sharding import Mesh

    results: dict[str, Any] = {"errors": {}, "digests": {}, "info": {}}
    results["info"]["layout"] = [jax.process_count(), jax.local_device_count()]
    mesh = Mesh(np.array(jax.devices()), ("data",))
    checks = {"main": [check_masks, check_mc], "ref": [check_masks, check_mc], "resume": []}[role]
    if role == "main" and ckpt is not None:  # the 2-process run
        checks.append(check_bad_input)
    results["info"]["startup_cpu_s"] = round(time.process_time(), 2)
    for check in checks:
        t, c = time.perf_counter(), time.process_time()
        try:
            check(results, out)
        except Exception:
            results["errors"][check.__name__] = traceback.format_exc()
        results["info"][f"{check.__name__}_s"] = round(time.perf_counter() - t, 2)
        results["info"][f"{check.__name__}_cpu_s"] = round(time.process_time() - c, 2)
    if jax.process_index() == 0:  # the checks' results are in, whatever happens to training
        with open(os.path.join(out, f"{role}-checks.json"), "w") as fh:
            json.dump(results, fh)
    t, c = time.perf_counter(), time.process_time()
    if role in ("main", "resume"):
        if role == "resume":
            from jaxdrop.training import Checkpointer

            found = Checkpointer(ckpt)  # type: ignore[arg-type]
            results["info"]["resumed_from"] = found.latest_step()
            found.close()
        _, state = train(results, out, role, ckpt, steps=TOTAL_STEPS, mesh=mesh)
        save_params(out, role, state)
    else:
        check_reference(results, out, ckpt, mesh)
    results["info"]["train_s"] = round(time.perf_counter() - t, 2)
    results["info"]["train_cpu_s"] = round(time.process_time() - c, 2)
    results["info"]["total_cpu_s"] = round(time.process_time(), 2)
    results["info"]["total_s"] = round(time.perf_counter() - start, 2)
    if jax.process_index() == 0:
        with open(os.path.join(out, f"{role}.json"), "w") as fh:
            json.dump(results, fh)
    print(f"done {role}", flush=True)
    return 0


def check_reference(results: dict[str, Any], out: str, copy: str | None, mesh: Any) -> None:
    """One process: the 8-device run step by step, the 1-device run, and the 2-process checkpoint restored."""
    import warnings

    import jax

    from jaxdrop.training import Checkpointer

    errs: list[str] = []
    # The 2-process checkpoint (a copy of the killed run's directory) restored here, twice:
    # replicated on this process's 8 devices, and on one device.
    assert copy is not None
    plain = toy_trainer()
    template = plain.init(jax.random.key(0))
    ckpt = Checkpointer(copy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no corrupt checkpoint, no fall-back
        restored_1, meta = ckpt.restore_latest(template)  # type: ignore[misc]
        on_mesh = toy_trainer(mesh=mesh)
        restored_8, _ = ckpt.restore_latest(on_mesh.place(template))  # type: ignore[misc]
    ckpt.close()
    k = int(restored_1.step)
    results["info"]["restored_step"] = k
    results["info"]["restored_layout"] = meta.get("layout")
    if meta.get("layout", {}).get("processes") != 2:
        errs.append(f"the restored checkpoint was not written by 2 processes: {meta.get('layout')}")
    if not all(leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
               for leaf in jax.tree.leaves(restored_8.params)):  # fmt: skip
        errs.append("the checkpoint restored onto the 8-device mesh is not replicated on it")
    # The 8-device run to the checkpoint's step: the same state bit for bit.
    trainer8, state8 = train(results, out, "ref8_partial", None, steps=k, mesh=mesh)
    for what, restored in (("in 1 process on 1 device", restored_1), ("in 1 process on 8 devices", restored_8)):
        a, b = flat_params(restored), flat_params(state8)
        if any(not np.array_equal(a[n], b[n]) for n in a) or int(restored.step) != int(state8.step):
            errs.append(f"checkpoint {k} written by 2 processes and restored {what} differs from the 8-device run")
    if results["info"]["ref8_partial_history"][: len(meta["history"])] != meta["history"] or not meta["history"]:
        errs.append(f"the checkpoint's history {meta['history']} differs from the 8-device run's")
    # Then on to the end (fit continues from a state), and the same on one device without a mesh.
    state8, _ = trainer8.fit(state8, _data(), batch_size=BATCH, steps=TOTAL_STEPS, progress=False)
    save_params(out, "ref8", state8)
    _, state1 = train(results, out, "ref1", None, steps=TOTAL_STEPS)
    save_params(out, "ref1", state1)
    # A negative control for the tolerance: another dropout key, on one device.
    other = plain.init(jax.random.key(0))
    other = other.replace(key=jax.random.key_data(jax.random.key(1)))
    other, _ = plain.fit(other, _data(), batch_size=BATCH, steps=TOTAL_STEPS, progress=False)
    save_params(out, "ref1_other_key", other)
    results["errors"]["reference"] = error_text(errs)


def _data() -> Any:
    from _train_child import toy_data

    return toy_data()


if __name__ == "__main__":
    sys.modules.setdefault("IPython", None)  # type: ignore[arg-type]
    sys.exit(main(sys.argv[1:]))
