"""Training-step memory with and without dropout, per model: residuals and compiled temp memory.

For four models, each written three ways (plain JAX, ``flax.linen``, ``flax.nnx``), the
gradient of a mean-squared-error loss with respect to the parameters is jitted and
compiled (ahead of time: nothing runs) three times: **without dropout**, with
**Flax-style** dropout (``flax.linen.Dropout`` / ``flax.nnx.Dropout``; in plain JAX
``jax.random.bernoulli`` + select, which is what those layers do) and with **jaxdrop**
(``jaxdrop.dropout`` / ``jaxdrop.linen.Dropout`` / ``jaxdrop.nnx.Dropout``). Reported:

* ``temp MiB``: XLA's compiled temporary memory,
  ``jax.jit(f).lower(...).compile().memory_analysis().temp_size_in_bytes``;
* ``residual MiB``: the bytes of the arrays ``jax.vjp`` keeps for the backward pass
  (``jax.ad_checkpoint.saved_residuals``, counting each array once; keys count 0); on the
  plain-JAX models only (the Flax ones carry the same arrays, plus their parameters).

Models (dropout rate 0.1):

* ``tanh MLP``: 4 dense layers, width 1024, batch 4096, tanh and dropout after each hidden layer;
* ``GELU MLP``: the same with GELU;
* ``ReLU CNN``: 3 convolutions 3x3, 64 channels, on 16 x 32 x 32 x 64 (NHWC), ReLU and
  dropout after each but the last;
* ``transformer``: one pre-LayerNorm block, batch 8, length 256, width 512, 8 heads,
  MLP 2048 (GELU); dropout on the attention output (after its projection) and on the MLP
  output, each before its residual add (no dropout on the attention weights).

The tanh MLP is also compiled with the opt-in **jaxdrop ActivationDropout**
(``jaxdrop.activation_dropout(key, x, rate, "tanh")``, ``jaxdrop.linen.ActivationDropout``,
``jaxdrop.nnx.ActivationDropout``) in place of tanh followed by dropout: see
``jaxdrop/_activation.py`` for why tanh followed by any dropout keeps an extra array per layer.

Writes ``benchmarks/results/train-memory-<backend>.json`` and ``.md``.

Usage::

    python benchmarks/bench_train_memory.py
    python benchmarks/bench_train_memory.py --small      # small sizes (seconds)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as fnn
import jax
import jax.numpy as jnp
from flax import nnx

try:
    import jaxdrop
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import jaxdrop
import jaxdrop.linen as jdl
import jaxdrop.nnx as jdn

RESULTS = Path(__file__).resolve().parent / "results"
RATE = 0.1
MIB = 2**20
VARIANTS = ("no dropout", "flax-style", "jaxdrop", "jaxdrop ActivationDropout")
FUSED = "jaxdrop ActivationDropout"  # tanh MLP only: activation_dropout(key, x, rate, "tanh")

FULL = {
    "mlp": {"width": 1024, "batch": 4096, "layers": 4},
    "cnn": {"batch": 16, "hw": 32, "channels": 64, "layers": 3},
    "transformer": {"batch": 8, "length": 256, "width": 512, "heads": 8, "mlp": 2048},
}
SMALL = {
    "mlp": {"width": 128, "batch": 256, "layers": 4},
    "cnn": {"batch": 4, "hw": 16, "channels": 16, "layers": 3},
    "transformer": {"batch": 2, "length": 64, "width": 64, "heads": 4, "mlp": 256},
}

Drop = Callable[[jax.Array, jax.Array], jax.Array]


def flax_style(key: jax.Array, x: jax.Array) -> jax.Array:
    """What flax.linen.Dropout does: a jax.random.bernoulli mask and a select."""
    keep = jax.random.bernoulli(key, 1.0 - RATE, x.shape)
    return jax.lax.select(keep, x / (1.0 - RATE), jnp.zeros_like(x))


def FUSED_DROP(key: jax.Array, x: jax.Array) -> jax.Array:  # a marker: the tanh MLP only
    raise AssertionError("replaced by activation_dropout")


PLAIN_DROPS: dict[str, Drop | None] = {
    "no dropout": None,
    "flax-style": flax_style,
    "jaxdrop": lambda key, x: jaxdrop.dropout(key, x, RATE),
    FUSED: FUSED_DROP,
}

# --------------------------------------------------------------------------- plain JAX


def _normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.normal(key, shape) / jnp.sqrt(shape[-2] if len(shape) == 2 else shape[-2] * 9)


def _maybe(drop: Drop | None, key: jax.Array, x: jax.Array) -> jax.Array:
    return x if drop is None else drop(key, x)


def plain_mlp(act: Callable[[jax.Array], jax.Array], c: dict[str, int]) -> tuple[Any, Callable[..., Any]]:
    w, n = c["width"], c["layers"]
    params = [(jnp.zeros((w, w)), jnp.zeros(w)) for _ in range(n)]
    x = jnp.zeros((c["batch"], w))

    def apply(params: Any, x: jax.Array, key: jax.Array, drop: Drop | None) -> jax.Array:
        keys = jax.random.split(key, n)
        for i, (wi, bi) in enumerate(params):
            x = x @ wi + bi
            if i < n - 1:
                if drop is FUSED_DROP:
                    x = jaxdrop.activation_dropout(keys[i], x, RATE, "tanh")
                else:
                    x = _maybe(drop, keys[i], act(x))
        return x

    return (params, x), apply


def plain_cnn(c: dict[str, int]) -> tuple[Any, Callable[..., Any]]:
    ch, n = c["channels"], c["layers"]
    params = [(jnp.zeros((3, 3, ch, ch)), jnp.zeros(ch)) for _ in range(n)]
    x = jnp.zeros((c["batch"], c["hw"], c["hw"], ch))

    def apply(params: Any, x: jax.Array, key: jax.Array, drop: Drop | None) -> jax.Array:
        keys = jax.random.split(key, n)
        for i, (wi, bi) in enumerate(params):
            x = jax.lax.conv_general_dilated(x, wi, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + bi
            if i < n - 1:
                x = _maybe(drop, keys[i], jax.nn.relu(x))
        return x

    return (params, x), apply


def _layer_norm(x: jax.Array, g: jax.Array, b: jax.Array) -> jax.Array:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + 1e-6) * g + b


def plain_transformer(c: dict[str, int]) -> tuple[Any, Callable[..., Any]]:
    d, h, m = c["width"], c["heads"], c["mlp"]
    params = {
        "ln1": (jnp.ones(d), jnp.zeros(d)),
        "qkv": jnp.zeros((d, 3 * d)),
        "o": jnp.zeros((d, d)),
        "ln2": (jnp.ones(d), jnp.zeros(d)),
        "up": (jnp.zeros((d, m)), jnp.zeros(m)),
        "down": (jnp.zeros((m, d)), jnp.zeros(d)),
    }
    x = jnp.zeros((c["batch"], c["length"], d))

    def apply(p: Any, x: jax.Array, key: jax.Array, drop: Drop | None) -> jax.Array:
        k1, k2 = jax.random.split(key)
        B, T, _ = x.shape
        q, k, v = jnp.split(_layer_norm(x, *p["ln1"]) @ p["qkv"], 3, axis=-1)
        q, k, v = (t.reshape(B, T, h, d // h) for t in (q, k, v))
        att = jax.nn.dot_product_attention(q, k, v, is_causal=True).reshape(B, T, d)
        x = x + _maybe(drop, k1, att @ p["o"])
        u = jax.nn.gelu(_layer_norm(x, *p["ln2"]) @ p["up"][0] + p["up"][1])
        return x + _maybe(drop, k2, u @ p["down"][0] + p["down"][1])

    return (params, x), apply


def plain_models(cfg: dict[str, Any]) -> dict[str, tuple[Any, Callable[..., Any]]]:
    return {
        "tanh MLP": plain_mlp(jnp.tanh, cfg["mlp"]),
        "GELU MLP": plain_mlp(jax.nn.gelu, cfg["mlp"]),
        "ReLU CNN": plain_cnn(cfg["cnn"]),
        "transformer": plain_transformer(cfg["transformer"]),
    }


def plain_grad(apply: Callable[..., Any], drop: Drop | None) -> Callable[..., Any]:
    def loss(params: Any, x: jax.Array, key: jax.Array) -> jax.Array:
        return jnp.mean(apply(params, x, key, drop) ** 2)

    return jax.grad(loss)


# --------------------------------------------------------------------------- flax.linen

LinenDrop = Callable[[], fnn.Module] | None


class LinenMLP(fnn.Module):
    act: Callable[[jax.Array], jax.Array]
    width: int
    layers: int
    drop: Any = None  # a factory of dropout modules, or None

    @fnn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.layers):
            x = fnn.Dense(self.width)(x)
            if i < self.layers - 1:
                if self.drop == FUSED:
                    x = jdl.ActivationDropout(RATE, "tanh", deterministic=False)(x)
                    continue
                x = self.act(x)
                if self.drop is not None:
                    x = self.drop()(x)
        return x


class LinenCNN(fnn.Module):
    channels: int
    layers: int
    drop: Any = None

    @fnn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.layers):
            x = fnn.Conv(self.channels, (3, 3), padding="SAME")(x)
            if i < self.layers - 1:
                x = fnn.relu(x)
                if self.drop is not None:
                    x = self.drop()(x)
        return x


class LinenBlock(fnn.Module):
    width: int
    heads: int
    mlp: int
    drop: Any = None

    @fnn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        B, T, d = x.shape
        h = self.heads
        q, k, v = jnp.split(fnn.Dense(3 * d, use_bias=False)(fnn.LayerNorm()(x)), 3, axis=-1)
        q, k, v = (t.reshape(B, T, h, d // h) for t in (q, k, v))
        att = fnn.Dense(d, use_bias=False)(jax.nn.dot_product_attention(q, k, v, is_causal=True).reshape(B, T, d))
        x = x + (att if self.drop is None else self.drop()(att))
        u = fnn.Dense(d)(fnn.gelu(fnn.Dense(self.mlp)(fnn.LayerNorm()(x))))
        return x + (u if self.drop is None else self.drop()(u))


LINEN_DROPS: dict[str, Any] = {
    "no dropout": None,
    "flax-style": lambda: fnn.Dropout(RATE, deterministic=False),
    "jaxdrop": lambda: jdl.Dropout(RATE, deterministic=False),
    FUSED: FUSED,
}


def linen_models(cfg: dict[str, Any], drop: Any) -> dict[str, tuple[fnn.Module, tuple[int, ...]]]:
    m, c, t = cfg["mlp"], cfg["cnn"], cfg["transformer"]
    return {
        "tanh MLP": (LinenMLP(jnp.tanh, m["width"], m["layers"], drop), (m["batch"], m["width"])),
        "GELU MLP": (LinenMLP(fnn.gelu, m["width"], m["layers"], drop), (m["batch"], m["width"])),
        "ReLU CNN": (LinenCNN(c["channels"], c["layers"], drop), (c["batch"], c["hw"], c["hw"], c["channels"])),
        "transformer": (
            LinenBlock(t["width"], t["heads"], t["mlp"], drop),
            (t["batch"], t["length"], t["width"]),
        ),
    }


def linen_grad(module: fnn.Module, shape: tuple[int, ...]) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    params = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros(shape)))["params"]

    def loss(params: Any, x: jax.Array, key: jax.Array) -> jax.Array:
        return jnp.mean(module.apply({"params": params}, x, rngs={"dropout": key}) ** 2)

    return jax.grad(loss), (params, x, jax.eval_shape(lambda: jax.random.key(0)))


# --------------------------------------------------------------------------- flax.nnx


class NnxMLP(nnx.Module):
    def __init__(self, act: Any, width: int, layers: int, drop: Any, rngs: nnx.Rngs) -> None:
        self.act = act
        self.dense = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(layers)])
        self.drops = nnx.List([drop(rngs) for _ in range(layers - 1)]) if drop else None
        self.fused = drop is NNX_FUSED

    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.dense)
        for i, layer in enumerate(self.dense):
            x = layer(x)
            if i < n - 1:
                if self.fused:
                    x = self.drops[i](x)  # ActivationDropout: tanh and dropout in one
                    continue
                x = self.act(x)
                if self.drops is not None:
                    x = self.drops[i](x)
        return x


class NnxCNN(nnx.Module):
    def __init__(self, channels: int, layers: int, drop: Any, rngs: nnx.Rngs) -> None:
        self.convs = nnx.List([nnx.Conv(channels, channels, (3, 3), padding="SAME", rngs=rngs) for _ in range(layers)])
        self.drops = nnx.List([drop(rngs) for _ in range(layers - 1)]) if drop else None

    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.convs)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < n - 1:
                x = nnx.relu(x)
                if self.drops is not None:
                    x = self.drops[i](x)
        return x


class NnxBlock(nnx.Module):
    def __init__(self, width: int, heads: int, mlp: int, drop: Any, rngs: nnx.Rngs) -> None:
        self.heads = heads
        self.ln1 = nnx.LayerNorm(width, rngs=rngs)
        self.qkv = nnx.Linear(width, 3 * width, use_bias=False, rngs=rngs)
        self.o = nnx.Linear(width, width, use_bias=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(width, rngs=rngs)
        self.up = nnx.Linear(width, mlp, rngs=rngs)
        self.down = nnx.Linear(mlp, width, rngs=rngs)
        self.drop1 = drop(rngs) if drop else None
        self.drop2 = drop(rngs) if drop else None

    def __call__(self, x: jax.Array) -> jax.Array:
        B, T, d = x.shape
        h = self.heads
        q, k, v = jnp.split(self.qkv(self.ln1(x)), 3, axis=-1)
        q, k, v = (t.reshape(B, T, h, d // h) for t in (q, k, v))
        att = self.o(jax.nn.dot_product_attention(q, k, v, is_causal=True).reshape(B, T, d))
        x = x + (att if self.drop1 is None else self.drop1(att))
        u = self.down(nnx.gelu(self.up(self.ln2(x))))
        return x + (u if self.drop2 is None else self.drop2(u))


def NNX_FUSED(rngs: nnx.Rngs) -> nnx.Module:
    return jdn.ActivationDropout(RATE, "tanh", rngs=rngs)


NNX_DROPS: dict[str, Any] = {
    "no dropout": None,
    "flax-style": lambda rngs: nnx.Dropout(RATE, rngs=rngs),
    "jaxdrop": lambda rngs: jdn.Dropout(RATE, rngs=rngs),
    FUSED: NNX_FUSED,
}


def nnx_models(cfg: dict[str, Any], drop: Any) -> dict[str, tuple[Callable[[], nnx.Module], tuple[int, ...]]]:
    m, c, t = cfg["mlp"], cfg["cnn"], cfg["transformer"]
    r = lambda: nnx.Rngs(0, dropout=1)  # noqa: E731
    return {
        "tanh MLP": (lambda: NnxMLP(jnp.tanh, m["width"], m["layers"], drop, r()), (m["batch"], m["width"])),
        "GELU MLP": (lambda: NnxMLP(nnx.gelu, m["width"], m["layers"], drop, r()), (m["batch"], m["width"])),
        "ReLU CNN": (
            lambda: NnxCNN(c["channels"], c["layers"], drop, r()),
            (c["batch"], c["hw"], c["hw"], c["channels"]),
        ),
        "transformer": (
            lambda: NnxBlock(t["width"], t["heads"], t["mlp"], drop, r()),
            (t["batch"], t["length"], t["width"]),
        ),
    }


def nnx_grad(make: Callable[[], nnx.Module], shape: tuple[int, ...]) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    graphdef, state = nnx.split(jax.eval_shape(make))

    def grad(state: Any, x: jax.Array) -> Any:
        model = nnx.merge(graphdef, state)
        return nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)  # the gradient of the Params

    return grad, (state, jax.ShapeDtypeStruct(shape, jnp.float32))


# --------------------------------------------------------------------------- measurement


def temp_bytes(f: Callable[..., Any], *args: Any) -> int:
    return int(jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes)


def residual_bytes(f: Callable[..., Any], *args: Any) -> int:
    """Bytes of the arrays jax.vjp saves (keys excluded), from what ``print_saved_residuals``
    prints (its list form is not public API)."""
    from jax._src.ad_checkpoint import saved_residuals

    total = 0
    for aval, _ in saved_residuals(f, *args):
        if not jax.dtypes.issubdtype(aval.dtype, jax.dtypes.prng_key):
            total += aval.size * aval.dtype.itemsize
    return total


def measure(cfg: dict[str, Any], frameworks: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    key = jax.random.key(0)
    if "plain JAX" in frameworks:
        for model, ((params, x), apply) in plain_models(cfg).items():
            for variant, drop in PLAIN_DROPS.items():
                if variant == FUSED and model != "tanh MLP":
                    continue
                loss = lambda p, x, k, apply=apply, drop=drop: jnp.mean(apply(p, x, k, drop) ** 2)  # noqa: E731
                rows.append(
                    {
                        "framework": "plain JAX",
                        "model": model,
                        "variant": variant,
                        "temp_bytes": temp_bytes(plain_grad(apply, drop), params, x, key),
                        "residual_bytes": residual_bytes(lambda p, loss=loss, x=x: loss(p, x, key), params),
                    }
                )
            print(f"  plain JAX {model}: done", file=sys.stderr, flush=True)
    if "linen" in frameworks:
        for variant, drop in LINEN_DROPS.items():
            for model, (module, shape) in linen_models(cfg, drop).items():
                if variant == FUSED and model != "tanh MLP":
                    continue
                g, args = linen_grad(module, shape)
                rows.append(
                    {"framework": "linen", "model": model, "variant": variant, "temp_bytes": temp_bytes(g, *args)}
                )
        print("  linen: done", file=sys.stderr, flush=True)
    if "nnx" in frameworks:
        for variant, drop in NNX_DROPS.items():
            for model, (make, shape) in nnx_models(cfg, drop).items():
                if variant == FUSED and model != "tanh MLP":
                    continue
                g, args = nnx_grad(make, shape)
                rows.append(
                    {"framework": "nnx", "model": model, "variant": variant, "temp_bytes": temp_bytes(g, *args)}
                )
        print("  nnx: done", file=sys.stderr, flush=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    out = [
        f"# Training-step memory per model ({result['backend']}, jax {result['jax']})",
        "",
        "Compiled temporary memory of `jax.jit(jax.grad(loss))` (compile only) and, for plain JAX, the "
        "bytes of the residuals `jax.vjp` saves; dropout rate "
        f"{RATE}. `extra` = over the same model without dropout. Sizes: {json.dumps(result['config'])}.",
        "",
        "| framework | model | temp MiB, no dropout | flax-style | extra | jaxdrop | extra |"
        " jaxdrop ActivationDropout | extra | residual MiB, no dropout | flax-style | jaxdrop |"
        " ActivationDropout |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    keys = list(dict.fromkeys((r["framework"], r["model"]) for r in rows))
    for fw, model in keys:
        by = {r["variant"]: r for r in rows if (r["framework"], r["model"]) == (fw, model)}
        base = by["no dropout"]["temp_bytes"]
        cells = [f"{base / MIB:.1f}"]
        for v in VARIANTS[1:]:
            if v not in by:
                cells += ["-", "-"]
                continue
            t = by[v]["temp_bytes"]
            cells += [f"{t / MIB:.1f}", f"{(t - base) / MIB:+.1f}"]
        res = [
            f"{by[v]['residual_bytes'] / MIB:.1f}" if v in by and "residual_bytes" in by[v] else "-"
            for v in VARIANTS
        ]
        out.append(f"| {fw} | {model} | " + " | ".join(cells + res) + " |")
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--frameworks", nargs="+", default=["plain JAX", "linen", "nnx"], choices=["plain JAX", "linen", "nnx"]
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default=None, help="file name stem (default train-memory-<backend>[-small])")
    args = parser.parse_args(argv)
    cfg = SMALL if args.small else FULL
    result = {
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "config": cfg,
        "rate": RATE,
        "rows": measure(cfg, args.frameworks),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.tag or f"train-memory-{result['backend']}" + ("-small" if args.small else "")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    (args.out / f"{stem}.md").write_text(md)
    print(md)
    return result


if __name__ == "__main__":
    main()
