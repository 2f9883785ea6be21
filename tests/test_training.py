"""jaxdrop.training: the loop learns, is reproducible, resumes bit for bit, handles NaNs and bad checkpoints."""

from __future__ import annotations

import glob
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _train_child import BATCH, make_model, make_trainer, toy_data
from flax import nnx

import jaxdrop.nnx as jdn
from jaxdrop import models, training
from jaxdrop.training import Checkpointer, CheckpointError, NonFiniteError, Trainer

STEPS_PER_EPOCH = 96 // BATCH  # 6


@pytest.fixture(scope="module")
def trainer():
    """One trainer (one compilation) shared by the tests that do not need their own."""
    return make_trainer()


@pytest.fixture(scope="module")
def data():
    return toy_data()


@pytest.fixture(scope="module")
def reference(trainer, data):
    """States of an uninterrupted run after 0..12 steps."""
    state = trainer.init(jax.random.key(0))
    states = [state]
    for _ in range(12):
        state, _ = trainer.fit(state, data, batch_size=BATCH, steps=int(state.step) + 1, progress=False)
        states.append(state)
    return states


def assert_same(a, b):
    chex.assert_trees_all_equal_structs(a, b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def differs(a, b) -> bool:
    return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


# --------------------------------------------------------------------------- learning, reproducibility


def test_loss_falls_and_accuracy_beats_chance(trainer, data):
    state = trainer.init(jax.random.key(0))
    state, hist = trainer.fit(state, data, batch_size=BATCH, epochs=8, eval_data={"all": data}, progress=False)
    assert [r["epoch"] for r in hist] == list(range(1, 9))
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    assert hist[-1]["all_loss"] < hist[0]["all_loss"]
    assert hist[-1]["all_accuracy"] > 0.9  # 4 well-separated classes; chance is 0.25
    assert hist[-1]["all_error"] == pytest.approx(1 - hist[-1]["all_accuracy"])


def test_stepwise_fit_equals_one_fit(trainer, data, reference):
    state, _ = trainer.fit(reference[0], data, batch_size=BATCH, steps=12, progress=False)
    assert_same(state, reference[12])


def test_two_runs_with_one_seed_are_identical_and_seeds_matter(data, reference):
    other = make_trainer()  # a fresh model object and trainer with the same seeds
    state, _ = other.fit(other.init(jax.random.key(0)), data, batch_size=BATCH, steps=12, progress=False)
    assert_same(state, reference[12])
    reseeded, _ = other.fit(other.init(jax.random.key(1)), data, batch_size=BATCH, steps=12, progress=False)
    assert differs(reseeded.params, reference[12].params)


def test_step_key_is_fold_in_of_base_key_and_step(trainer, data, reference):
    """The loss the jitted step reports is the model's loss under fold_in(base_key, step)."""
    state = reference[7]
    x, y = data.x[:BATCH], data.y[:BATCH]
    _, metrics = trainer.train_step(state, x, y)
    base = jax.random.wrap_key_data(state.key)
    model = nnx.merge(trainer._adapter.graphdef, state.params, trainer._adapter.rng_state, state.model_state)
    losses = {
        s: float(training.cross_entropy_loss(model(x, rngs=nnx.Rngs(dropout=jax.random.fold_in(base, s))), y))
        for s in (6, 7, 8)
    }
    assert float(metrics["loss"]) == pytest.approx(losses[7], rel=1e-6)  # jit vs eager: ulps
    for other in (6, 8):  # a new mask every step
        assert float(metrics["loss"]) != pytest.approx(losses[other], rel=1e-3)


def test_eval_is_deterministic_and_matches_predict(trainer, data, reference):
    state = reference[12]
    res = trainer.evaluate(state, data, batch_size=40)  # 96 = 40 + 40 + 16 (padded)
    logits = np.asarray(trainer.predict(state, data.x))
    assert res["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == data.y), abs=1e-12)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, data.y)
    assert res["loss"] == pytest.approx(float(np.mean(ce)), rel=1e-5)
    assert trainer.evaluate(state, data) == trainer.evaluate(state, data)


# --------------------------------------------------------------------------- checkpoints


def test_train_2n_equals_train_n_save_resume_train_n(tmp_path, trainer, data, reference):
    """(In new processes too: see test_checkpoint_kill.py.)"""
    ckpt = str(tmp_path / "ck")
    fresh = trainer.init(jax.random.key(0))
    _, hist_a = trainer.fit(fresh, data, batch_size=BATCH, steps=6, checkpoint_dir=ckpt, progress=False)
    assert Checkpointer(ckpt).steps() == [6]
    s2, hist = trainer.fit(fresh, data, batch_size=BATCH, steps=12, checkpoint_dir=ckpt, progress=False)
    assert_same(s2, reference[12])
    # The history of the resumed run continues the saved one and equals an uninterrupted run's.
    _, hist_ref = trainer.fit(fresh, data, batch_size=BATCH, steps=12, progress=False)
    assert hist[: len(hist_a)] == hist_a and hist == hist_ref


def test_resume_mid_epoch_is_bitwise(tmp_path, trainer, data, reference):
    ckpt = str(tmp_path / "ck")
    trainer.fit(reference[0], data, batch_size=BATCH, steps=4, checkpoint_dir=ckpt, save_every=4, progress=False)
    s, _ = trainer.fit(reference[0], data, batch_size=BATCH, steps=9, checkpoint_dir=ckpt, save_every=4, progress=False)
    assert_same(s, reference[9])
    assert Checkpointer(ckpt).steps() == [4, 8, 9]


def test_resume_false_refuses_to_overwrite(tmp_path, trainer, data, reference):
    ckpt = str(tmp_path / "ck")
    trainer.fit(reference[0], data, batch_size=BATCH, steps=2, checkpoint_dir=ckpt, progress=False)
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        trainer.fit(reference[0], data, batch_size=BATCH, steps=4, checkpoint_dir=ckpt, resume=False, progress=False)


def _corrupt(step_dir: str, how: str) -> None:
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "*"), recursive=True) if os.path.isfile(f)]
    assert files
    for f in files:
        if how == "truncate":
            with open(f, "r+b") as fh:
                fh.truncate(os.path.getsize(f) // 2)
        else:  # garble every byte pattern
            with open(f, "r+b") as fh:
                raw = bytearray(fh.read())
                fh.seek(0)
                fh.write(bytes(b ^ 0x5A for b in raw))


@pytest.mark.parametrize("how", ["truncate", "garble", "checksum", "partial"])
def test_corrupt_checkpoint_warns_and_falls_back(tmp_path, trainer, data, reference, how):
    ckpt = str(tmp_path / "ck")
    trainer.fit(reference[0], data, batch_size=BATCH, steps=4, checkpoint_dir=ckpt, save_every=2, progress=False)
    newest = os.path.join(ckpt, "4")
    if how == "checksum":  # the arrays read fine but are not what was saved
        meta_file = os.path.join(newest, "meta", "metadata")
        meta = json.load(open(meta_file))
        meta["checksum"] = "0" * 64
        json.dump(meta, open(meta_file, "w"))
    elif how == "partial":  # what a kill in the middle of a save leaves: a temporary dir, no final one
        os.rename(newest, os.path.join(ckpt, "4.orbax-checkpoint-tmp-1234567"))
    else:
        _corrupt(newest, how)
    cp = Checkpointer(ckpt)
    if how == "partial":
        state, meta = cp.restore_latest(reference[0])
    else:
        with pytest.warns(RuntimeWarning, match=r"checkpoint 4 .* corrupt.*falling back to step 2"):
            state, meta = cp.restore_latest(reference[0])
        assert glob.glob(os.path.join(ckpt, "corrupt-4-*"))
    assert meta["step"] == 2 and cp.steps() == [2]
    assert_same(state, reference[2])
    # Training resumes from step 2 and still ends bit-identical to the uninterrupted run.
    s, _ = trainer.fit(reference[0], data, batch_size=BATCH, steps=6, checkpoint_dir=ckpt, save_every=2, progress=False)
    assert_same(s, reference[6])


def test_all_checkpoints_corrupt_is_a_clear_error(tmp_path, trainer, data, reference):
    ckpt = str(tmp_path / "ck")
    trainer.fit(reference[0], data, batch_size=BATCH, steps=4, checkpoint_dir=ckpt, save_every=2, progress=False)
    for step in ("2", "4"):
        _corrupt(os.path.join(ckpt, step), "truncate")
    with pytest.warns(RuntimeWarning), pytest.raises(CheckpointError, match="none of the checkpoints"):
        Checkpointer(ckpt).restore_latest(reference[0])


def test_checkpoint_of_another_model_is_refused_and_kept(tmp_path, data, reference, trainer):
    ckpt = str(tmp_path / "ck")
    trainer.fit(reference[0], data, batch_size=BATCH, steps=2, checkpoint_dir=ckpt, progress=False)
    wide = Trainer(make_model(hidden=24), optax.sgd(0.1, momentum=0.9))
    with pytest.raises(CheckpointError, match="different model"):
        wide.fit(wide.init(jax.random.key(0)), data, batch_size=BATCH, steps=4, checkpoint_dir=ckpt, progress=False)
    assert Checkpointer(ckpt).steps() == [2]


def test_checkpointer_rejects_max_to_keep_below_two(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep"):
        Checkpointer(tmp_path, max_to_keep=1)


# --------------------------------------------------------------------------- non-finite values


def test_nan_stops_with_step_named_and_last_checkpoint_intact(tmp_path, trainer, reference):
    ckpt = str(tmp_path / "ck")
    bad = toy_data(nan_from=80)  # unshuffled, the 6th batch (step 5) holds the NaN rows
    history_file = str(tmp_path / "h.json")
    with pytest.raises(NonFiniteError, match=r"non-finite loss \(loss=nan\) at step 5 .*checkpoint \(step 4") as err:
        trainer.fit(
            reference[0], bad, batch_size=BATCH, steps=12, shuffle=False, checkpoint_dir=ckpt,
            save_every=2, progress=False, history_path=history_file,
        )  # fmt: skip
    assert err.value.step == 5 and err.value.checkpoint_step == 4 and np.isnan(err.value.loss)
    good, _ = trainer.fit(reference[0], bad[:80], batch_size=BATCH, steps=5, shuffle=False, progress=False)
    assert_same(err.value.state, good)
    cp = Checkpointer(ckpt)
    assert cp.steps() == [2, 4]
    restored, _ = cp.restore_latest(reference[0])
    four, _ = trainer.fit(reference[0], bad[:80], batch_size=BATCH, steps=4, shuffle=False, progress=False)
    assert_same(restored, four)
    assert json.load(open(history_file)) == []  # written even on error (no epoch finished)


def test_skip_mode_skips_the_bad_update_and_counts_it(data):
    skipper = make_trainer(on_nonfinite="skip")
    bad = toy_data(nan_from=80)
    s0 = skipper.init(jax.random.key(0))
    s5, _ = skipper.fit(s0, bad, batch_size=BATCH, steps=5, shuffle=False, progress=False)
    s6, hist = skipper.fit(s0, bad, batch_size=BATCH, steps=7, shuffle=False, progress=False)
    assert int(s6.step) == 7
    assert hist[0]["skipped"] == 1 and hist[-1]["skipped"] == 0
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(s6.params))
    s_after_skip, _ = skipper.fit(s0, bad, batch_size=BATCH, steps=6, shuffle=False, progress=False)
    assert_same(s_after_skip.params, s5.params)  # the NaN step changed nothing
    assert_same(s_after_skip.opt_state, s5.opt_state)
    assert differs(s6.params, s5.params)  # and training went on


def test_gradient_that_is_not_finite_is_caught(data):
    """A finite loss with an infinite gradient (sqrt at 0) is also non-finite."""

    def loss_fn(logits, y):
        return training.cross_entropy_loss(logits, y) + jnp.sqrt(jnp.abs(logits[0, 0] - logits[0, 0]))

    t = Trainer(make_model(), optax.sgd(0.1), loss_fn=loss_fn)
    with pytest.raises(NonFiniteError, match=r"non-finite gradient .* at step 0"):
        t.fit(t.init(jax.random.key(0)), data, batch_size=BATCH, steps=1, progress=False)


# --------------------------------------------------------------------------- constraints, schedules


def test_max_norm_projects_columns_onto_the_ball():
    rng = np.random.default_rng(3)
    w = (rng.normal(size=(50, 20)) * np.linspace(0.05, 1.0, 20)).astype(np.float32)
    conv = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
    params = {"dense": {"kernel": w, "bias": np.full((20,), 100.0, np.float32)}, "conv": {"kernel": conv}}
    c = 2.0
    out = jax.jit(training.max_norm, static_argnums=1)(params, c)
    norms_in = np.linalg.norm(np.asarray(w), axis=0)
    norms_out = np.linalg.norm(np.asarray(out["dense"]["kernel"]), axis=0)
    inside = norms_in <= c
    assert inside.any() and (~inside).any()
    np.testing.assert_array_equal(np.asarray(out["dense"]["kernel"])[:, inside], np.asarray(w)[:, inside])
    np.testing.assert_allclose(norms_out[~inside], c, rtol=1e-5)
    cos = np.sum(np.asarray(out["dense"]["kernel"]) * np.asarray(w), 0) / (norms_in * norms_out)
    np.testing.assert_allclose(cos, 1.0, rtol=1e-5)  # direction kept
    conv_norms = np.linalg.norm(np.asarray(out["conv"]["kernel"]).reshape(-1, 6), axis=0)
    assert np.all(conv_norms <= c * (1 + 1e-5))
    np.testing.assert_array_equal(out["dense"]["bias"], params["dense"]["bias"])
    with pytest.raises(ValueError, match="positive"):
        training.max_norm(params, 0.0)


def test_trainer_keeps_kernels_within_max_norm(reference):
    """The toy trainer uses c = 1 and its initial columns have norms around 1: the projection is active."""
    init_norms, norms = [], []
    for (path, leaf), leaf0 in zip(
        jax.tree_util.tree_flatten_with_path(reference[12].params)[0], jax.tree.leaves(reference[0].params), strict=True
    ):
        if training.is_kernel(path, leaf):
            norms.append(np.linalg.norm(np.asarray(leaf), axis=0))
            init_norms.append(np.linalg.norm(np.asarray(leaf0), axis=0))
    norms_all, init_all = np.concatenate(norms), np.concatenate(init_norms)
    assert (init_all > 1.0).any()
    assert norms_all.max() <= 1.0 + 1e-6
    assert np.mean(np.abs(norms_all - 1.0) < 1e-5) > 0.5  # most columns sit on the sphere


def test_clip_norm_and_weight_decay(data):
    """chain(clip_by_global_norm(1e-3), add_decayed_weights(0.1, kernels), sgd(1)):
    update = -(clip(g) + 0.1 * kernel)."""
    t = Trainer(make_model(), optax.sgd(1.0), clip_norm=1e-3, weight_decay=0.1)
    s0 = t.init(jax.random.key(0))
    s1, _ = t.fit(s0, data, batch_size=BATCH, steps=1, progress=False)
    clipped = []
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(s1.params)[0], jax.tree.leaves(s0.params), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        decay = 0.1 * b if training.is_kernel(path, b) else 0.0
        clipped.append((b - a) - decay)  # = clip(g)
    g_norm = np.sqrt(sum(np.sum(c**2) for c in clipped))
    assert 0.5e-3 < g_norm <= 1e-3 * (1 + 1e-3)  # clipped to the bound (the raw gradient is much larger)


def test_rate_schedule_changes_the_rate_without_recompiling(data):
    schedule = optax.linear_schedule(0.0, 0.5, transition_steps=12)
    t = make_trainer(rate_schedule=schedule)
    s, hist = t.fit(t.init(jax.random.key(0)), data, batch_size=BATCH, epochs=2, progress=False)
    assert [r["rate"] for r in hist] == pytest.approx([float(schedule(5)), float(schedule(11))])
    assert t.train_step._cache_size() == 1
    # at rate 0 (step 0 of the schedule) every site is off: the training loss is the eval loss
    s0 = t.init(jax.random.key(0))
    _, m_sched = t.train_step(s0, data.x[:BATCH], data.y[:BATCH])
    det_loss = t.evaluate(s0, (data.x[:BATCH], data.y[:BATCH]))["loss"]
    assert float(m_sched["loss"]) == pytest.approx(det_loss, rel=1e-6)
    _, m_later = t.train_step(s, data.x[:BATCH], data.y[:BATCH])
    assert float(m_later["loss"]) != pytest.approx(t.evaluate(s, (data.x[:BATCH], data.y[:BATCH]))["loss"], rel=1e-3)


def test_rate_schedule_needs_a_model_taking_rate():
    class Plain(nnx.Module):
        def __init__(self):
            self.lin = nnx.Linear(16, 4, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.lin(x)

    with pytest.raises(TypeError, match="`rate` keyword"):
        Trainer(Plain(), optax.sgd(0.1), rate_schedule=lambda s: 0.5)


# --------------------------------------------------------------------------- other models


def test_linen_model_trains_and_resumes(tmp_path, data):
    t = Trainer(models.LinenMLP(hidden=(16,)), optax.adam(1e-2))

    def run(steps, ckpt=None):
        s = t.init(jax.random.key(0), sample_input=data.x[:1])
        return t.fit(s, data, batch_size=BATCH, steps=steps, checkpoint_dir=ckpt, progress=False)

    full, hist = run(12)
    assert hist[-1]["loss"] < hist[0]["loss"]
    run(6, str(tmp_path / "ck"))
    resumed, _ = run(12, str(tmp_path / "ck"))
    assert_same(resumed, full)


def test_stock_nnx_model_with_stored_rng_stream_and_batchnorm(data):
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(16, 16, rngs=rngs)
            self.bn = nnx.BatchNorm(16, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)
            self.out = nnx.Linear(16, 4, rngs=rngs)

        def __call__(self, x):
            return self.out(self.drop(jax.nn.relu(self.bn(self.lin(x)))))

    def run(seed):
        t = Trainer(Net(nnx.Rngs(0, dropout=seed)), optax.adam(1e-2))
        return t, t.fit(t.init(jax.random.key(0)), data, batch_size=BATCH, steps=12, progress=False)[0]

    t, a = run(0)
    _, b = run(99)  # the layer's own stream is reseeded from the state's key every step
    assert_same(a, b)
    assert differs(a.model_state, t.init(jax.random.key(0)).model_state)  # batch statistics updated
    # evaluation uses the running averages and no dropout: repeatable
    assert trainer_eval_twice(t, a, data)


@pytest.mark.parametrize("dropout_cls", [nnx.Dropout, jdn.Dropout], ids=["flax", "jaxdrop"])
def test_nnx_model_built_with_a_default_stream_gets_fresh_keys_every_step(data, dropout_cls):
    # nnx.Rngs(seed) alone (the common pattern): the dropout layer forks the 'default' stream,
    # not a 'dropout' one. The trainer must reseed it from the step key too; otherwise every
    # step replays the stream state captured at construction (the same masks every step), and
    # models built with different stream seeds would train differently.
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(16, 16, rngs=rngs)
            self.drop = dropout_cls(0.5, rngs=rngs)
            self.out = nnx.Linear(16, 4, rngs=rngs)

        def __call__(self, x):
            return self.out(self.drop(jax.nn.relu(self.lin(x))))

    def run(stream_seed):
        t = Trainer(Net(nnx.Rngs(params=0, default=stream_seed)), optax.adam(1e-2))
        return t.fit(t.init(jax.random.key(0)), data, batch_size=BATCH, steps=6, progress=False)[0]

    assert Net(nnx.Rngs(0)).drop.rngs.tag == "default"
    assert_same(run(0), run(99))


def trainer_eval_twice(t, state, data) -> bool:
    return t.evaluate(state, data) == t.evaluate(state, data)


# --------------------------------------------------------------------------- history files, errors


@pytest.mark.parametrize("ext", ["json", "csv"])
def test_history_is_written(tmp_path, trainer, data, reference, ext):
    path = tmp_path / f"h.{ext}"
    _, hist = trainer.fit(reference[0], data, batch_size=BATCH, epochs=2, history_path=path, progress=False)
    text = path.read_text()
    if ext == "json":
        assert json.loads(text) == hist
    else:
        lines = text.strip().splitlines()
        assert lines[0].split(",") == list(hist[0]) and len(lines) == 3
        assert float(lines[2].split(",")[2]) == pytest.approx(hist[1]["loss"])
    with pytest.raises(ValueError, match=r"\.json or \.csv"):
        training.write_history(hist, tmp_path / "h.txt")


def test_progress_bar_shows_loss_and_accuracy(capsys, trainer, data, reference):
    trainer.fit(reference[0], data, batch_size=BATCH, steps=3, progress=True, desc="toy")
    err = capsys.readouterr().err
    assert "toy" in err and "loss=" in err and "acc=" in err
    trainer.fit(reference[0], data, batch_size=BATCH, steps=3, progress=False)
    assert capsys.readouterr().err == ""


def test_bad_arguments_raise_clear_errors(trainer, data, reference):
    with pytest.raises(ValueError, match="on_nonfinite"):
        Trainer(make_model(), optax.sgd(0.1), on_nonfinite="ignore")
    with pytest.raises(TypeError, match="GradientTransformation"):
        Trainer(make_model(), "adam")
    with pytest.raises(TypeError, match=r"nnx\.Module or flax\.linen\.Module"):
        Trainer(lambda x: x, optax.sgd(0.1))
    with pytest.raises(ValueError, match="max_norm"):
        Trainer(make_model(), optax.sgd(0.1), max_norm=-1.0)
    with pytest.raises(ValueError, match="larger than the training set"):
        trainer.fit(reference[0], data, batch_size=1000, progress=False)
    with pytest.raises(ValueError, match="save_every"):
        trainer.fit(reference[0], data, batch_size=BATCH, save_every=0, progress=False)
    with pytest.raises(TypeError, match="PRNG key"):
        trainer.init(0)
    with pytest.raises(ValueError, match="sample_input"):
        Trainer(models.LinenMLP(hidden=(4,)), optax.sgd(0.1)).init(jax.random.key(0))


def test_mesh_option_on_one_process(trainer, data, tmp_path):
    """Trainer(mesh=...) on this process's single device: the same run; a batch that does not
    split raises; a checkpoint from another layout resumes with a warning."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    on_mesh = make_trainer(mesh=mesh)
    state0 = trainer.init(jax.random.key(0))
    want, _ = trainer.fit(state0, data, batch_size=BATCH, steps=3, progress=False)
    got, _ = on_mesh.fit(on_mesh.init(jax.random.key(0)), data, batch_size=BATCH, steps=3, progress=False)
    assert_same(got, want)
    with pytest.raises(ValueError, match="not an axis of the mesh"):
        make_trainer(mesh=mesh, data_axis="batch")
    with pytest.raises(TypeError, match=r"jax\.sharding\.Mesh"):
        make_trainer(mesh="data")
    # A checkpoint recorded as written with the batch over 8 devices in 2 processes.
    directory = str(tmp_path / "ckpt")
    ckpt = Checkpointer(directory)
    layout = {"processes": 2, "data_devices": 8, "mesh": {"data": 8}}
    ckpt.save(want, {"history": [], "epoch_acc": {"loss": 0.0, "accuracy": 0.0, "n": 0, "skipped": 0}, "layout": layout})
    ckpt.close()
    with pytest.warns(RuntimeWarning, match=r"over 8 device\(s\) in 2 process\(es\).*not be bit-identical"):
        resumed, _ = trainer.fit(state0, data, batch_size=BATCH, steps=3, checkpoint_dir=directory, progress=False)
    assert_same(resumed, want)
