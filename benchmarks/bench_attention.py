"""Attention benchmark: jaxdrop.attention (dense, blockwise) against Flax and jax.nn, forward+backward.

Everything runs in ONE process. The benchmarked function is the gradient of
``loss(q, k, v) = sum(attention(q, k, v) * g)`` with respect to ``q``, ``k`` and ``v``
(``g`` a fixed random cotangent), jitted: ``jax.jit(jax.grad(loss, argnums=(0, 1, 2)))``.
Shapes ``[batch 2, length T, 4 heads, head dim 64]``, dropout rate 0.1 on the attention
weights, ``broadcast_dropout=False`` (a mask per weight; ``True`` for a subset of lengths),
float32 and bfloat16. Implementations:

* ``flax.linen (dropout)``: :func:`flax.linen.dot_product_attention` with ``dropout_rng``;
* ``jaxdrop dense (dropout)``: ``jaxdrop.attention.dot_product_attention(...,
  implementation="dense")`` (Flax's computation with the fused, regenerated mask);
* ``jaxdrop blockwise (dropout)``: ``implementation="blockwise"`` (online softmax,
  ``custom_vjp``, memory linear in T) at the block size chosen by a sweep (below);
* ``jax.nn (no dropout)``: :func:`jax.nn.dot_product_attention`, the reference without dropout;
* ``jaxdrop blockwise (no dropout)``: blockwise with ``deterministic=True``.

Measured:

* **compiled temporary memory** (``jax.jit(f).lower(...).compile().memory_analysis()
  .temp_size_in_bytes``) of every implementation at every length: no run needed, so also at
  lengths that would not fit in memory;
* **median wall time** (and process CPU time) where the function runs in reasonable time:
  every implementation up to ``--time-max-T`` (default 4096); above it only the blockwise
  implementation with dropout, one repetition, float32 (``--blockwise-dtypes``); nothing whose
  temporary memory exceeds ``--max-run-gib`` (default 6 GiB) is run;
* a **block size sweep** first (float32, blockwise with dropout, ``--sweep-blocks`` 256 512
  1024 at ``--sweep-T`` 1024 2048 4096): the block size with the smallest geometric mean of
  time / fastest time is used for every blockwise row after it (``--block-size`` skips it);
* the **T = 16384 run** (``--real-T``): blockwise with dropout, float32, run for real; its
  compiled temporary memory (goal: < 512 MiB), time and the peak resident memory the process
  gained during the call (sampled from ``/proc/self/statm``).

**Method.** For one configuration (dtype, length, broadcast_dropout) every implementation is
compiled (ahead of time) and then timed in interleaved rounds; the order is rotated every
round. Every timed call is immediately preceded by one untimed call of the *same* function,
so the memory traffic of the implementation that ran before never lands in a timed call
(the first untimed call also warms up). Medians per implementation are reported, with
minima and process CPU time (all threads) in the JSON; ratios are ratios of medians.

Writes ``benchmarks/results/attention-<backend>[-quick].json`` and ``.md`` and the log-log
plot ``attention-memory-<backend>[-quick].png``, and prints the Markdown, which ends with the
goal verdicts (met / missed, with the numbers).

Usage::

    python benchmarks/bench_attention.py            # full run (~25 minutes on 2 CPU cores)
    python benchmarks/bench_attention.py --quick    # smoke run: tiny T, 2 reps, < 1 minute
    python benchmarks/bench_attention.py --T 512 1024 --dtypes float32 --reps 7 --block-size 256
    python benchmarks/bench_attention.py --render benchmarks/results/attention-cpu.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

try:
    import jaxdrop.attention as jda
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import jaxdrop.attention as jda

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared timing helper
import _machine
from _timing import time_paired

RESULTS = Path(__file__).resolve().parent / "results"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
BATCH, HEADS, HEAD_DIM, RATE = 2, 4, 64, 0.1
MIB, GIB = 2**20, 2**30

FLAX = "flax.linen (dropout)"
DENSE = "jaxdrop dense (dropout)"
BLOCK = "jaxdrop blockwise (dropout)"
REF = "jax.nn (no dropout)"
BLOCK_ND = "jaxdrop blockwise (no dropout)"
IMPLS = (FLAX, DENSE, BLOCK, REF, BLOCK_ND)
SHORT = {FLAX: "flax", DENSE: "dense", BLOCK: "blockwise", REF: "jax.nn", BLOCK_ND: "blockwise nd"}
BCAST_IMPLS = (FLAX, DENSE, BLOCK, REF)  # the broadcast_dropout=True subset (REF: the reference)
LARGE_IMPLS = (BLOCK,)  # timed above --time-max-T

FULL = {
    "T": [256, 512, 1024, 2048, 4096, 8192, 16384],
    "dtypes": list(DTYPES),
    "reps": 5,
    "reps_large": {"float32": 3, "bfloat16": 2},
    "large_T": 4096,
    "time_max_T": 4096,
    "blockwise_dtypes": ["float32"],
    "real_T": 16384,
    "sweep_blocks": [256, 512, 1024],
    "sweep_T": [1024, 2048, 4096],
    "sweep_reps": 3,
    "sweep_reps_large": 1,
    "bcast_T": [512, 1024],
}
QUICK = {
    "T": [64, 128],
    "dtypes": ["float32"],
    "reps": 2,
    "reps_large": {"float32": 2, "bfloat16": 2},
    "large_T": 128,
    "time_max_T": 64,
    "blockwise_dtypes": ["float32"],
    "real_T": 128,
    "sweep_blocks": [16, 32],
    "sweep_T": [64],
    "sweep_reps": 2,
    "sweep_reps_large": 2,
    "bcast_T": [64],
}

# goals: (T range of the blockwise/no-dropout ratio, its bound), dense ratio, memory ratio, real run
GOAL_BLOCK_T, GOAL_BLOCK = (1024, 4096), 1.25
GOAL_DENSE_T, GOAL_DENSE = 1024, 1.15
GOAL_MEM_T, GOAL_MEM = 4096, 1 / 25
GOAL_REAL_T, GOAL_REAL_BYTES = 16384, 512 * MIB
GOAL_LINEAR_SLOPE = 1.1  # log-log slope of temp memory vs T between consecutive lengths

# --------------------------------------------------------------------------- timing


# time_paired (in _timing.py, shared with bench.py and bench_sharding.py): every timed call
# is immediately preceded by an untimed call of the same function.


# --------------------------------------------------------------------------- implementations


def attention_fn(impl: str, broadcast: bool, block_size: int) -> Callable[..., jax.Array]:
    """f(q, k, v, rng) -> attention output for one implementation (not jitted)."""
    import flax.linen as fnn

    drop = {"dropout_rate": RATE, "broadcast_dropout": broadcast}
    if impl == FLAX:
        return lambda q, k, v, rng: fnn.dot_product_attention(q, k, v, dropout_rng=rng, **drop)
    if impl == DENSE:
        return lambda q, k, v, rng: jda.dot_product_attention(
            q, k, v, dropout_rng=rng, implementation="dense", **drop
        )
    if impl == BLOCK:
        return lambda q, k, v, rng: jda.dot_product_attention(
            q, k, v, dropout_rng=rng, implementation="blockwise", block_size=block_size, **drop
        )
    if impl == REF:
        return lambda q, k, v, rng: jax.nn.dot_product_attention(q, k, v)
    if impl == BLOCK_ND:
        return lambda q, k, v, rng: jda.dot_product_attention(
            q, k, v, deterministic=True, implementation="blockwise", block_size=block_size, **drop
        )
    raise ValueError(impl)


def grad_fn(impl: str, broadcast: bool, block_size: int) -> Callable[..., Any]:
    """jit(grad(sum(attention(q, k, v) * g), argnums=(0, 1, 2))), called as f(q, k, v, g, rng)."""
    f = attention_fn(impl, broadcast, block_size)

    def loss(q: jax.Array, k: jax.Array, v: jax.Array, g: jax.Array, rng: jax.Array) -> jax.Array:
        return jnp.sum(f(q, k, v, rng).astype(jnp.float32) * g.astype(jnp.float32))

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def _shape(T: int) -> tuple[int, int, int, int]:
    return (BATCH, T, HEADS, HEAD_DIM)


def compile_case(
    impl: str, T: int, dtype: str, broadcast: bool, block_size: int
) -> tuple[Any, dict[str, Any]]:
    """Compile ahead of time from shapes alone; (compiled, memory record)."""
    spec = jax.ShapeDtypeStruct(_shape(T), DTYPES[dtype])
    rng = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = grad_fn(impl, broadcast, block_size).lower(spec, spec, spec, spec, rng).compile()
    mem = compiled.memory_analysis()
    return compiled, {
        "temp_bytes": int(mem.temp_size_in_bytes),
        "argument_bytes": int(mem.argument_size_in_bytes),
        "output_bytes": int(mem.output_size_in_bytes),
        "compile_s": time.perf_counter() - t0,
    }


def inputs(T: int, dtype: str) -> tuple[jax.Array, ...]:
    """q, k, v, g (fixed random normal) and the dropout key."""
    kq, kk, kv, kg = jax.random.split(jax.random.key(1), 4)
    arrays = tuple(jax.random.normal(k, _shape(T), DTYPES[dtype]) for k in (kq, kk, kv, kg))
    return (*arrays, jax.random.key(0))


def sanity_check(T: int, block_size: int, compiled: dict[str, Any] | None = None) -> dict[str, Any]:
    """On the benchmark's own float32 input: the gradients of Flax, dense and blockwise (at the
    benchmarked block size and at T // 4, several blocks) compared; ``compiled`` reuses the
    functions compiled for the benchmark (impl -> compiled)."""
    compiled = dict(compiled or {})
    small = max(8, T // 4)
    for impl in (FLAX, DENSE, BLOCK):
        if impl not in compiled:
            compiled[impl] = compile_case(impl, T, "float32", False, block_size)[0]
    compiled["small"] = compile_case(BLOCK, T, "float32", False, small)[0]
    args = inputs(T, "float32")
    grads = {name: c(*args) for name, c in compiled.items() if name in (FLAX, DENSE, BLOCK, "small")}

    def diff(a: str, b: str) -> float:
        return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(grads[a], grads[b], strict=True))

    return {
        "T": T,
        "block_size": block_size,
        "small_block_size": small,
        "dense_grads_equal_flax": all(
            bool(jnp.array_equal(x, y)) for x, y in zip(grads[DENSE], grads[FLAX], strict=True)
        ),
        "blockwise_vs_dense_max_abs_grad": diff(BLOCK, DENSE),
        "small_blockwise_vs_dense_max_abs_grad": diff("small", DENSE),
        "max_abs_grad": max(float(jnp.max(jnp.abs(x))) for x in grads[DENSE]),
    }


# --------------------------------------------------------------------------- measurement


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure_config(
    impls: tuple[str, ...],
    timed: tuple[str, ...],
    T: int,
    dtype: str,
    broadcast: bool,
    block_size: int,
    reps: int,
    max_run_bytes: int,
    tag: str = "main",
    keep: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Compile every implementation of one configuration (memory), then time those in ``timed``."""
    rows: dict[str, dict[str, Any]] = {}
    thunks: dict[str, Callable[[], Any]] = {}
    t0 = time.perf_counter()
    args = inputs(T, dtype) if timed else ()
    for impl in impls:
        bs = block_size if impl in (BLOCK, BLOCK_ND) else None
        compiled, mem = compile_case(impl, T, dtype, broadcast, block_size)
        row: dict[str, Any] = {
            "tag": tag,
            "impl": impl,
            "T": T,
            "dtype": dtype,
            "broadcast_dropout": broadcast,
            "block_size": bs,
            **mem,
            "timed": False,
            "skip": None,
        }
        if keep is not None:
            keep[impl] = compiled
        if impl in timed:
            if mem["temp_bytes"] > max_run_bytes:
                row["skip"] = f"temp {mem['temp_bytes'] / GIB:.1f} GiB > {max_run_bytes / GIB:.0f} GiB"
            else:
                thunks[impl] = lambda c=compiled, a=args: c(*a)
        rows[impl] = row
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if thunks:
        for impl, t in time_paired(thunks, reps, track_rss=True).items():
            rows[impl].update(t, timed=True, loadavg_1min=load)
    thunks.clear()
    summary = ", ".join(
        f"{SHORT.get(i, i)} {r['temp_bytes'] / MIB:.0f} MiB"
        + (f" {r['median_s'] * 1e3:.0f} ms" if r["timed"] else "")
        for i, r in rows.items()
    )
    _log(
        f"  [{tag}] {dtype} T={T} bcast={broadcast} block={block_size}: {summary} "
        f"({time.perf_counter() - t0:.0f} s, load {_x(load, '{:.1f}')})"
    )
    return list(rows.values())


def block_sweep(
    blocks: list[int], Ts: list[int], reps: int, reps_large: int, large_T: int, max_run_bytes: int
) -> tuple[int, list[dict[str, Any]], dict[int, float]]:
    """Time blockwise (dropout, float32) at each block size; the block with the smallest
    geometric mean over T of time / fastest time at that T."""
    rows: list[dict[str, Any]] = []
    for T in Ts:
        thunks: dict[str, Callable[[], Any]] = {}
        args = inputs(T, "float32")
        mems: dict[int, dict[str, Any]] = {}
        for bs in blocks:
            compiled, mems[bs] = compile_case(BLOCK, T, "float32", False, bs)
            if mems[bs]["temp_bytes"] <= max_run_bytes:
                thunks[str(bs)] = lambda c=compiled, a=args: c(*a)
        t0 = time.perf_counter()
        timings = time_paired(thunks, reps if T < large_T else reps_large, track_rss=True)
        for bs in blocks:
            row = {"T": T, "block_size": bs, **mems[bs], "timed": str(bs) in timings}
            row.update(timings.get(str(bs), {}))
            rows.append(row)
        _log(
            f"  [sweep] float32 T={T}: "
            + ", ".join(
                f"block {bs} {timings[str(bs)]['median_s'] * 1e3:.0f} ms"
                for bs in blocks
                if str(bs) in timings
            )
            + f" ({time.perf_counter() - t0:.0f} s)"
        )
    score: dict[int, float] = {}
    for bs in blocks:
        rel = []
        for T in Ts:
            timed = [r for r in rows if r["T"] == T and r["timed"]]
            mine = [r for r in timed if r["block_size"] == bs]
            if mine:
                rel.append(mine[0]["median_s"] / min(r["median_s"] for r in timed))
        if len(rel) == len(Ts):
            score[bs] = math.exp(statistics.fmean(math.log(x) for x in rel))
    return min(score, key=score.__getitem__), rows, score


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    info = _machine.machine_info(("jax", "jaxlib", "flax", "numpy", "jaxdrop"))
    info["memory_bytes"] = _machine.mem_total()
    info["git"] = _machine.git_state()
    return info


def machine_line(m: dict[str, Any]) -> str:
    v = m["versions"]
    dev = m["cpu"] if m["backend"] == "cpu" else f"{m['device']} (host: {m['cpu']})"
    line = f"{dev}, {m['affinity'] or m['cpu_count']} cores"
    if m.get("memory_bytes"):
        line += f", {m['memory_bytes'] / GIB:.0f} GiB"
    line += f", {m['platform']}, jax {v['jax']} ({m['backend']}), flax {v['flax']}"
    if m.get("git"):
        dirty = m["git"]["jaxdrop_uncommitted"]
        line += f", jaxdrop at {m['git']['commit'][:7]}" + (
            f" with uncommitted changes in {', '.join(dirty)}" if dirty else ""
        )
    for when in ("start", "end"):
        la = m.get(f"loadavg_{when}")
        if la is not None:
            line += f", load average {la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f} at {when}"
    return line


# --------------------------------------------------------------------------- analysis


def _find(
    rows: list[dict[str, Any]], impl: str, T: int, dtype: str, broadcast: bool = False
) -> dict[str, Any] | None:
    for r in rows:
        if (r["impl"], r["T"], r["dtype"], r["broadcast_dropout"]) == (impl, T, dtype, broadcast):
            return r
    return None


def _ratio(
    rows: list[dict[str, Any]], a: str, b: str, T: int, dtype: str, stat: str, bc: bool = False
) -> float | None:
    ra, rb = _find(rows, a, T, dtype, bc), _find(rows, b, T, dtype, bc)
    if ra is None or rb is None or not ra["timed"] or not rb["timed"]:
        return None
    return ra[stat] / rb[stat]


def _slopes(rows: list[dict[str, Any]], impl: str, dtype: str) -> list[tuple[int, int, float]]:
    pts = sorted(
        (r["T"], r["temp_bytes"])
        for r in rows
        if r["impl"] == impl and r["dtype"] == dtype and not r["broadcast_dropout"]
    )
    return [(t1, t2, math.log(m2 / m1) / math.log(t2 / t1)) for (t1, m1), (t2, m2) in itertools.pairwise(pts)]


def evaluate(result: dict[str, Any], stat: str = "median_s") -> list[dict[str, Any]]:
    """One dict per goal: goal, measured (text), ok (True / False / None = not measured)."""
    rows, dtypes = result["rows"], result["config"]["dtypes"]
    goals: list[dict[str, Any]] = []

    def add(goal: str, measured: str, ok: bool | None) -> None:
        goals.append({"goal": goal, "measured": measured, "ok": ok})

    lo, hi = GOAL_BLOCK_T
    for dtype in dtypes:
        rs = {
            T: _ratio(rows, BLOCK, REF, T, dtype, stat)
            for T in sorted({r["T"] for r in rows})
            if lo <= T <= hi
        }
        got = {T: x for T, x in rs.items() if x is not None}
        add(
            f"blockwise+dropout / jax.nn no-dropout <= {GOAL_BLOCK} at T={lo}..{hi}, {dtype}",
            ", ".join(f"T={T}: {x:.2f}" for T, x in got.items()) or "not measured",
            (all(x <= GOAL_BLOCK for x in got.values()) and len(got) == len(rs)) if got else None,
        )
    for dtype in dtypes:
        x = _ratio(rows, DENSE, REF, GOAL_DENSE_T, dtype, stat)
        add(
            f"dense+dropout / jax.nn no-dropout <= {GOAL_DENSE} at T={GOAL_DENSE_T}, {dtype}",
            "not measured" if x is None else f"{x:.2f}",
            None if x is None else x <= GOAL_DENSE,
        )
    for dtype in dtypes:
        Ts = sorted({r["T"] for r in rows if r["dtype"] == dtype})
        sp = {T: _ratio(rows, FLAX, BLOCK, T, dtype, stat) for T in Ts}
        sp = {T: x for T, x in sp.items() if x is not None}
        add(
            f"blockwise faster than flax (both with dropout) at every timed T, {dtype}",
            ", ".join(f"T={T}: flax/blockwise {x:.2f}" for T, x in sp.items()) or "not measured",
            all(x > 1 for x in sp.values()) if sp else None,
        )
    for dtype in dtypes:
        rb, rf = _find(rows, BLOCK, GOAL_MEM_T, dtype), _find(rows, FLAX, GOAL_MEM_T, dtype)
        if rb is None or rf is None:
            add(f"blockwise temp / flax temp <= 1/25 at T={GOAL_MEM_T}, {dtype}", "not measured", None)
            continue
        x = rb["temp_bytes"] / rf["temp_bytes"]
        add(
            f"blockwise temp / flax temp <= 1/25 at T={GOAL_MEM_T}, {dtype}",
            f"{rb['temp_bytes'] / MIB:.0f} MiB / {rf['temp_bytes'] / MIB:.0f} MiB = {x:.4f} (1/{1 / x:.1f})",
            x <= GOAL_MEM,
        )
    block = result["block_size"]
    for dtype in dtypes:
        sl = _slopes(rows, BLOCK, dtype)
        judged = [(a, b, x) for a, b, x in sl if a >= block]
        text = ", ".join(f"{a}->{b}: {x:.2f}" + ("" if a >= block else " (T < block)") for a, b, x in sl)
        pts = sorted((r["T"], r["temp_bytes"]) for r in rows if r["impl"] == BLOCK and r["dtype"] == dtype)
        if len(pts) >= 2 and judged:
            (t1, m1), (t2, m2) = pts[-2], pts[-1]
            text += f"; {(m2 - m1) / (t2 - t1) * 1024 / MIB:.1f} MiB per 1024 extra tokens ({t1}->{t2})"
        add(
            f"blockwise temp memory grows linearly in T (log-log slope <= {GOAL_LINEAR_SLOPE} between "
            f"consecutive T from the block size {block} on; quadratic = 2), {dtype}",
            text or "not measured",
            all(x <= GOAL_LINEAR_SLOPE for _, _, x in judged) if judged else None,
        )
    real = result.get("real_run")
    if real and real.get("T") == GOAL_REAL_T:
        ok = real["temp_bytes"] < GOAL_REAL_BYTES and real.get("timed", False)
        t = f", {real['median_s']:.3g} s" if real.get("timed") else ", not run"
        add(
            f"blockwise fwd+bwd at T={GOAL_REAL_T} float32 runs with temp < 512 MiB",
            f"temp {real['temp_bytes'] / MIB:.0f} MiB{t}",
            ok,
        )
    else:
        add(f"blockwise fwd+bwd at T={GOAL_REAL_T} float32 runs with temp < 512 MiB", "not measured", None)
    return goals


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**missed**")


# --------------------------------------------------------------------------- report


def _ms(s: float) -> str:
    if s >= 10:
        return f"{s:.1f} s"
    return f"{s * 1e3:.0f}" if s >= 0.1 else f"{s * 1e3:.1f}"


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return ""
    if r["timed"]:
        return _ms(r["median_s"])
    return "not run" if r["skip"] else "-"


def _x(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def markdown(result: dict[str, Any]) -> str:
    m, cfg, rows = result["machine"], result["config"], result["rows"]
    block = result["block_size"]
    out = [
        f"# jaxdrop attention benchmark ({m['backend']}): forward+backward",
        "",
        f"Machine: {machine_line(m)}. {m['date']}. Whole run: {result['wall_s'] / 60:.1f} min"
        + (" (quick smoke run: tiny lengths, not for quoting)." if cfg["quick"] else "."),
        "",
        f"`jax.jit(jax.grad(loss, argnums=(0, 1, 2)))` with `loss = sum(attention(q, k, v) * g)`, "
        f"q, k, v, g `[{BATCH}, T, {HEADS}, {HEAD_DIM}]`, dropout rate {RATE} on the attention weights, "
        "`broadcast_dropout=False` unless said otherwise. "
        f"Blockwise rows use block size **{block}** ({result['block_choice']}). "
        "All in one process; per configuration every implementation is compiled, then timed in rounds "
        "with a rotated order, each timed call immediately preceded by an untimed call of the same "
        f"function; median of {cfg['reps']} rounds (at T >= {cfg['large_T']}: "
        + ", ".join(f"{n} for {d}" for d, n in cfg["reps_large"].items() if d in cfg["dtypes"])
        + f"; 1 above T = {cfg['time_max_T']}, where only the blockwise implementation is timed). "
        "Times in ms unless marked s. Ratios are ratios of medians; `nd` = no dropout. "
        f"Nothing with more than {cfg['max_run_gib']:g} GiB of temporary memory is run (`not run`).",
        "",
    ]
    loads = [r["loadavg_1min"] for r in rows + result["sweep"] if r.get("loadavg_1min") is not None]
    cores = m["affinity"] or m["cpu_count"] or 1
    if loads and max(loads) > cores:
        out += [
            f"**Contended machine.** The 1-minute load average was {min(loads):.1f} to {max(loads):.1f} "
            f"on {cores} cores while the timings ran (column `load`): other processes took CPU time, so "
            "wall times are inflated and noisy and a single ratio can move by tens of per cent between "
            "runs. Interleaving spreads the disturbance over all implementations of a configuration; "
            "the CPU-time column (work done, not waiting for a core) is the steadier comparison.",
            "",
        ]
    out += [
        "## Goals",
        "",
        "Verdict on the medians of wall time; the same ratios on the minima (the least-disturbed "
        "round) and on the medians of process CPU time (work done, not waiting for a core) are "
        "shown for a contended machine, but do not change the verdict.",
        "",
        "| goal | measured (medians) | verdict | minima | CPU time |",
        "| --- | --- | --- | --- | --- |",
    ]
    ev = {stat: evaluate(result, stat) for stat in ("median_s", "min_s", "cpu_median_s")}
    for g, gmin, gcpu in zip(ev["median_s"], ev["min_s"], ev["cpu_median_s"], strict=True):
        alt = [
            "" if x["measured"] == g["measured"] else f"{x['measured']} ({_verdict(x['ok'])})"
            for x in (gmin, gcpu)
        ]
        out.append(f"| {g['goal']} | {g['measured']} | {_verdict(g['ok'])} | {alt[0]} | {alt[1]} |")
    out.append("")

    if result["sweep"]:
        Ts = sorted({r["T"] for r in result["sweep"]})
        blocks = sorted({r["block_size"] for r in result["sweep"]})
        out += [
            "## Block size sweep (float32, blockwise with dropout, fwd+bwd)",
            "",
            "Median ms (temp MiB). Score: geometric mean over T of time / fastest time at that T.",
            "",
            "| block | " + " | ".join(f"T={T}" for T in Ts) + " | score |",
            "| ---: | " + " | ".join("---:" for _ in Ts) + " | ---: |",
        ]
        for bs in blocks:
            cells = []
            for T in Ts:
                r = next(r for r in result["sweep"] if r["T"] == T and r["block_size"] == bs)
                t = _ms(r["median_s"]) if r["timed"] else "not run"
                cells.append(f"{t} ({r['temp_bytes'] / MIB:.0f})")
            score = result["sweep_score"].get(str(bs), result["sweep_score"].get(bs))
            mark = " (chosen)" if bs == block else ""
            out.append(f"| {bs}{mark} | " + " | ".join(cells) + f" | {_x(score)} |")
        out.append("")

    for dtype in cfg["dtypes"]:
        main = [r for r in rows if r["dtype"] == dtype and not r["broadcast_dropout"]]
        Ts = sorted({r["T"] for r in main})
        out += [
            f"## {dtype}: compiled temporary memory (MiB)",
            "",
            "| T | " + " | ".join(SHORT[i] for i in IMPLS) + " | blockwise / flax |",
            "| ---: | " + " | ".join("---:" for _ in IMPLS) + " | ---: |",
        ]
        for T in Ts:
            cells = [_find(rows, i, T, dtype) for i in IMPLS]
            mem = [f"{r['temp_bytes'] / MIB:,.0f}" if r else "" for r in cells]
            rb, rf = _find(rows, BLOCK, T, dtype), _find(rows, FLAX, T, dtype)
            ratio = "-"
            if rb and rf:
                x = rb["temp_bytes"] / rf["temp_bytes"]
                ratio = f"1/{1 / x:.1f}" if x < 1 else f"{x:.2f}"
            out.append(f"| {T} | " + " | ".join(mem) + f" | {ratio} |")
        out += [
            "",
            f"## {dtype}: forward+backward time (median)",
            "",
            "| T | rounds | "
            + " | ".join(SHORT[i] for i in IMPLS)
            + " | blockwise / jax.nn | dense / jax.nn | flax / blockwise | blockwise / jax.nn (CPU time) | load |",
            "| ---: | ---: | " + " | ".join("---:" for _ in IMPLS) + " | ---: | ---: | ---: | ---: | ---: |",
        ]
        for T in Ts:
            cells = [_find(rows, i, T, dtype) for i in IMPLS]
            timed = [r for r in cells if r and r["timed"]]
            if not timed:
                continue
            reps = timed[0]["reps"]
            load = timed[0].get("loadavg_1min")
            out.append(
                f"| {T} | {reps} | "
                + " | ".join(_cell(r) for r in cells)
                + f" | {_x(_ratio(rows, BLOCK, REF, T, dtype, 'median_s'))}"
                + f" | {_x(_ratio(rows, DENSE, REF, T, dtype, 'median_s'))}"
                + f" | {_x(_ratio(rows, FLAX, BLOCK, T, dtype, 'median_s'))}"
                + f" | {_x(_ratio(rows, BLOCK, REF, T, dtype, 'cpu_median_s'))}"
                + f" | {_x(load, '{:.1f}')} |"
            )
        out.append("")

    bc = [r for r in rows if r["broadcast_dropout"]]
    if bc:
        out += [
            "## broadcast_dropout=True (one [T, T] mask shared by batch and heads)",
            "",
            "Its own configurations (jax.nn re-measured alongside). Median ms (temp MiB).",
            "",
            "| dtype | T | "
            + " | ".join(SHORT[i] for i in BCAST_IMPLS)
            + " | blockwise / jax.nn | dense / jax.nn | flax / blockwise |",
            "| --- | ---: | " + " | ".join("---:" for _ in BCAST_IMPLS) + " | ---: | ---: | ---: |",
        ]
        for dtype in cfg["dtypes"]:
            for T in sorted({r["T"] for r in bc if r["dtype"] == dtype}):
                cells = []
                for i in BCAST_IMPLS:
                    r = _find(rows, i, T, dtype, True)
                    cells.append("" if r is None else f"{_cell(r)} ({r['temp_bytes'] / MIB:.0f})")
                out.append(
                    f"| {dtype} | {T} | "
                    + " | ".join(cells)
                    + f" | {_x(_ratio(rows, BLOCK, REF, T, dtype, 'median_s', True))}"
                    + f" | {_x(_ratio(rows, DENSE, REF, T, dtype, 'median_s', True))}"
                    + f" | {_x(_ratio(rows, FLAX, BLOCK, T, dtype, 'median_s', True))} |"
                )
        out.append("")

    real = result.get("real_run")
    if real:
        out += [f"## Blockwise forward+backward at T={real['T']}, float32, run for real", ""]
        if real.get("timed"):
            rss = real.get("rss_gained_bytes")
            out += [
                f"Block size {real['block_size']}: compiled temporary memory **{real['temp_bytes'] / MIB:.0f} MiB** "
                f"(arguments {real['argument_bytes'] / MIB:.0f} MiB, outputs {real['output_bytes'] / MIB:.0f} MiB); "
                f"time {real['median_s']:.3g} s (timed call, after an untimed one of {real['first_call_s']:.3g} s); "
                + (
                    f"resident memory gained by the process during the two calls: {rss / MIB:.0f} MiB "
                    "(temporaries and outputs, sampled every 20 ms)."
                    if rss is not None
                    else "resident memory not sampled (no /proc/self/statm)."
                ),
                "",
            ]
        else:
            out += [f"Not run: {real.get('skip')}; temp {real['temp_bytes'] / MIB:.0f} MiB.", ""]

    sc = result.get("sanity")
    if sc:
        out += [
            f"## Sanity check (float32, T={sc['T']}, broadcast_dropout=False, gradients of q, k, v)",
            "",
            f"jaxdrop dense == Flax bit for bit: {sc['dense_grads_equal_flax']}. Blockwise vs dense, max "
            f"|difference|: {sc['blockwise_vs_dense_max_abs_grad']:.2e} at block {sc['block_size']}, "
            f"{sc['small_blockwise_vs_dense_max_abs_grad']:.2e} at block {sc['small_block_size']} "
            f"(largest |gradient| {sc['max_abs_grad']:.2e}).",
            "",
        ]
    return "\n".join(out)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if not r["broadcast_dropout"]]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = dict(zip(IMPLS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    styles = {"float32": ("-", "o"), "bfloat16": ("--", "s")}
    for dtype in result["config"]["dtypes"]:
        ls, marker = styles.get(dtype, (":", "x"))
        for impl in IMPLS:
            pts = sorted(
                (r["T"], r["temp_bytes"] / MIB) for r in rows if r["impl"] == impl and r["dtype"] == dtype
            )
            if pts:
                ax.plot(
                    *zip(*pts, strict=True),
                    ls=ls,
                    marker=marker,
                    ms=4,
                    color=colors[impl],
                    label=f"{SHORT[impl]}, {dtype}",
                )
    Ts = sorted({r["T"] for r in rows})
    top = max(r["temp_bytes"] for r in rows) / MIB
    lines = [(result["config"]["max_run_gib"] * 1024, ":", "not run above")]
    if result["machine"].get("memory_bytes"):
        lines.append((result["machine"]["memory_bytes"] / MIB, "-.", "machine memory"))
    for y, ls, what in lines:
        if top > y / 20:  # only when the data gets near
            ax.axhline(y, color="grey", lw=0.8, ls=ls)
            ax.text(Ts[0], y * 1.1, f"{what} ({y / 1024:.3g} GiB)", fontsize=8, color="grey")
    for power, label in ((1, "∝ T"), (2, "∝ T²")):
        ref = [
            r["temp_bytes"] / MIB
            for r in rows
            if r["T"] == Ts[-1] and r["impl"] == (BLOCK if power == 1 else FLAX)
        ]
        if ref and len(Ts) > 1:
            y0 = max(ref) * 1.6
            ax.plot([Ts[0], Ts[-1]], [y0 * (Ts[0] / Ts[-1]) ** power, y0], color="black", lw=0.6, ls=":")
            ax.text(Ts[-1], y0, f" {label}", fontsize=8, va="bottom", ha="right")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("compiled temporary memory (MiB)")
    ax.set_title(
        f"Attention fwd+bwd temp memory ({result['machine']['backend']}): batch {BATCH}, {HEADS} heads, "
        f"head dim {HEAD_DIM}, dropout {RATE}",
        fontsize=10,
    )
    ax.set_xticks(Ts, [str(T) for T in Ts])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(result: dict[str, Any], out: Path, stem: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    backend = result["machine"]["backend"]
    quick = "-quick" if result["config"]["quick"] else ""
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    (out / f"{stem}.md").write_text(md)
    plot(result, out / f"attention-memory-{backend}{quick}.png")
    return md


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: T 64 128, float32, 2 reps (< 1 minute)"
    )
    parser.add_argument(
        "--T", type=int, nargs="+", default=None, help="sequence lengths (default 256 ... 16384)"
    )
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=None, help="default: both")
    parser.add_argument("--reps", type=int, default=None, help="timed rounds per configuration (default 5)")
    parser.add_argument(
        "--reps-large",
        type=int,
        default=None,
        help="rounds at T >= --large-T (default 3 float32, 2 bfloat16)",
    )
    parser.add_argument("--large-T", type=int, default=None, help="default 4096")
    parser.add_argument(
        "--time-max-T", type=int, default=None, help="time every implementation up to this T (default 4096)"
    )
    parser.add_argument(
        "--blockwise-dtypes",
        nargs="*",
        choices=list(DTYPES),
        default=None,
        help="dtypes whose blockwise (dropout) is timed above --time-max-T, 1 round (default float32)",
    )
    parser.add_argument("--real-T", type=int, default=None, help="the blockwise run for real (default 16384)")
    parser.add_argument("--block-size", type=int, default=None, help="blockwise block size (skips the sweep)")
    parser.add_argument("--sweep-blocks", type=int, nargs="+", default=None, help="default 256 512 1024")
    parser.add_argument("--sweep-T", type=int, nargs="+", default=None, help="default 1024 2048 4096")
    parser.add_argument("--sweep-reps", type=int, default=None, help="default 3 (1 at T >= --large-T)")
    parser.add_argument(
        "--bcast-T",
        type=int,
        nargs="*",
        default=None,
        help="lengths timed with broadcast_dropout=True (512 1024)",
    )
    parser.add_argument("--max-run-gib", type=float, default=6.0, help="never run above this temp memory")
    parser.add_argument("--no-sanity", action="store_true", help="skip the correctness check")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="output folder (default benchmarks/results)"
    )
    parser.add_argument(
        "--tag", default=None, help="file name stem (default attention-<backend>, plus -quick)"
    )
    parser.add_argument(
        "--render", type=Path, default=None, help="only re-write the .md and .png of this .json"
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        result = json.loads(args.render.read_text())
        md = write(result, args.render.parent, args.render.stem)
        print(md)
        return result

    base = QUICK if args.quick else FULL
    cfg: dict[str, Any] = {
        "quick": args.quick,
        "T": args.T or base["T"],
        "dtypes": args.dtypes or base["dtypes"],
        "reps": args.reps or base["reps"],
        "reps_large": {d: args.reps_large or base["reps_large"].get(d, 2) for d in DTYPES},
        "large_T": args.large_T or base["large_T"],
        "time_max_T": args.time_max_T or base["time_max_T"],
        "blockwise_dtypes": base["blockwise_dtypes"]
        if args.blockwise_dtypes is None
        else args.blockwise_dtypes,
        "real_T": args.real_T or base["real_T"],
        "sweep_blocks": args.sweep_blocks or base["sweep_blocks"],
        "sweep_T": args.sweep_T or base["sweep_T"],
        "sweep_reps": args.sweep_reps or base["sweep_reps"],
        "sweep_reps_large": min(args.sweep_reps or base["sweep_reps"], base["sweep_reps_large"]),
        "bcast_T": base["bcast_T"] if args.bcast_T is None else args.bcast_T,
        "max_run_gib": args.max_run_gib,
        "shape": {"batch": BATCH, "heads": HEADS, "head_dim": HEAD_DIM},
        "rate": RATE,
    }
    max_run = int(args.max_run_gib * GIB)
    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "machine": machine_info(),
        "config": cfg,
        "sweep": [],
        "sweep_score": {},
        "rows": [],
    }
    _log(f"# {machine_line(result['machine'])}")

    if args.block_size is not None:
        block, result["block_choice"] = args.block_size, "given with --block-size"
    else:
        block, result["sweep"], score = block_sweep(
            cfg["sweep_blocks"],
            cfg["sweep_T"],
            cfg["sweep_reps"],
            cfg["sweep_reps_large"],
            cfg["large_T"],
            max_run,
        )
        result["sweep_score"] = {str(b): s for b, s in score.items()}
        result["block_choice"] = (
            f"the fastest of {', '.join(map(str, cfg['sweep_blocks']))} in the float32 sweep at "
            f"T={', '.join(map(str, cfg['sweep_T']))}; jaxdrop's default is 512"
        )
    result["block_size"] = block
    _log(f"# block size {block}")

    for dtype in cfg["dtypes"]:
        for T in sorted(cfg["T"]):
            if T <= cfg["time_max_T"]:
                timed, reps = IMPLS, cfg["reps"] if T < cfg["large_T"] else cfg["reps_large"][dtype]
            elif dtype in cfg["blockwise_dtypes"] or (dtype == "float32" and T == cfg["real_T"]):
                timed, reps = LARGE_IMPLS, 1
            else:
                timed, reps = (), 0
            check = not args.no_sanity and "sanity" not in result and dtype == "float32"
            keep: dict[str, Any] | None = {} if check else None
            result["rows"] += measure_config(IMPLS, timed, T, dtype, False, block, reps, max_run, keep=keep)
            if check:
                result["sanity"] = sanity_check(T, block, keep)
                _log(f"# sanity: {result['sanity']}")
        for T in cfg["bcast_T"]:
            reps = cfg["reps"] if T < cfg["large_T"] else cfg["reps_large"][dtype]
            result["rows"] += measure_config(
                BCAST_IMPLS, BCAST_IMPLS, T, dtype, True, block, reps, max_run, "bcast"
            )

    real = _find(result["rows"], BLOCK, cfg["real_T"], "float32")
    if real is None:  # float32 or real_T not among the benchmarked ones
        real = measure_config((BLOCK,), (BLOCK,), cfg["real_T"], "float32", False, block, 1, max_run, "real")[
            0
        ]
    result["real_run"] = {
        k: real.get(k)
        for k in ("T", "block_size", "temp_bytes", "argument_bytes", "output_bytes", "timed", "skip",
                  "median_s", "first_call_s", "rss_gained_bytes")
    }  # fmt: skip
    result["machine"]["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result["wall_s"] = time.perf_counter() - t_start

    stem = args.tag or f"attention-{result['machine']['backend']}" + ("-quick" if args.quick else "")
    md = write(result, args.out, stem)
    print(md)
    _log(f"wrote {args.out / stem}.json, .md and the memory plot in {result['wall_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
