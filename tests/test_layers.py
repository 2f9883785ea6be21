"""The Flax layers of every variant (jaxdrop.linen, jaxdrop.nnx): parity with the
functional form, key handling, train/eval switching, small models under jit.

Flax compatibility of the drop-in ``Dropout`` layers is tested side by side with
Flax's own in ``test_flax_compat.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import jaxdrop
import jaxdrop.linen as jdl
import jaxdrop.nnx as jdn
from jaxdrop import mc

KEY = jax.random.key(3)

# name, constructor arguments (the same in both APIs), functional form, input shape
SPECS = [
    ("Dropout", dict(rate=0.5, broadcast_dims=(0,)), jaxdrop.dropout, (4, 6)),
    ("ChannelDropout", dict(rate=0.5), jaxdrop.channel_dropout, (2, 4, 4, 3)),
    ("AlphaDropout", dict(rate=0.3), jaxdrop.alpha_dropout, (4, 6)),
    ("FeatureAlphaDropout", dict(rate=0.3, channel_axis=1), jaxdrop.feature_alpha_dropout, (2, 5, 3)),
    ("GaussianDropout", dict(rate=0.3), jaxdrop.gaussian_dropout, (4, 6)),
    ("GaussianNoise", dict(stddev=0.3), jaxdrop.gaussian_noise, (4, 6)),
    ("DropBlock", dict(rate=0.2, block_size=3), jaxdrop.dropblock, (2, 8, 8, 2)),
    ("DropPath", dict(rate=0.5, scale_by_keep=False), jaxdrop.drop_path, (6, 3)),
    ("LockedDropout", dict(rate=0.5, time_axis=1), jaxdrop.locked_dropout, (2, 5, 3)),
]
IDS = [s[0] for s in SPECS]


def data(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def assert_differs(a, b):
    assert not np.array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------------- linen


@pytest.mark.parametrize(("name", "kw", "fn", "shape"), SPECS, ids=IDS)
def test_linen_layer_is_the_functional_form(name, kw, fn, shape):
    x = data(shape)
    layer = getattr(jdl, name)(**kw)
    out = layer.apply({}, x, deterministic=False, rng=KEY)
    np.testing.assert_array_equal(out, fn(KEY, x, **kw))
    assert out.dtype == x.dtype and out.shape == x.shape
    assert_differs(out, x)
    # Evaluation mode: the input itself, with no key needed.
    assert layer.apply({}, x, deterministic=True) is x
    # The constructor's flag instead of the call's.
    assert getattr(jdl, name)(**kw, deterministic=True).apply({}, x) is x
    # mode="fast" reaches the functional form.
    fast = getattr(jdl, name)(**kw, mode="fast").apply({}, x, deterministic=False, rng=KEY)
    np.testing.assert_array_equal(fast, fn(KEY, x, **kw, mode="fast"))


@pytest.mark.parametrize(("name", "kw", "fn", "shape"), SPECS, ids=IDS)
def test_linen_layer_draws_from_make_rng_in_a_jitted_model(name, kw, fn, shape):
    class Model(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            a = getattr(jdl, name)(**kw)(x, deterministic=not train)
            b = getattr(jdl, name)(**kw)(x, deterministic=not train)
            return a, b

    x = data(shape)
    apply = jax.jit(Model().apply, static_argnames="train")
    a, b = apply({}, x, train=True, rngs={"dropout": KEY})
    assert_differs(a, b)  # each layer draws its own key with make_rng
    a2, _ = apply({}, x, train=True, rngs={"dropout": KEY})
    np.testing.assert_array_equal(a, a2)  # same rngs, same output
    a3, _ = apply({}, x, train=True, rngs={"dropout": jax.random.key(4)})
    assert_differs(a, a3)
    e1, e2 = apply({}, x, train=False)
    assert e1 is not None and np.array_equal(e1, x) and np.array_equal(e2, x)


def test_linen_errors_follow_flax():
    x = data((4, 6))
    with pytest.raises(ValueError, match='Parameter "deterministic" must be passed'):
        jdl.ChannelDropout(0.5).apply({}, x, rng=KEY)
    with pytest.raises(ValueError, match="Should be passed just once"):
        jdl.DropPath(0.5, deterministic=True).apply({}, x, deterministic=False, rng=KEY)
    with pytest.raises(Exception, match="noise"):  # the custom collection is the one asked for
        jdl.GaussianDropout(0.5, rng_collection="noise").apply({}, x, deterministic=False, rngs={"dropout": KEY})
    out = jdl.GaussianDropout(0.5, rng_collection="noise").apply({}, x, deterministic=False, rngs={"noise": KEY})
    assert out.shape == x.shape
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        jdl.AlphaDropout(1.5).apply({}, x, deterministic=False, rng=KEY)


def test_linen_rate_zero_draws_no_key():
    # No "dropout" rng at all: a rate of 0 must not ask for one (as flax.linen.Dropout).
    x = data((4, 6))
    for name, kw, _, _ in SPECS:
        arg = {k: (0.0 if k in ("rate", "stddev") else v) for k, v in kw.items()}
        shape = dict((s[0], s[3]) for s in SPECS)[name]
        x = data(shape)
        assert getattr(jdl, name)(**arg).apply({}, x, deterministic=False) is x


def test_linen_zoneout():
    h_prev, h_new = data((3, 5), 1), data((3, 5), 2)
    layer = jdl.Zoneout(0.3)
    out = layer.apply({}, h_prev, h_new, deterministic=False, rng=KEY)
    np.testing.assert_array_equal(out, jaxdrop.zoneout(KEY, h_prev, h_new, 0.3))
    np.testing.assert_allclose(
        layer.apply({}, h_prev, h_new, deterministic=True), 0.3 * h_prev + 0.7 * h_new, rtol=1e-6
    )


def test_linen_embedding_dropout_is_an_embed_whose_rows_drop():
    ids = jnp.array([[1, 2, 3, 2], [0, 2, 5, 1]])
    layer = jdl.EmbeddingDropout(num_embeddings=7, features=4, rate=0.5)
    params = layer.init(jax.random.key(0), ids, deterministic=True)
    table = params["params"]["embedding"]
    assert table.shape == (7, 4)
    embed = nn.Embed(7, 4)
    np.testing.assert_array_equal(layer.apply(params, ids, deterministic=True), embed.apply(params, ids))
    out = layer.apply(params, ids, deterministic=False, rng=KEY)
    expected = jnp.take(jaxdrop.embedding_dropout(KEY, table, 0.5), ids, axis=0)
    np.testing.assert_array_equal(out, expected)
    # A dropped word is zero wherever it occurs.
    dropped = ~np.asarray(jaxdrop.keep_mask(KEY, (7, 1), 0.5))[:, 0]
    assert dropped[np.asarray(ids)].any() and not dropped[np.asarray(ids)].all()
    np.testing.assert_array_equal(np.asarray(out)[dropped[np.asarray(ids)]], 0.0)


def test_linen_dropconnect_dense_is_a_dense_whose_weights_drop():
    x = data((8, 3))
    layer = jdl.DropConnectDense(features=5, rate=0.5)
    params = layer.init(jax.random.key(0), x, deterministic=True)
    assert set(params["params"]) == {"kernel", "bias"}
    np.testing.assert_allclose(
        layer.apply(params, x, deterministic=True), nn.Dense(5).apply(params, x), rtol=1e-6, atol=1e-6
    )
    p = params["params"]
    out = layer.apply(params, x, deterministic=False, rng=KEY)
    np.testing.assert_array_equal(out, jaxdrop.dropconnect_dense(KEY, x, p["kernel"], 0.5, p["bias"]))
    no_bias = jdl.DropConnectDense(features=5, rate=0.5, use_bias=False)
    assert set(no_bias.init(jax.random.key(0), x, deterministic=True)["params"]) == {"kernel"}


def test_linen_concrete_dropout_sows_its_regularizer_and_learns_the_rate():
    x, y = data((64, 3), 1), data((64, 1), 2)
    layer = jdl.ConcreteDropout(nn.Dense(1), init_rate=0.2, weight_regularizer=1e-2, dropout_regularizer=1e-1)
    params = layer.init(jax.random.key(0), x, deterministic=True)
    p = params["params"]
    np.testing.assert_allclose(jax.nn.sigmoid(p["p_logit"]), 0.2, rtol=1e-6)
    out, state = layer.apply(params, x, deterministic=False, rng=KEY, mutable=["losses"])
    expected = jaxdrop.concrete_dropout(KEY, x, p["p_logit"])
    np.testing.assert_allclose(out, nn.Dense(1).apply({"params": p["layer"]}, expected), rtol=1e-6)
    reg = jaxdrop.concrete_dropout_regularizer(
        p["p_logit"], p["layer"]["kernel"], 3, weight_regularizer=1e-2, dropout_regularizer=1e-1
    )
    np.testing.assert_allclose(jdl.regularization_loss(state), reg, rtol=1e-6)
    # In evaluation: no dropout, nothing sown.
    out, state = layer.apply(params, x, deterministic=True, mutable=["losses"])
    np.testing.assert_allclose(out, nn.Dense(1).apply({"params": p["layer"]}, x), rtol=1e-6)
    assert float(jdl.regularization_loss(state)) == 0.0

    def loss(params, key):
        pred, state = layer.apply(params, x, deterministic=False, rng=key, mutable=["losses"])
        return jnp.mean((pred - y) ** 2) + jdl.regularization_loss(state)

    g = jax.grad(loss)(params, KEY)["params"]["p_logit"]
    assert np.isfinite(g) and g != 0
    opt = optax.adam(0.05)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, key):
        grads = jax.grad(loss)(params, key)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    for i in range(20):
        params, opt_state = step(params, opt_state, jax.random.fold_in(KEY, i))
    assert abs(float(jax.nn.sigmoid(params["params"]["p_logit"])) - 0.2) > 1e-3


def test_linen_concrete_dropout_rejects_a_bad_init_rate():
    with pytest.raises(ValueError, match=r"init_rate.*\(0, 1\)"):
        jdl.ConcreteDropout(nn.Dense(1), init_rate=1.0).init(jax.random.key(0), jnp.ones((1, 2)), deterministic=True)


# --------------------------------------------------------------------------- nnx


def nnx_layer(name, kw, **extra):
    return getattr(jdn, name)(**kw, **extra)


@pytest.mark.parametrize(("name", "kw", "fn", "shape"), SPECS, ids=IDS)
def test_nnx_layer_is_the_functional_form_with_a_new_key_per_call(name, kw, fn, shape):
    x = data(shape)
    layer = nnx_layer(name, kw, rngs=nnx.Rngs(dropout=7))
    stream = nnx.Rngs(dropout=7)["dropout"].fork()  # what the layer keeps, drawn the same way
    first, second = layer(x), layer(x)
    np.testing.assert_array_equal(first, fn(stream(), x, **kw))
    np.testing.assert_array_equal(second, fn(stream(), x, **kw))
    assert_differs(first, second)  # the stream advances: a new mask every call
    # Call-time keys take precedence over the layer's stream; raw keys, streams and Rngs work.
    np.testing.assert_array_equal(layer(x, rngs=KEY), fn(KEY, x, **kw))
    np.testing.assert_array_equal(layer(x, rngs=nnx.Rngs(dropout=KEY)), fn(nnx.Rngs(dropout=KEY).dropout(), x, **kw))
    # Evaluation mode: the input itself.
    assert layer(x, deterministic=True) is x
    layer.eval()
    assert layer.deterministic is True and layer(x) is x
    layer.train()
    assert layer.deterministic is False
    assert_differs(layer(x), x)
    assert nnx.view(layer, deterministic=True)(x) is x
    assert mc.is_dropout(layer)


@pytest.mark.parametrize(("name", "kw", "fn", "shape"), SPECS, ids=IDS)
def test_nnx_layer_in_a_jitted_model(name, kw, fn, shape):
    class Model(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx_layer(name, kw, rngs=rngs)
            self.b = nnx_layer(name, kw, rngs=rngs)

        def __call__(self, x):
            return self.a(x), self.b(x)

    x = data(shape)
    model = Model(nnx.Rngs(0))
    forward = nnx.jit(lambda m, x: m(x))
    a1, b1 = forward(model, x)
    a2, _ = forward(model, x)
    assert_differs(a1, b1)  # two layers, two streams
    assert_differs(a1, a2)  # the stream's state advances through nnx.jit
    model.eval()
    e1, e2 = forward(model, x)
    np.testing.assert_array_equal(e1, x)
    np.testing.assert_array_equal(e2, x)
    model.train()
    assert_differs(forward(model, x)[0], x)


def test_nnx_errors():
    x = data((4, 6))
    with pytest.raises(ValueError, match="no `rngs` argument was provided to ChannelDropout"):
        jdn.ChannelDropout(0.5)(x)
    with pytest.raises(ValueError, match="No `deterministic` argument was provided to DropPath"):
        jdn.DropPath(0.5, deterministic=None, rngs=nnx.Rngs(0))(x)
    with pytest.raises(TypeError, match="rngs must be a Rngs, RngStream or None"):
        jdn.AlphaDropout(0.5, rngs=0)
    with pytest.raises(TypeError, match=r"rngs must be a Rngs, RngStream or jax\.Array"):
        jdn.AlphaDropout(0.5)(x, rngs=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        jdn.GaussianDropout(-0.1, rngs=nnx.Rngs(0))(x)
    with pytest.raises(TypeError, match="integer"):
        jdn.EmbeddingDropout(5, 2, 0.1, rngs=nnx.Rngs(0))(jnp.ones((2,)))
    with pytest.raises(TypeError, match="kernel"):
        jdn.ConcreteDropout(jdn.Dropout(0.1))


def test_nnx_rate_zero_draws_no_key():
    for name, kw, _, shape in SPECS:
        arg = {k: (0.0 if k in ("rate", "stddev") else v) for k, v in kw.items()}
        x = data(shape)
        assert getattr(jdn, name)(**arg)(x) is x  # no rngs anywhere, and no error


def test_nnx_zoneout():
    h_prev, h_new = data((3, 5), 1), data((3, 5), 2)
    layer = jdn.Zoneout(0.3, rngs=nnx.Rngs(dropout=1))
    key = nnx.Rngs(dropout=1)["dropout"].fork()()
    np.testing.assert_array_equal(layer(h_prev, h_new), jaxdrop.zoneout(key, h_prev, h_new, 0.3))
    layer.eval()
    np.testing.assert_allclose(layer(h_prev, h_new), 0.3 * h_prev + 0.7 * h_new, rtol=1e-6)


def test_nnx_embedding_dropout_and_dropconnect_dense_match_flax_layers_in_eval():
    ids = jnp.array([[1, 2, 3, 2], [0, 2, 5, 1]])
    layer = jdn.EmbeddingDropout(7, 4, 0.5, rngs=nnx.Rngs(0))
    embed = nnx.Embed(7, 4, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(layer.embedding[...], embed.embedding[...])  # same init
    np.testing.assert_array_equal(layer(ids, deterministic=True), embed(ids))
    np.testing.assert_array_equal(
        layer(ids, rngs=KEY), jnp.take(jaxdrop.embedding_dropout(KEY, layer.embedding[...], 0.5), ids, axis=0)
    )

    x = data((8, 3))
    dense = jdn.DropConnectDense(3, 5, 0.5, rngs=nnx.Rngs(0))
    linear = nnx.Linear(3, 5, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(dense.kernel[...], linear.kernel[...])
    np.testing.assert_allclose(dense(x, deterministic=True), linear(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(
        dense(x, rngs=KEY), jaxdrop.dropconnect_dense(KEY, x, dense.kernel[...], 0.5, dense.bias[...])
    )
    assert jdn.DropConnectDense(3, 5, 0.5, use_bias=False, rngs=nnx.Rngs(0)).bias is None


def test_nnx_concrete_dropout_learns_its_rate_with_the_regulariser_in_the_loss():
    x, y = data((64, 3), 1), data((64, 1), 2)
    rngs = nnx.Rngs(0)

    class Model(nnx.Module):
        def __init__(self, rngs):
            kw = dict(init_rate=0.2, weight_regularizer=1e-2, dropout_regularizer=1e-1, rngs=rngs)
            self.hidden = jdn.ConcreteDropout(nnx.Linear(3, 8, rngs=rngs), **kw)
            self.out = jdn.ConcreteDropout(nnx.Linear(8, 1, rngs=rngs), **kw)

        def __call__(self, x):
            return self.out(nnx.relu(self.hidden(x)))

    model = Model(rngs)
    np.testing.assert_allclose(model.hidden.rate, 0.2, rtol=1e-6)
    expected = sum(
        jaxdrop.concrete_dropout_regularizer(
            m.p_logit[...], m.layer.kernel[...], m.layer.kernel.shape[0], weight_regularizer=1e-2,
            dropout_regularizer=1e-1,
        )
        for m in (model.hidden, model.out)
    )
    np.testing.assert_allclose(jdn.regularization_loss(model), expected, rtol=1e-6)
    assert float(jdn.regularization_loss(nnx.Linear(2, 2, rngs=rngs))) == 0.0

    model.eval()
    np.testing.assert_allclose(
        model(x), model.out.layer(nnx.relu(model.hidden.layer(x))), rtol=1e-6
    )
    model.train()
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)

    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2) + jdn.regularization_loss(model)

    grads = nnx.grad(loss_fn)(model)
    g = grads["hidden"]["p_logit"][...]
    assert np.isfinite(g) and g != 0

    @nnx.jit
    def step(model, optimizer):
        optimizer.update(model, nnx.grad(loss_fn)(model))

    for _ in range(20):
        step(model, optimizer)
    assert abs(float(model.hidden.rate) - 0.2) > 1e-3


def test_mc_switches_every_jaxdrop_layer_on():
    rngs = nnx.Rngs(0)
    layers = [
        jdn.Zoneout(0.1),
        jdn.EmbeddingDropout(3, 2, 0.1, rngs=rngs),
        jdn.DropConnectDense(2, 2, 0.1, rngs=rngs),
        jdn.ConcreteDropout(nnx.Linear(2, 2, rngs=rngs)),
        jdl.Zoneout(0.1),
        jdl.DropConnectDense(2, 0.1),
        jdl.ConcreteDropout(nn.Dense(2)),
    ]
    assert all(mc.is_dropout(layer) for layer in layers)
