"""Sharding checks for jaxdrop, run on 8 simulated CPU devices in a subprocess.

``tests/test_sharding.py`` runs this file once as a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (which must be set before
JAX starts, so the rest of the test session keeps its single device) and turns
each ``RESULT`` line it prints into one test. To run it by hand::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_sharding_child.py

What is checked (see ``docs/sharding.md`` for the guarantees):

* ``jit[<case>]``: every key-taking jaxdrop function (the table ``CASES``), on
  arrays batch-sharded over 2 devices, feature-sharded over 4, sharded over both
  on a 2x4 mesh, and 8-way along axis 1, under ``jit``: output bit-identical to
  the one-device output (Python-float rate, traced rate, and the input gradient
  through ``vjp``), output sharded like the input, and no collective operation
  in the compiled HLO (DropBlock: none when batch-sharded; its per-sample
  normalisation and block halos need small ones otherwise, never an all-gather).
* ``eager[...]``: calls outside ``jit`` keep the input's sharding.
* ``shard_map[<case>]``: every function runs inside ``shard_map`` on the local
  block without collectives, and computes exactly the function of that block.
* ``shard_map_global_mask``: ``prng`` samplers with ``global_shape`` and
  ``index_offset`` inside ``shard_map`` rebuild the global-index mask bit for
  bit (the documented recipe), and the naive same-key call repeats one mask.
* ``data_parallel``: ``jaxdrop.training.Trainer`` steps with the batch sharded
  over 8 devices and parameters replicated equal the one-device steps up to
  floating-point reduction order.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxdrop
from jaxdrop import attention, prng

N_DEVICES = 8
RATE = 0.3

# ------------------------------------------------------------------ collectives in HLO

# An HLO instruction whose opcode is a collective, e.g. "... = s32[8]{0} all-reduce(%x), ...".
_COLLECTIVE = re.compile(
    r"=\s*(?P<shape>\([^)]*\)|\S+)\s+(?P<op>all-gather|all-reduce|collective-permute|all-to-all|"
    r"ragged-all-to-all|reduce-scatter|collective-broadcast)(?:-start)?\("
)


def collectives(hlo: str) -> list[tuple[str, str]]:
    """``(opcode, result shape)`` of every collective instruction in compiled HLO text."""
    return [(m["op"], m["shape"]) for m in _COLLECTIVE.finditer(hlo)]


def _numel(hlo_shape: str) -> int:
    """Elements of an HLO result shape such as ``s32[8,1]{1,0}`` or a tuple of them."""
    return sum(math.prod(int(d) for d in dims.split(",") if d) for dims in re.findall(r"\[([\d,]*)\]", hlo_shape))


# ------------------------------------------------------------------ layouts

# name -> (mesh shape, mesh axis names, spec for an array of rank ndim)
LAYOUTS: dict[str, tuple[tuple[int, ...], tuple[str, ...], Callable[[int], P]]] = {
    "2dev-batch": ((2,), ("data",), lambda nd: P("data")),
    "4dev-feature": ((4,), ("model",), lambda nd: P(*([None] * (nd - 1)), "model")),
    "8dev-batch+feature": ((2, 4), ("data", "model"), lambda nd: P("data", *([None] * (nd - 2)), "model")),
    # 8-way along axis 1: a time / spatial axis that masks are often broadcast over
    # (for rank-2 arrays: the batch axis).
    "8dev-axis1": ((2, 4), ("data", "model"), lambda nd: P(None, ("data", "model")) if nd > 2 else P(("data", "model"))),
}
BATCH_LAYOUTS = ("2dev-batch",)


def make_mesh(layout: str) -> Mesh:
    shape, names, _ = LAYOUTS[layout]
    return Mesh(np.array(jax.devices()[: math.prod(shape)]).reshape(shape), names)


def sharding(layout: str, ndim: int, mesh: Mesh | None = None) -> NamedSharding:
    return NamedSharding(mesh if mesh is not None else make_mesh(layout), LAYOUTS[layout][2](ndim))


# ------------------------------------------------------------------ the table of functions


def _logit(rate: Any) -> Any:
    return jnp.log(rate) - jnp.log1p(-rate)


_KERNEL = np.random.default_rng(7).normal(size=(8, 4)).astype(np.float32)
_BIAS = np.linspace(-1, 1, 4, dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Case:
    """One jaxdrop function (``fn``) applied as ``call(key, x, rate)`` to an input of ``shape``.

    ``layouts`` maps each layout to ``"none"`` (no collective allowed) or
    ``"small"`` (DropBlock: an all-reduce of at most one value per sample and
    halo collective-permutes, never an all-gather). ``kind="mask"``: a mask
    function of ``x.shape`` (its output is constrained to x's sharding).
    ``atol``: outputs must be bit-identical to one device's unless set (only for
    a matmul, whose float accumulation XLA orders by the shard's shape).
    """

    id: str
    fn: str
    shape: tuple[int, ...]
    call: Callable[[Any, Any, Any], Any]
    kind: str = "array"
    layouts: tuple[tuple[str, str], ...] = tuple((name, "none") for name in LAYOUTS)
    atol: float = 0.0  # 0: bit-identical


_DROPBLOCK_LAYOUTS = tuple((name, "none" if name in BATCH_LAYOUTS else "small") for name in LAYOUTS)
_BATCH_ONLY = (("2dev-batch", "none"), ("8dev-axis1", "none"))  # rank 2: 8dev-axis1 is the batch axis
_BATCH_ATTENTION = (("2dev-batch", "none"),)  # other layouts split the length or depth attention mixes

S3, S4 = (8, 8, 8), (8, 8, 8, 8)
CASES: tuple[Case, ...] = (
    Case("dropout", "dropout", S3, lambda k, x, r: jaxdrop.dropout(k, x, r)),
    Case("dropout-bcast1", "dropout", S3, lambda k, x, r: jaxdrop.dropout(k, x, r, broadcast_dims=(1,))),
    Case("dropout-fast", "dropout", S3, lambda k, x, r: jaxdrop.dropout(k, x, r, mode="fast")),
    Case(
        "activation_dropout", "activation_dropout", S3, lambda k, x, r: jaxdrop.activation_dropout(k, x, r, "tanh")
    ),
    Case("keep_mask", "keep_mask", S3, lambda k, x, r: jaxdrop.keep_mask(k, x.shape, r), kind="mask"),
    Case("channel_dropout", "channel_dropout", S4, lambda k, x, r: jaxdrop.channel_dropout(k, x, r)),
    Case("alpha_dropout", "alpha_dropout", S3, lambda k, x, r: jaxdrop.alpha_dropout(k, x, r)),
    Case(
        "feature_alpha_dropout", "feature_alpha_dropout", S4, lambda k, x, r: jaxdrop.feature_alpha_dropout(k, x, r)
    ),
    Case("gaussian_dropout", "gaussian_dropout", S3, lambda k, x, r: jaxdrop.gaussian_dropout(k, x, r)),
    Case("gaussian_noise", "gaussian_noise", S3, lambda k, x, r: jaxdrop.gaussian_noise(k, x, r)),
    Case(
        "dropblock",
        "dropblock",
        S4,
        lambda k, x, r: jaxdrop.dropblock(k, x, r, block_size=3),
        layouts=_DROPBLOCK_LAYOUTS,
    ),
    Case(
        "dropblock_mask",
        "dropblock_mask",
        S4,
        lambda k, x, r: jaxdrop.dropblock_mask(k, x.shape, r, block_size=3),
        kind="mask",
        layouts=_DROPBLOCK_LAYOUTS,
    ),
    Case("drop_path", "drop_path", S3, lambda k, x, r: jaxdrop.drop_path(k, x, r)),
    Case("drop_path-batchwise", "drop_path", S3, lambda k, x, r: jaxdrop.drop_path(k, x, r, batch_wise=True)),
    Case("dropconnect", "dropconnect", (8, 8), lambda k, w, r: jaxdrop.dropconnect(k, w, r)),
    Case(
        "dropconnect_dense",
        "dropconnect_dense",
        (8, 8),
        lambda k, x, r: jaxdrop.dropconnect_dense(k, x, _KERNEL, r, _BIAS),
        layouts=_BATCH_ONLY,  # x (batch, in): sharding `in` makes the matmul itself reduce
        atol=1e-5,  # the matmul's rounding; a changed mask would move outputs by O(1)
    ),
    Case("locked_dropout", "locked_dropout", S3, lambda k, x, r: jaxdrop.locked_dropout(k, x, r)),
    Case("embedding_dropout", "embedding_dropout", (8, 8), lambda k, e, r: jaxdrop.embedding_dropout(k, e, r)),
    Case("zoneout", "zoneout", S3, lambda k, x, r: jaxdrop.zoneout(k, x, 2 * x + 1, r)),
    Case("concrete_dropout", "concrete_dropout", S3, lambda k, x, r: jaxdrop.concrete_dropout(k, x, _logit(r))),
    # Attention [batch, length, heads, depth] sharded over the batch: a per-weight mask
    # (broadcast_dropout=False) and the blockwise path with blocks of half the length.
    Case(
        "attention-dense",
        "attention.dot_product_attention",
        S4,
        lambda k, x, r: attention.dot_product_attention(
            x, x, x, dropout_rng=k, dropout_rate=r, broadcast_dropout=False, implementation="dense"
        ),
        layouts=_BATCH_ATTENTION,
        atol=1e-5,  # the matmuls' rounding; a changed mask moves outputs by O(1)
    ),
    Case(
        "attention-blockwise",
        "attention.dot_product_attention",
        S4,
        lambda k, x, r: attention.dot_product_attention(
            x, x, x, dropout_rng=k, dropout_rate=r, broadcast_dropout=False, implementation="blockwise", block_size=4
        ),
        layouts=_BATCH_ATTENTION,
        atol=1e-5,
    ),
)

CASE_BY_ID = {c.id: c for c in CASES}
EAGER_IDS = ("dropout", "channel_dropout", "gaussian_dropout", "locked_dropout")


def result_names() -> list[str]:
    """Every RESULT name the child reports (known without running it)."""
    names = [f"jit[{c.id}]" for c in CASES]
    names += [f"eager[{i}]" for i in EAGER_IDS]
    names += [f"shard_map[{c.id}]" for c in CASES]
    names += ["shard_map_global_mask", "data_parallel"]
    return names


def _input(case: Case, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=case.shape).astype(np.float32)


# ------------------------------------------------------------------ jit over a mesh

# Cases whose gradient (vjp, traced rate) is also checked: one per differentiable core
# (inverted-dropout mask, alpha, Gaussian, concrete, zoneout, DropBlock's checkpoint).
GRAD_IDS = ("dropout", "alpha_dropout", "gaussian_dropout", "concrete_dropout", "zoneout", "dropblock")
GRAD_LAYOUT = "8dev-batch+feature"


def _forward(cases: list[Case], shardings: dict[str, Any] | None = None) -> Callable[..., Any]:
    """One jitted-able function computing every case's output with the Python-float rate."""

    def run(key: Any, xs: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for c in cases:
            y = c.call(key, xs[c.id], RATE)
            if c.kind == "mask" and shardings is not None:
                # Mask functions take a shape, not an array: ask for x's sharding.
                y = lax.with_sharding_constraint(y, shardings[c.id])
            out[c.id] = y
        return out

    return run


def _gradient(cases: list[Case]) -> Callable[..., Any]:
    """Per case: the output with a traced rate, and the vjp of a cotangent."""

    def run(key: Any, rate: Any, xs: dict[str, Any], cts: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for c in cases:
            y, vjp = jax.vjp(lambda x_, c=c: c.call(key, x_, rate), xs[c.id])
            out[c.id] = (y, vjp(cts[c.id])[0])
        return out

    return run


def _inputs(cases: list[Case]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Inputs, and cotangents of the outputs' shapes, per case."""
    xs = {c.id: _input(c, i) for i, c in enumerate(cases)}
    key = jax.random.key(0)
    cts = {}
    for i, c in enumerate(cases):
        out = jax.eval_shape(c.call, key, xs[c.id], RATE)
        cts[c.id] = np.random.default_rng(100 + i).normal(size=out.shape).astype(np.float32)
    return xs, cts


def _spec(s: Any) -> str:
    return str(getattr(s, "spec", s))


def _compare(what: str, got: Any, want: Any, atol: float = 0.0) -> list[str]:
    g, w = np.asarray(got), np.asarray(want)
    if g.shape != w.shape:
        return [f"{what}: shape {g.shape}, one-device shape {w.shape}"]
    if np.array_equal(g, w) or (atol and np.allclose(g, w, rtol=0, atol=atol)):
        return []
    diff = np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))
    return [f"{what} differs from the one-device output: {int((g != w).sum())} of {w.size} elements, max |diff| {diff}"]


def _kept_sharding(what: str, y: Any, want: Any) -> list[str]:
    if y.sharding.is_equivalent_to(want, y.ndim):
        return []
    return [f"{what}: output sharding {_spec(y.sharding)} is not the input's {_spec(want)} (gathered or resharded)"]


def _collective_errors(what: str, group: list[Case], allowed: str, hlo: str) -> list[str]:
    found = collectives(hlo)
    if allowed == "none":
        return [f"{what}: compiled HLO contains collectives {found}"] if found else []
    # "small": DropBlock's per-sample kept count (one value per sample) and block halos.
    batch = min(c.shape[0] for c in group)
    bad = [
        (op, shape)
        for op, shape in found
        if op not in ("all-reduce", "collective-permute") or (op == "all-reduce" and _numel(shape) > batch)
    ]
    return [f"{what}: compiled HLO contains collectives beyond per-sample counts and halos: {bad}"] if bad else []


def _groups(cases: list[Case], layout: str) -> list[tuple[list[Case], str]]:
    """The cases of a layout in two programs: collective-free, and with allowed collectives."""
    modes = {c.id: dict(c.layouts).get(layout) for c in cases}
    groups = [([c for c in cases if modes[c.id] == mode], mode) for mode in ("none", "small")]
    return [(g, mode) for g, mode in groups if g]


def _culprits(what: str, group: list[Case], mode: str, hlo: str, one_hlo: Callable[[Case], str]) -> dict[str, list[str]]:
    """Collective errors per case; a failing combined program is split to find the culprits."""
    errs = _collective_errors(what, group, mode, hlo)
    if not errs or len(group) == 1:
        return {c.id: errs for c in group}
    return {c.id: _collective_errors(what, [c], mode, one_hlo(c)) for c in group}


def check_jit() -> dict[str, str | None]:
    """``jit[<case>]``: every layout bit-identical to one device, sharding kept, no collectives."""
    key = jax.random.key(42)
    rate = jnp.float32(RATE)
    cases = list(CASES)
    xs, cts = _inputs(cases)
    errors: dict[str, list[str]] = {c.id: [] for c in cases}
    one = jax.devices()[0]
    ref = jax.jit(_forward(cases))(key, jax.device_put(xs, one))
    for layout in LAYOUTS:
        mesh = make_mesh(layout)
        for group, mode in _groups(cases, layout):
            shard = {c.id: sharding(layout, len(c.shape), mesh) for c in group}
            xs_s = {c.id: jax.device_put(xs[c.id], shard[c.id]) for c in group}
            compiled = jax.jit(_forward(group, shard)).lower(key, xs_s).compile()
            got = compiled(key, xs_s)
            for c in group:
                errors[c.id] += _compare(f"{layout}: output", got[c.id], ref[c.id], c.atol)
                errors[c.id] += _kept_sharding(layout, got[c.id], shard[c.id])

            def alone(c: Case, xs_s: dict[str, Any] = xs_s, shard: dict[str, Any] = shard) -> str:
                lowered = jax.jit(_forward([c], shard)).lower(key, {c.id: xs_s[c.id]})
                return str(lowered.compile().as_text())

            for cid, errs in _culprits(layout, group, mode, compiled.as_text(), alone).items():
                errors[cid] += errs
    # Gradients (and traced rates) on one layout.
    grad_cases = [CASE_BY_ID[i] for i in GRAD_IDS]
    ref_g = jax.jit(_gradient(grad_cases))(key, rate, jax.device_put(xs, one), jax.device_put(cts, one))
    mesh = make_mesh(GRAD_LAYOUT)
    for group, mode in _groups(grad_cases, GRAD_LAYOUT):
        shard = {c.id: sharding(GRAD_LAYOUT, len(c.shape), mesh) for c in group}
        xs_s = {c.id: jax.device_put(xs[c.id], shard[c.id]) for c in group}
        cts_s = {c.id: jax.device_put(cts[c.id], shard[c.id]) for c in group}
        compiled = jax.jit(_gradient(group)).lower(key, rate, xs_s, cts_s).compile()
        got = compiled(key, rate, xs_s, cts_s)
        for c in group:
            what = f"{GRAD_LAYOUT} (traced rate, vjp)"
            errors[c.id] += _compare(f"{what}: output", got[c.id][0], ref_g[c.id][0])
            errors[c.id] += _compare(f"{what}: input gradient", got[c.id][1], ref_g[c.id][1])
            errors[c.id] += _kept_sharding(what, got[c.id][1], shard[c.id])

        def alone_g(c: Case, xs_s: dict[str, Any] = xs_s, cts_s: dict[str, Any] = cts_s) -> str:
            lowered = jax.jit(_gradient([c])).lower(key, rate, {c.id: xs_s[c.id]}, {c.id: cts_s[c.id]})
            return str(lowered.compile().as_text())

        for cid, errs in _culprits(f"{GRAD_LAYOUT} (vjp)", group, mode, compiled.as_text(), alone_g).items():
            errors[cid] += errs
    return {f"jit[{cid}]": "\n".join(e) if e else None for cid, e in errors.items()}


def check_eager() -> dict[str, str | None]:
    """Calls outside jit on sharded arrays: values as on one device, sharding kept."""
    key = jax.random.key(3)
    layout = "8dev-batch+feature"
    mesh = make_mesh(layout)
    out: dict[str, str | None] = {}
    for cid in EAGER_IDS:
        c = CASE_BY_ID[cid]
        x = _input(c, 5)
        s = sharding(layout, x.ndim, mesh)
        y = c.call(key, jax.device_put(x, s), RATE)
        ref = np.asarray(c.call(key, jax.device_put(x, jax.devices()[0]), RATE))
        errs = []
        if not np.array_equal(np.asarray(y), ref):
            errs.append(f"eager output on {layout} differs from the one-device eager output")
        if not y.sharding.is_equivalent_to(s, y.ndim):
            errs.append(f"eager output sharding {y.sharding} is not the input's {s}")
        out[f"eager[{cid}]"] = "\n".join(errs) or None
    return out


# ------------------------------------------------------------------ shard_map


def global_block(spec: P, local_shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[Any]]:
    """Inside ``shard_map``: (global shape, start index per axis) of this device's block.

    ``spec`` is the block's ``PartitionSpec`` (``None`` entries: not sharded). For a
    mask broadcast along an axis, give that axis size 1 and ``None`` in ``spec``.
    This is the helper printed in docs/sharding.md.
    """
    gshape, start = [], []
    for d, n in enumerate(local_shape):
        names = spec[d] if d < len(spec) else None
        if names is None:
            gshape.append(n)
            start.append(0)
        else:
            gshape.append(n * lax.axis_size(names))
            start.append(lax.axis_index(names) * n)
    return tuple(gshape), start


def check_shard_map_cases() -> dict[str, str | None]:
    """Every case inside shard_map (2x4 mesh, batch+feature sharded; batch-only cases 8-way)."""
    key = jax.random.key(11)
    mesh = make_mesh("8dev-batch+feature")
    cases = list(CASES)
    xs, _ = _inputs(cases)
    specs = {
        c.id: LAYOUTS["8dev-axis1" if c.layouts == _BATCH_ONLY else "8dev-batch+feature"][2](len(c.shape))
        for c in cases
    }

    def body(k: Any, xs_local: dict[str, Any]) -> dict[str, Any]:
        return {c.id: c.call(k, xs_local[c.id], RATE) for c in cases}

    compiled = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), specs), out_specs=specs)).lower(key, xs).compile()
    got = jax.device_get(compiled(key, xs))
    found = collectives(compiled.as_text())
    # Reference: the function applied to each device's block alone, on one device.
    blocks = {c.id: list(NamedSharding(mesh, specs[c.id]).devices_indices_map(c.shape).values()) for c in cases}
    local = jax.jit(body)
    want = [local(key, {c.id: xs[c.id][blocks[c.id][b]] for c in cases}) for b in range(N_DEVICES)]
    out: dict[str, str | None] = {}
    for c in cases:
        errs = [f"shard_map program contains collectives {found}"] if found else []
        for b, idx in enumerate(blocks[c.id]):
            errs += _compare(f"block {idx} inside shard_map", got[c.id][idx], want[b][c.id], c.atol)
        out[f"shard_map[{c.id}]"] = "\n".join(errs) or None
    return out


def check_shard_map_global_mask() -> dict[str, str | None]:
    """The documented recipe: global-index masks and noise inside shard_map equal the jit ones."""
    key = jax.random.key(5)
    errs: list[str] = []
    shape = (8, 8, 8)
    x = _input(Case("x", "x", shape, lambda k, x, r: x), 9)
    ref_drop = np.asarray(jaxdrop.dropout(key, x, RATE))
    ref_bcast = np.asarray(jaxdrop.dropout(key, x, RATE, broadcast_dims=(1,)))
    ref_normal = np.asarray(prng.normal(key, shape, mode="fast"))
    for layout in LAYOUTS:
        mesh = make_mesh(layout)
        spec = LAYOUTS[layout][2](3)

        def body(k: Any, xl: Any, spec: P = spec) -> tuple[Any, Any, Any, Any]:
            # Inverted dropout with the global-index mask (what jaxdrop.dropout computes under jit).
            gshape, start = global_block(spec, xl.shape)
            keep = prng.bernoulli(k, np.float32(1 - RATE), xl.shape, global_shape=gshape, index_offset=start)
            y = jnp.where(keep, xl / np.float32(1 - RATE), 0)
            # A mask broadcast along axis 1: size 1 and no sharding there.
            mshape = (xl.shape[0], 1, xl.shape[2])
            mspec = P(*(None if d == 1 else (spec[d] if d < len(spec) else None) for d in range(3)))
            gm, sm = global_block(mspec, mshape)
            keep_b = prng.bernoulli(k, np.float32(1 - RATE), mshape, global_shape=gm, index_offset=sm)
            y_b = jnp.where(keep_b, xl / np.float32(1 - RATE), 0)
            noise = prng.normal(k, xl.shape, mode="fast", global_shape=gshape, index_offset=start)
            naive = jaxdrop.dropout(k, xl, RATE)  # local indices: the same mask on every block
            return y, y_b, noise, naive

        fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), spec), out_specs=(spec,) * 4))
        compiled = fn.lower(key, x).compile()
        y, y_b, noise, naive = (np.asarray(a) for a in compiled(key, x))
        if found := collectives(compiled.as_text()):
            errs.append(f"{layout}: collectives {found}")
        for name, got, want in (("dropout", y, ref_drop), ("broadcast", y_b, ref_bcast), ("normal", noise, ref_normal)):
            if not np.array_equal(got, want):
                errs.append(f"{layout}: {name} recipe inside shard_map differs from the global computation")
        # The pitfall the recipe avoids: with local indices every block gets the same mask.
        blocks = list(NamedSharding(mesh, spec).devices_indices_map(shape).values())
        masks = [naive[i] != 0 for i in blocks]
        if not all(np.array_equal(m, masks[0]) for m in masks):
            errs.append(f"{layout}: the naive call did not repeat the mask (docs/sharding.md says it does)")
        if np.array_equal(naive, ref_drop):
            errs.append(f"{layout}: the naive call gave the global mask (docs/sharding.md says it does not)")
    return {"shard_map_global_mask": "\n".join(errs) or None}


# ------------------------------------------------------------------ data parallel training


def check_data_parallel() -> dict[str, str | None]:
    """Trainer.train_step, batch sharded over 8 devices, parameters replicated == one device."""
    import optax
    from flax import nnx

    from jaxdrop.models import MLP
    from jaxdrop.training import Trainer

    errs: list[str] = []
    rng = np.random.default_rng(0)
    n_steps, batch, features, classes = 3, 32, 16, 4
    xs = rng.normal(size=(n_steps, batch, features)).astype(np.float32)
    ys = rng.integers(0, classes, size=(n_steps, batch)).astype(np.int32)

    # NumPy weights into an abstract model: no per-initialiser eager compilations.
    graphdef, weights = nnx.split(
        nnx.eval_shape(lambda: MLP(features, (32, 32), classes, rate=0.5, input_rate=0.2, rngs=nnx.Rngs(0)))
    )
    weights = jax.tree.map(lambda a: (rng.normal(size=a.shape) / np.sqrt(a.shape[0])).astype(a.dtype), weights)
    model = nnx.merge(graphdef, weights)
    trainer = Trainer(model, optax.sgd(0.1, momentum=0.9), max_norm=3.0)
    state0 = jax.jit(trainer.init)(jax.random.key(1))
    one = jax.devices()[0]
    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated, by_batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    x8, y8 = jax.device_put(xs[0], by_batch), jax.device_put(ys[0], by_batch)
    step8 = trainer.train_step.lower(jax.device_put(state0, replicated), x8, y8).compile()

    def run(step: Any, state: Any, place_state: Any, place_batch: Any) -> tuple[Any, np.ndarray, list[float]]:
        state = jax.device_put(state, place_state)
        losses = []
        for s in range(n_steps):
            state, m = step(state, jax.device_put(xs[s], place_batch), jax.device_put(ys[s], place_batch))
            losses.append(float(m["loss"]))
        flat = np.concatenate([np.ravel(a) for a in jax.tree.leaves(jax.device_get(state.params))])
        return state, flat, losses

    _, p1, loss_1 = run(trainer.train_step, state0, one, one)
    multi, p8, loss_8 = run(step8, state0, replicated, by_batch)
    # The parameters stay replicated (no device holds a different copy).
    if not all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(multi.params)):
        errs.append("a parameter ended up sharded after data-parallel steps")
    # Tolerance: float32 reduction order only (the gradient's batch sum is split in 8 parts).
    if not np.allclose(p8, p1, rtol=1e-5, atol=1e-6):
        errs.append(f"parameters after {n_steps} data-parallel steps differ: max |diff| {np.max(np.abs(p8 - p1))}")
    if not np.allclose(loss_8, loss_1, rtol=1e-5):
        errs.append(f"losses differ: {loss_8} vs {loss_1}")
    # The comparison can fail: another dropout key moves the parameters far beyond the tolerance.
    other = state0.replace(key=jax.random.key_data(jax.random.key(2)))
    _, p_other, _ = run(step8, other, replicated, by_batch)
    if np.allclose(p_other, p1, rtol=1e-5, atol=1e-6):
        errs.append("another dropout key gave the same parameters: the comparison cannot see mask changes")
    # Communication: the step only all-reduces (gradient and metric means over the batch).
    if bad := [c for c in collectives(step8.as_text()) if c[0] != "all-reduce"]:
        errs.append(f"the data-parallel step communicates by more than all-reduce: {bad}")
    # The forward pass with dropout on: the same masks on 1 and 8 devices (equal up to
    # float rounding), and no communication at all when the batch is sharded.
    graphdef, params = nnx.split(model)
    fwd = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x, rngs=jax.random.key(9)))
    l1 = np.asarray(fwd(jax.device_put(params, one), jax.device_put(xs[0], one)))
    fwd8 = fwd.lower(jax.device_put(params, replicated), x8).compile()
    l8 = np.asarray(fwd8(jax.device_put(params, replicated), x8))
    if not np.allclose(l8, l1, rtol=1e-5, atol=1e-6):
        errs.append(f"dropout forward pass differs on 8 devices: max |diff| {np.max(np.abs(l8 - l1))}")
    if found := collectives(fwd8.as_text()):
        errs.append(f"the batch-sharded forward pass with dropout has collectives {found}")
    return {"data_parallel": "\n".join(errs) or None}


# ------------------------------------------------------------------ runner

CHECKS: tuple[Callable[[], dict[str, str | None]], ...] = (
    check_jit,
    check_eager,
    check_shard_map_cases,
    check_shard_map_global_mask,
    check_data_parallel,
)
_CHECK_RESULTS = {
    "check_jit": [f"jit[{c.id}]" for c in CASES],
    "check_eager": [f"eager[{i}]" for i in EAGER_IDS],
    "check_shard_map_cases": [f"shard_map[{c.id}]" for c in CASES],
    "check_shard_map_global_mask": ["shard_map_global_mask"],
    "check_data_parallel": ["data_parallel"],
}


def main(argv: list[str]) -> int:
    if jax.device_count() != N_DEVICES:
        print(
            f"need {N_DEVICES} devices, got {jax.device_count()}: run with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={N_DEVICES}",
            file=sys.stderr,
        )
        return 2
    selected = [c for c in CHECKS if not argv or c.__name__ in argv]
    for check in selected:
        start = time.perf_counter()
        try:
            results = check()
        except Exception:
            tb = traceback.format_exc()
            results = {name: f"{check.__name__} raised:\n{tb}" for name in _CHECK_RESULTS[check.__name__]}
        for name, error in results.items():
            print("RESULT " + json.dumps({"name": name, "error": error}), flush=True)
        print(f"{check.__name__}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
