"""Sharded against unsharded dropout on simulated CPU devices: an overhead check.

Times ``jaxdrop.dropout`` (forward, and forward+backward through ``vjp``) of an
``N x N`` float32 array placed on one device and sharded over a mesh of 8
simulated CPU devices (``--xla_force_host_platform_device_count=8``): along the
batch axis, along the feature axis, and over both (2 x 4). A jitted ``x * 2``
(one read and one write of the array) is timed the same way, so the cost of
sharding itself can be told apart from the cost of the mask.

**What this measures.** The 8 "devices" are threads sharing this machine's
cores (2 on the development VM), so a sharded run cannot be faster than one
device that already uses every core; the question is whether sharding *adds*
time: per-device dispatch, and communication, of which a jaxdrop mask needs none
(see ``docs/sharding.md``). Read ``x 1 dev`` (time divided by the one-device time
of the same operation) as overhead, not as speed-up. Real speed-ups need real
devices.

**Method.** For each array size and operation, ``--reps`` rounds run each layout
once in an order rotated every round (interleaved, so a slow phase of a shared
machine hits all alike), every timed call immediately preceded by an untimed call
of the same function (so the previous layout's memory traffic never lands in a
timed call; the first untimed call also compiles); medians and minima are reported. Outputs are checked equal across
layouts before timing (the same key gives the same mask however the array is
placed).

Usage::

    python benchmarks/bench_sharding.py                  # sizes 1024 and 4096, 9 rounds
    python benchmarks/bench_sharding.py --sizes 2048 --reps 15 --json out.json

The device-count flag must be set before JAX starts; the script sets it itself
unless ``XLA_FLAGS`` already asks for a host device count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

N_DEVICES = 8
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={N_DEVICES}"
    ).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after XLA_FLAGS)
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

try:
    import jaxdrop
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import jaxdrop

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared timing helper
from _timing import time_paired  # noqa: E402

RATE = 0.5


def layouts() -> dict[str, Any]:
    """name -> sharding of an (N, N) array."""
    devs = np.array(jax.devices()[:N_DEVICES])
    line = Mesh(devs, ("d",))
    grid = Mesh(devs.reshape(2, 4), ("data", "model"))
    return {
        "1 device": jax.devices()[0],
        "8 dev, batch": NamedSharding(line, P("d", None)),
        "8 dev, feature": NamedSharding(line, P(None, "d")),
        "2x4, both": NamedSharding(grid, P("data", "model")),
    }


def _replicated(s: Any) -> Any:
    return NamedSharding(s.mesh, P()) if isinstance(s, NamedSharding) else s


def operations() -> dict[str, Callable[..., Any]]:
    """name -> jitted f(key, x, g) (g: the cotangent, used by the backward pass)."""

    def fwd_bwd(key: Any, x: Any, g: Any) -> Any:
        y, vjp = jax.vjp(lambda x_: jaxdrop.dropout(key, x_, RATE), x)
        return y, vjp(g)[0]

    return {
        "copy (x * 2)": jax.jit(lambda key, x, g: x * 2),
        "dropout forward": jax.jit(lambda key, x, g: jaxdrop.dropout(key, x, RATE)),
        "dropout forward+backward": jax.jit(fwd_bwd),
    }


def time_interleaved(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, Any]:
    """Median and minimum seconds per call of each thunk: ``_timing.time_paired``
    (interleaved, rotated rounds; each timed call right after an untimed one of the same thunk)."""
    return time_paired(fns, reps)


def run(sizes: list[int], reps: int) -> dict[str, Any]:
    key = jax.random.key(0)
    places = layouts()
    ops = operations()
    results: list[dict[str, Any]] = []
    for n in sizes:
        rng = np.random.default_rng(n)
        x_np = rng.normal(size=(n, n)).astype(np.float32)
        g_np = rng.normal(size=(n, n)).astype(np.float32)
        xs = {name: jax.device_put(x_np, s) for name, s in places.items()}
        gs = {name: jax.device_put(g_np, s) for name, s in places.items()}
        # The key lives where the computation runs (replicated), as in a sharded train state;
        # otherwise every call would first copy it to each device.
        keys = {name: jax.device_put(key, _replicated(s)) for name, s in places.items()}
        for op_name, op in ops.items():
            outs = {name: jax.device_get(op(keys[name], xs[name], gs[name])) for name in places}
            ref = jax.tree_util.tree_leaves(outs["1 device"])
            for name, out in outs.items():
                for a, b in zip(jax.tree_util.tree_leaves(out), ref, strict=True):
                    if not np.array_equal(a, b):
                        raise AssertionError(f"{op_name} on {name} differs from one device (size {n})")
            thunks = {
                name: (lambda op=op, k=keys[name], x=xs[name], g=gs[name]: op(k, x, g)) for name in places
            }
            timing = time_interleaved(thunks, reps)
            for name, t in timing.items():
                results.append({"size": n, "operation": op_name, "layout": name, **t})
            print(f"  {n}x{n} {op_name}: done", file=sys.stderr, flush=True)
    return {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
            "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "rate": RATE,
        "reps": reps,
        "results": results,
    }


def markdown(report: dict[str, Any]) -> str:
    rows = report["results"]
    base = {(r["size"], r["operation"]): r for r in rows if r["layout"] == "1 device"}
    copy = {(r["size"], r["layout"]): r for r in rows if r["operation"] == "copy (x * 2)"}
    m = report["machine"]
    lines = [
        f"Sharded vs unsharded jaxdrop.dropout (rate {report['rate']}, float32), {m['devices']} simulated "
        f"on {m['cpu_count']} cores, jax {m['jax']}, {report['reps']} interleaved rounds; load average "
        f"{m['loadavg']}.",
        "",
        "| size | operation | layout | median ms | min ms | x 1 dev (median) | x 1 dev (min) | x copy |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        b = base[(r["size"], r["operation"])]
        c = copy[(r["size"], r["layout"])]
        lines.append(
            f"| {r['size']} | {r['operation']} | {r['layout']} | {r['median_s'] * 1e3:.2f} | {r['min_s'] * 1e3:.2f} "
            f"| {r['median_s'] / b['median_s']:.2f} | {r['min_s'] / b['min_s']:.2f} "
            f"| {r['median_s'] / c['median_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096], help="array side N (N x N)")
    parser.add_argument("--reps", type=int, default=9, help="interleaved rounds")
    parser.add_argument("--json", type=Path, default=None, help="also write every sample here")
    args = parser.parse_args(argv)
    if jax.device_count() < N_DEVICES:
        sys.exit(
            f"need {N_DEVICES} devices, found {jax.device_count()}: run on the CPU "
            f"(JAX_PLATFORMS=cpu) with XLA_FLAGS=--xla_force_host_platform_device_count={N_DEVICES}"
        )
    if any(n % N_DEVICES for n in args.sizes):
        sys.exit(f"sizes must be multiples of {N_DEVICES}")
    report = run(args.sizes, args.reps)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    print(markdown(report))


if __name__ == "__main__":
    main()
