"""Dropout benchmark: jaxdrop against Flax, Haiku, Equinox, PyTorch and a plain copy.

Everything runs in ONE process. For each configuration (dtype, rate, direction) all
implementations are timed in interleaved rounds (every round runs each implementation once,
in a rotated order), and the median per implementation is reported, so slow drifts of a
shared machine hit all of them alike. Every timed call is immediately preceded by an
untimed call of the same function (``_timing.time_paired``), so the memory traffic of the
implementation that ran before never lands in a timed call (``crosstalk.py`` measures
that this gives the same figures as timing each implementation alone).

Measured:

* **dropout** of an ``N x N`` array (default 4096), float32, bfloat16 and float16, rate 0.1 and 0.5:
  ``forward`` (y = dropout(x)) and ``forward+backward`` (y and dx = vjp(g)), for a jitted
  ``x * 2`` (the floor: one read and one write of the array), ``flax.linen.Dropout``,
  ``flax.nnx.Dropout``, ``haiku.dropout``, ``equinox.nn.Dropout``,
  ``torch.nn.functional.dropout`` (CPU, or CUDA when available) and jaxdrop's
  ``exact`` and ``fast`` modes;
* an **MLP training step** (4 dense layers, dropout after each hidden one, SGD update):
  time per step and XLA's compiled temporary memory, without dropout, with Flax-style
  dropout and with jaxdrop (exact, fast).

Writes ``benchmarks/results/<backend>[-quick].json`` and ``.md`` and prints the Markdown.
``python benchmarks/check_goals.py`` then says which performance goals pass.

Usage::

    python benchmarks/bench.py            # full run (a few minutes on 2 CPU cores)
    python benchmarks/bench.py --quick    # smoke run: small arrays, few repetitions
    python benchmarks/bench.py --size 2048 --reps 9
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

try:
    import jaxdrop
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import jaxdrop

sys.path.insert(0, str(Path(__file__).resolve().parent))  # check_goals, the shared timing helper
import _machine
from _timing import time_paired

RESULTS = Path(__file__).resolve().parent / "results"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
RATES = (0.1, 0.5)
DIRECTIONS = ("forward", "forward+backward")
COPY, FLAX = "copy (x * 2)", "flax.linen.Dropout"

# --------------------------------------------------------------------------- timing


def _sync() -> None:
    """torch's CUDA work is asynchronous: wait for it as ``block_until_ready`` does for JAX."""
    if _TORCH is not None and _TORCH_DEVICE == "cuda":
        _TORCH.cuda.synchronize()


def time_interleaved(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, dict[str, Any]]:
    """Median wall time per call of each thunk: ``_timing.time_paired`` (interleaved, rotated
    rounds; every timed call right after an untimed call of the same thunk)."""
    return time_paired(fns, reps, sync=_sync)


# --------------------------------------------------------------------------- implementations

_TORCH: Any = None
_TORCH_DEVICE = "cpu"


def _load_torch(enabled: bool) -> None:
    global _TORCH, _TORCH_DEVICE
    if not enabled:
        return
    try:
        import torch
    except ImportError:
        print("torch not installed: skipping torch.nn.functional.dropout", file=sys.stderr)
        return
    _TORCH = torch
    _TORCH_DEVICE = "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"


def jax_dropouts(rate: float) -> dict[str, Callable[[jax.Array, jax.Array], jax.Array]]:
    """name -> f(key, x) for every JAX implementation (not jitted yet)."""
    import equinox as eqx
    import flax.linen as fnn
    import haiku as hk
    from flax import nnx

    return {
        COPY: lambda key, x: x * 2,
        FLAX: lambda key, x: fnn.Dropout(rate, deterministic=False).apply({}, x, rng=key),
        "flax.nnx.Dropout": lambda key, x: nnx.Dropout(rate, rngs=nnx.Rngs(dropout=key))(x),
        "haiku.dropout": lambda key, x: hk.dropout(key, rate, x),
        "equinox.nn.Dropout": lambda key, x: eqx.nn.Dropout(rate)(x, key=key, inference=False),
        "jaxdrop exact": lambda key, x: jaxdrop.dropout(key, x, rate),
        "jaxdrop fast": lambda key, x: jaxdrop.dropout(key, x, rate, mode="fast"),
    }


def _forward_backward(f: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable[..., Any]:
    def fb(key: jax.Array, x: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
        y, vjp = jax.vjp(lambda x: f(key, x), x)
        return y, vjp(g)[0]

    return fb


def dropout_thunks(size: int, dtype: str, rate: float, direction: str) -> dict[str, Callable[[], Any]]:
    key = jax.random.key(0)
    kx, kg = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (size, size), DTYPES[dtype])
    g = jax.random.normal(kg, (size, size), DTYPES[dtype])
    thunks: dict[str, Callable[[], Any]] = {}
    for name, f in jax_dropouts(rate).items():
        if direction == "forward":
            jf = jax.jit(f)
            thunks[name] = lambda jf=jf: jf(key, x)
        else:
            jfb = jax.jit(_forward_backward(f))
            thunks[name] = lambda jfb=jfb: jfb(key, x, g)
    if _TORCH is not None:
        torch = _TORCH
        tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        gen = torch.Generator(device=_TORCH_DEVICE).manual_seed(0)
        tx = torch.randn(size, size, generator=gen, device=_TORCH_DEVICE).to(tdtype)
        tg = torch.randn(size, size, generator=gen, device=_TORCH_DEVICE).to(tdtype)
        F = torch.nn.functional
        name = f"torch F.dropout ({_TORCH_DEVICE})"
        if direction == "forward":

            def torch_fwd() -> Any:
                with torch.no_grad():
                    return F.dropout(tx, rate, training=True)

            thunks[name] = torch_fwd
        else:
            txg = tx.clone().requires_grad_(True)

            def torch_fb() -> Any:
                y = F.dropout(txg, rate, training=True)
                return y, torch.autograd.grad(y, txg, tg)[0]

            thunks[name] = torch_fb
    return thunks


def check_exact_equals_flax(size: int) -> bool:
    """Sanity: on the benchmark's own input, jaxdrop exact == flax.linen.Dropout bit for bit."""
    fs = jax_dropouts(0.5)
    x = jax.random.normal(jax.random.key(1), (size, size))
    key = jax.random.key(0)
    return bool(jnp.array_equal(jax.jit(fs["jaxdrop exact"])(key, x), jax.jit(fs[FLAX])(key, x)))


# --------------------------------------------------------------------------- MLP training step


def mlp_step(drop: Callable[[jax.Array, jax.Array], jax.Array] | None) -> Callable[..., Any]:
    def forward(params: list[tuple[jax.Array, jax.Array]], x: jax.Array, key: jax.Array) -> jax.Array:
        keys = jax.random.split(key, len(params))
        for i, (w, b) in enumerate(params):
            x = x @ w + b
            if i < len(params) - 1:
                x = jax.nn.relu(x)
                if drop is not None:
                    x = drop(keys[i], x)
        return x

    def loss(params: Any, x: jax.Array, y: jax.Array, key: jax.Array) -> jax.Array:
        return jnp.mean(jnp.square(forward(params, x, key) - y).astype(jnp.float32))

    def step(params: Any, x: jax.Array, y: jax.Array, key: jax.Array) -> tuple[Any, jax.Array]:
        value, grads = jax.value_and_grad(loss)(params, x, y, key)
        return jax.tree.map(lambda p, g: p - (0.01 * g).astype(p.dtype), params, grads), value

    return step


def mlp_variants(rate: float) -> dict[str, Callable[[jax.Array, jax.Array], jax.Array] | None]:
    fs = jax_dropouts(rate)
    return {"flax-style": fs[FLAX], "jaxdrop exact": fs["jaxdrop exact"], "jaxdrop fast": fs["jaxdrop fast"]}


def bench_mlp(
    width: int, batch: int, layers: int, dtype: str, rates: tuple[float, ...], reps: int
) -> list[dict[str, Any]]:
    dt = DTYPES[dtype]
    keys = jax.random.split(jax.random.key(2), layers + 2)
    params = [
        ((jax.random.normal(k, (width, width)) / np.sqrt(width)).astype(dt), jnp.zeros(width, dt))
        for k in keys[:layers]
    ]
    x = jax.random.normal(keys[-2], (batch, width), dt)
    y = jax.random.normal(keys[-1], (batch, width), dt)
    key = jax.random.key(3)
    configs: dict[str, tuple[str, float | None, Callable[..., Any] | None]] = {
        "no dropout": ("no dropout", None, None)
    }
    for rate in rates:
        for name, drop in mlp_variants(rate).items():
            configs[f"{name} rate={rate}"] = (name, rate, drop)
    thunks, temp = {}, {}
    for label, (_, _, drop) in configs.items():
        compiled = jax.jit(mlp_step(drop)).lower(params, x, y, key).compile()
        temp[label] = compiled.memory_analysis().temp_size_in_bytes
        thunks[label] = lambda c=compiled: c(params, x, y, key)
    timings = time_interleaved(thunks, reps)
    return [
        {
            "variant": name,
            "rate": rate,
            "dtype": dtype,
            "width": width,
            "batch": batch,
            "layers": layers,
            "temp_bytes": temp[label],
            **timings[label],
        }
        for label, (name, rate, _) in configs.items()
    ]


# --------------------------------------------------------------------------- machine and report


def machine_info() -> dict[str, Any]:
    info = _machine.machine_info(("jax", "jaxlib", "flax", "dm-haiku", "equinox", "torch", "numpy", "jaxdrop"))
    if _TORCH is not None:
        info["torch_device"] = _TORCH_DEVICE
        info["torch_threads"] = _TORCH.get_num_threads()
        if _TORCH_DEVICE == "cuda":
            info["torch_cuda_device"] = _TORCH.cuda.get_device_name()
    return info


def machine_line(m: dict[str, Any]) -> str:
    v = m["versions"]
    dev = m["cpu"] if m["backend"] == "cpu" else f"{m['device']} (host: {m['cpu']})"
    line = f"{dev}, {m['affinity'] or m['cpu_count']} cores, jax {v['jax']} ({m['backend']})"
    if v.get("torch"):
        line += f", torch {v['torch']}"
    if m.get("loadavg_start") is not None:
        line += f", load average {m['loadavg_start'][0]:.1f} at start"
    return line


def _ms(s: float) -> str:
    return f"{s * 1e3:.1f}" if s >= 0.01 else f"{s * 1e3:.2f}"


def markdown(result: dict[str, Any]) -> str:
    from check_goals import evaluate  # benchmarks/ is on sys.path when run as a script

    m, cfg = result["machine"], result["config"]
    n = cfg["size"]
    out = [
        f"# jaxdrop benchmark ({m['backend']}, {n}x{n})",
        "",
        f"Machine: {machine_line(m)}. {m['date']}.",
        "",
        f"Median of {cfg['reps']} interleaved repetitions after warm-up, all in one process. "
        "`x copy` = time / time of a jitted `x * 2` (one read and one write of the array); "
        f"`flax / t` = how many times faster than `{FLAX}` for the same dtype, rate and direction. "
        f"jaxdrop exact equals flax.linen.Dropout bit for bit on this input: {result['exact_equals_flax']}.",
        "",
    ]
    rows = result["dropout"]

    def lookup(impl: str, dtype: str, rate: float, direction: str) -> dict[str, Any] | None:
        for r in rows:
            if (r["impl"], r["dtype"], r["rate"], r["direction"]) == (impl, dtype, rate, direction):
                return r
        return None

    impls = list(dict.fromkeys(r["impl"] for r in rows))
    for dtype in cfg["dtypes"]:
        for rate in cfg["rates"]:
            out += [
                f"## Dropout, {dtype}, rate {rate}, {n}x{n}",
                "",
                "| implementation | forward ms | x copy | flax / t | fwd+bwd ms | x copy | flax / t |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for impl in impls:
                cells = []
                for direction in cfg["directions"]:
                    r = lookup(impl, dtype, rate, direction)
                    if r is None:
                        cells += ["-", "-", "-"]
                        continue
                    cells += [_ms(r["median_s"]), f"{r['x_copy']:.2f}", f"{r['flax_speedup']:.1f}"]
                out.append(f"| {impl} | " + " | ".join(cells) + " |")
            out.append("")
    mlp = result["mlp"]
    if mlp:
        first = mlp[0]
        out += [
            f"## MLP training step ({first['layers']} dense layers, width {first['width']}, batch {first['batch']}, "
            "dropout after each hidden layer, SGD)",
            "",
            "| dtype | variant | rate | step ms | x no dropout | compiled temp MiB | extra MiB vs no dropout |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in mlp:
            rate = "-" if r["rate"] is None else f"{r['rate']}"
            out.append(
                f"| {r['dtype']} | {r['variant']} | {rate} | {_ms(r['median_s'])} | {r['x_none']:.3f} | "
                f"{r['temp_bytes'] / 2**20:.1f} | {r['extra_temp_bytes'] / 2**20:+.1f} |"
            )
        out.append("")
    stats = [("median_s", "medians"), ("min_s", "minima")]
    if m["backend"] == "cpu":
        stats.append(("cpu_median_s", "CPU time"))
    out += [
        "## Goals (rate 0.5; every dtype, then float32)",
        "",
        "On the medians of wall time, on the minima (the least-disturbed repetition)"
        + (
            " and on the medians of process CPU time (work done, not waiting for a core)."
            if len(stats) > 2
            else "."
        ),
        "",
        "| goal | " + " | ".join(f"{label} | pass" for _, label in stats) + " |",
        "| --- | " + " | ".join("--- | ---" for _ in stats) + " |",
    ]
    evaluated = [evaluate(result, stat) for stat, _ in stats]
    for goals in zip(*evaluated, strict=True):
        cells = [f"{g['measured']} | {'yes' if g['ok'] else '**no**'}" for g in goals]
        out.append(f"| {goals[0]['goal']} | " + " | ".join(cells) + " |")
    out.append("")
    return "\n".join(out)


def _annotate(result: dict[str, Any]) -> None:
    """Add ratios vs copy / flax (dropout) and vs no dropout (MLP)."""
    rows = result["dropout"]
    for r in rows:
        same = [q for q in rows if (q["dtype"], q["direction"]) == (r["dtype"], r["direction"])]
        copy = [q for q in same if q["impl"] == COPY and q["rate"] == r["rate"]]
        flax = [q for q in same if q["impl"] == FLAX and q["rate"] == r["rate"]]
        r["x_copy"] = r["median_s"] / copy[0]["median_s"] if copy else math.nan
        r["flax_speedup"] = flax[0]["median_s"] / r["median_s"] if flax else math.nan
    for r in result["mlp"]:
        none = next(q for q in result["mlp"] if q["dtype"] == r["dtype"] and q["variant"] == "no dropout")
        r["x_none"] = r["median_s"] / none["median_s"]
        r["extra_temp_bytes"] = r["temp_bytes"] - none["temp_bytes"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=None, help="N for the N x N dropout input (default 4096)")
    parser.add_argument(
        "--reps", type=int, default=None, help="timed repetitions per configuration (default 5)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1024x1024, 3 reps, small MLP, float32 only"
    )
    parser.add_argument("--mlp-width", type=int, default=None, help="MLP width (default 1024)")
    parser.add_argument("--mlp-batch", type=int, default=None, help="MLP batch (default 4096)")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=None, help="default: all three")
    parser.add_argument("--rates", nargs="+", type=float, default=None, help="default: 0.1 0.5")
    parser.add_argument("--no-torch", action="store_true", help="skip torch even if installed")
    parser.add_argument("--no-mlp", action="store_true", help="skip the MLP training step")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="output folder (default benchmarks/results)"
    )
    parser.add_argument("--tag", default=None, help="file name stem (default: the backend, plus -quick)")
    parser.add_argument(
        "--render", type=Path, default=None, help="only re-write the .md of this result .json"
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        result = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(markdown(result))
        print(markdown(result))
        return result

    size = args.size or (1024 if args.quick else 4096)
    reps = args.reps or (3 if args.quick else 5)
    mlp_width = args.mlp_width or (256 if args.quick else 1024)
    mlp_batch = args.mlp_batch or (512 if args.quick else 4096)
    dtypes = args.dtypes or (["float32"] if args.quick else list(DTYPES))
    rates = tuple(args.rates or RATES)
    _load_torch(not args.no_torch)

    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "machine": machine_info(),
        "config": {
            "size": size,
            "reps": reps,
            "quick": args.quick,
            "dtypes": dtypes,
            "rates": list(rates),
            "directions": list(DIRECTIONS),
            "mlp": None if args.no_mlp else {"width": mlp_width, "batch": mlp_batch, "layers": 4},
        },
        "exact_equals_flax": check_exact_equals_flax(min(size, 1024)),
        "dropout": [],
        "mlp": [],
    }
    print(f"# {machine_line(result['machine'])}", file=sys.stderr)
    for dtype in dtypes:
        for rate in rates:
            for direction in DIRECTIONS:
                t0 = time.perf_counter()
                timings = time_interleaved(dropout_thunks(size, dtype, rate, direction), reps)
                for impl, t in timings.items():
                    result["dropout"].append(
                        {"impl": impl, "dtype": dtype, "rate": rate, "direction": direction, **t}
                    )
                print(
                    f"  dropout {dtype} rate={rate} {direction}: {time.perf_counter() - t0:.0f} s",
                    file=sys.stderr,
                )
    if not args.no_mlp:
        for dtype in dtypes:
            t0 = time.perf_counter()
            result["mlp"] += bench_mlp(mlp_width, mlp_batch, 4, dtype, rates, reps)
            print(f"  MLP {dtype}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    result["machine"]["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result["wall_s"] = time.perf_counter() - t_start
    _annotate(result)

    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.tag or (result["machine"]["backend"] + ("-quick" if args.quick else ""))
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    (args.out / f"{stem}.md").write_text(md)
    print(md)
    print(f"wrote {args.out / stem}.json and .md in {result['wall_s']:.0f} s", file=sys.stderr)
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
