"""jaxdrop across processes: JAX's distributed runtime on one machine (CPU devices, gloo).

Four launches of ``tests/_multiprocess_child.py`` (one per role; every process has
the environment of ``jaxdrop.distributed.worker_env``: its id, the process count,
a coordinator on a free port, simulated devices), run once per test session:

* ``fault``: 2 processes x 4 devices: masks, MC dropout and bad input, then
  ``Trainer.fit`` data-parallel with a checkpoint every step; process 1 is
  SIGKILLed after its 7th save, and process 0 must stop with JAX's error within
  a bounded time.
* ``four``: 4 processes x 2 devices: masks, MC dropout and bad input, and the same
  fit uninterrupted.
* ``resume`` (after ``fault``): 2 x 4 again on the killed run's checkpoints: it must
  resume from the newest complete one and end bit for bit like ``four``.
* ``ref`` (after ``fault``): 1 process x 8 devices (also under the distributed
  runtime, so its all-reduce is the same gloo one): the fit on 8 devices (bit
  for bit the multi-process result), on 1 device (float tolerance), a copy of
  the killed run's checkpoints restored in 1 process.

The tests below read the launches' results; the one-device references of the
masks and of MC dropout are computed here, in this (one-device) process.

By hand: ``python tests/test_multiprocess.py OUT_DIR`` runs the four launches
and prints where their outputs are.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import jax
import numpy as np
import pytest
from _multiprocess_child import FEATURE_CASES, TOTAL_STEPS, mc_input, mc_summary
from _sharding_child import CASES, _forward, _inputs

from jaxdrop import distributed

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CHILD = os.path.join(HERE, "_multiprocess_child.py")
HEARTBEAT = 5  # seconds before the runtime declares a silent process dead
KILL_AFTER_SAVE = 7  # process 1 of the 2-process run is SIGKILLed once it reports this save
STOP_BOUND = HEARTBEAT + 40  # the survivors must have stopped this long after the kill
LAUNCH_TIMEOUT = 300  # any launch still running after this is killed (nothing hangs)
RUNS = {"fault": (2, 4), "four": (4, 2)}  # multi-process runs with the mask and MC checks


class Launch:
    """``n`` processes of the child with one role; their stdout lines are read by threads."""

    def __init__(self, role: str, n: int, devices: int, out: str, *args: str):
        os.makedirs(out, exist_ok=True)
        self.role, self.out, self.start = role, out, time.monotonic()
        port = distributed.free_port()
        base = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        # The relaunch reuses the killed run's compiled programs (JAX's persistent cache).
        base["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.path.dirname(out), "jax-cache")
        base["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        base["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
        self.procs: list[subprocess.Popen[str]] = []
        self.lines: list[list[str]] = [[] for _ in range(n)]
        self.ended_at: list[float | None] = [None] * n
        self.cond = threading.Condition()
        for i in range(n):
            env = distributed.worker_env(i, n, port, devices_per_process=devices, heartbeat_timeout_seconds=HEARTBEAT, env=base)
            with open(os.path.join(out, f"stderr-{i}.txt"), "w") as err:
                proc = subprocess.Popen(
                    [sys.executable, CHILD, role, out, *args], env=env, stdout=subprocess.PIPE, stderr=err, text=True
                )
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(i,), daemon=True).start()

    def _read(self, i: int) -> None:
        stdout = self.procs[i].stdout
        assert stdout is not None
        for line in stdout:
            with self.cond:
                self.lines[i].append(line.strip())
                self.cond.notify_all()

    def wait_for_line(self, i: int, line: str, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: line in self.lines[i] or self.procs[i].poll() is not None, timeout)

    def wait(self, timeout: float) -> list[int | None]:
        """Exit codes (None: still running after ``timeout``, then killed); records when each ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
            for i, p in enumerate(self.procs):
                if p.poll() is not None and self.ended_at[i] is None:
                    self.ended_at[i] = time.monotonic()
            time.sleep(0.05)
        codes: list[int | None] = []
        for i, p in enumerate(self.procs):
            if p.poll() is None:
                p.kill()
                p.wait()
                codes.append(None)
            else:
                codes.append(p.returncode)
                if self.ended_at[i] is None:
                    self.ended_at[i] = time.monotonic()
        return codes

    def stderr(self, i: int) -> str:
        with open(os.path.join(self.out, f"stderr-{i}.txt")) as f:
            return f.read()


def run_all(base: str) -> dict[str, Any]:
    """The four launches; a JSON-able summary (the children's own results are files under ``base``)."""
    t0 = time.monotonic()
    summary: dict[str, Any] = {"base": base}
    ckpt = os.path.join(base, "ckpt")
    fault = Launch("main", 2, 4, os.path.join(base, "fault"), ckpt)
    four = Launch("main", 4, 2, os.path.join(base, "four"))
    # Kill process 1 of the 2-process run right after its 7th save (mid-way into step 8).
    seen = fault.wait_for_line(1, f"saved {KILL_AFTER_SAVE}", LAUNCH_TIMEOUT)
    killed_at = time.monotonic()
    finished_first = fault.procs[1].poll() is not None
    fault.procs[1].send_signal(signal.SIGKILL)
    codes = fault.wait(STOP_BOUND)
    summary["fault"] = {
        "saw_save": seen and not finished_first,
        "codes": codes,
        "stopped_after_s": [None if t is None else round(t - killed_at, 2) for t in fault.ended_at],
        "saves_seen": [[int(x.split()[1]) for x in lines if x.startswith("saved")] for lines in fault.lines],
        "stderr0": fault.stderr(0)[-3000:],
    }
    # The killed run's checkpoints as they are now: for the 1-process restore (the relaunch changes them).
    copy = os.path.join(base, "ckpt-copy")
    shutil.copytree(ckpt, copy)
    resume = Launch("resume", 2, 4, os.path.join(base, "resume"), ckpt)
    ref = Launch("ref", 1, 8, os.path.join(base, "ref"), copy)
    for name, launch in (("four", four), ("resume", resume), ("ref", ref)):
        codes = launch.wait(max(1.0, LAUNCH_TIMEOUT - (time.monotonic() - launch.start)))
        summary[name] = {"codes": codes, "stderr": [launch.stderr(i)[-3000:] for i in range(len(codes))]}
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    return summary


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Any]:
    """The launches, once per session even under xdist (workers share the first one's results)."""
    shared = tmp_path_factory.getbasetemp().parent  # the same for every xdist worker of a session
    result = shared / "multiprocess-summary.json"
    with open(shared / "multiprocess.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            base = str(shared / "multiprocess")
            shutil.rmtree(base, ignore_errors=True)
            result.write_text(json.dumps(run_all(base)))
        return json.loads(result.read_text())


def _load(runs: dict[str, Any], role: str, name: str) -> dict[str, Any]:
    path = os.path.join(runs["base"], role, name)
    if not os.path.exists(path):
        info = runs.get(role, {})
        pytest.fail(f"{role} wrote no {name}: exit codes {info.get('codes')}\n{info.get('stderr') or info.get('stderr0')}")
    with open(path) as f:
        return json.load(f)


def _arrays(runs: dict[str, Any], role: str, name: str) -> dict[str, np.ndarray]:
    path = os.path.join(runs["base"], role, name)
    if not os.path.exists(path):
        pytest.fail(f"{role} wrote no {name}: {runs.get(role, {}).get('codes')}\n{runs.get(role, {}).get('stderr')}")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _errors(runs: dict[str, Any], role: str, checks_only: bool = False) -> dict[str, Any]:
    return _load(runs, role, "main-checks.json" if checks_only or role == "fault" else f"{_ROLE[role]}.json")["errors"]


_ROLE = {"fault": "main", "four": "main", "resume": "resume", "ref": "ref"}
LAYOUTS = {"fault": "2 processes x 4 devices", "four": "4 processes x 2 devices", "ref": "1 process x 8 devices"}

# ------------------------------------------------------------------ masks


@pytest.fixture(scope="module")
def one_device_masks() -> dict[str, np.ndarray]:
    cases = list(CASES)
    xs, _ = _inputs(cases)
    return jax.device_get(jax.jit(_forward(cases))(jax.random.key(42), xs))


@pytest.mark.parametrize("case", [c.id for c in CASES])
def test_masks_across_processes_equal_one_device(runs, one_device_masks, case):
    c = next(c for c in CASES if c.id == case)
    want = np.asarray(one_device_masks[case])
    layouts = ["batch", *(["process+feature"] if case in FEATURE_CASES else [])]
    outputs = {}
    for role in ("fault", "four", "ref"):
        errors = _load(runs, role, f"{_ROLE[role]}-checks.json")["errors"]
        assert errors.get(f"mask[{case}]", "missing") is None, f"{LAYOUTS[role]}: {errors.get(f'mask[{case}]')}"
        for layout in layouts:
            got = _arrays(runs, role, f"masks-{layout}.npz")[case]
            outputs[role, layout] = got
            where = f"{case} sharded ({layout}) on {LAYOUTS[role]}"
            if c.atol:  # a matmul: its rounding may depend on the shard's shape; a changed mask moves it by O(1)
                np.testing.assert_allclose(got, want, rtol=0, atol=c.atol, err_msg=where)
            else:
                np.testing.assert_array_equal(got, want, err_msg=where)
    # Every layout with the same per-device shapes gives the same bits, matmuls included.
    batch = [outputs[r, "batch"] for r in ("fault", "four", "ref")]
    assert all(np.array_equal(b, batch[0]) for b in batch), f"{case}: the batch-sharded outputs differ between layouts"


def test_another_key_changes_the_masks(one_device_masks):
    # The comparisons above can fail: a different key changes every function's output.
    cases = list(CASES)
    xs, _ = _inputs(cases)
    fn = jax.jit(_forward(cases))
    others = [jax.device_get(fn(jax.random.key(k), xs)) for k in (43, 44)]
    # (Batch-wise drop_path keeps or drops the whole batch: one draw, which two keys can share.)
    same = [c.id for c in cases if all(np.allclose(o[c.id], one_device_masks[c.id], atol=1e-3) for o in others)]
    assert not same, f"keys 43 and 44 give key 42's output for {same}"


# ------------------------------------------------------------------ MC dropout


def test_mc_dropout_with_the_batch_sharded_across_processes(runs):
    x = mc_input()
    probs, samples = jax.device_get(jax.jit(mc_summary)(jax.random.key(5), x))
    other, _ = jax.device_get(jax.jit(mc_summary)(jax.random.key(6), x))
    assert not np.allclose(other, probs, rtol=1e-5, atol=1e-6), "another key gives the same MC probabilities"
    got = {role: _arrays(runs, role, "mc.npz") for role in ("fault", "four", "ref")}
    for role, g in got.items():
        # The same masks; the model's matmuls may round differently on 2 rows than on 16.
        np.testing.assert_allclose(g["samples"], samples, rtol=1e-5, atol=1e-5, err_msg=LAYOUTS[role])
        np.testing.assert_allclose(g["probs"], probs, rtol=1e-5, atol=1e-6, err_msg=LAYOUTS[role])
        # And across layouts with 2 rows per device: the same bits.
        np.testing.assert_array_equal(g["probs"], got["ref"]["probs"], err_msg=LAYOUTS[role])


# ------------------------------------------------------------------ bad input


def test_bad_input_gives_clear_errors_across_processes(runs):
    errors = _load(runs, "fault", "main-checks.json")["errors"]
    assert errors.get("bad_input", "missing") is None, errors.get("bad_input")


# ------------------------------------------------------------------ training


def _params(runs: dict[str, Any], role: str, name: str) -> np.ndarray:
    arrays = _arrays(runs, role, f"{name}-params.npz")
    return np.concatenate([np.ravel(arrays[k]) for k in sorted(arrays)])


def test_data_parallel_training_across_processes_equals_one_process(runs):
    four = _load(runs, "four", "main.json")
    ref = _load(runs, "ref", "ref.json")
    assert runs["four"]["codes"] == [0, 0, 0, 0], runs["four"]["stderr"]
    assert ref["errors"].get("reference", "missing") is None, ref["errors"]
    p4 = _params(runs, "four", "main")
    p8 = _params(runs, "ref", "ref8")
    p1 = _params(runs, "ref", "ref1")
    p_other = _params(runs, "ref", "ref1_other_key")
    # 4 processes x 2 devices == 1 process x 8 devices, bit for bit (same batches, masks, all-reduce).
    np.testing.assert_array_equal(p4, p8)
    # One device, no mesh: the gradient's batch sum in another order.
    np.testing.assert_allclose(p4, p1, rtol=1e-5, atol=1e-6)
    assert not np.allclose(p_other, p1, rtol=1e-5, atol=1e-6), "another dropout key gave the same parameters"
    # The histories (training loss and the sharded evaluation, padded batch included) agree too.
    h4, h1 = four["info"]["main_history"], ref["info"]["ref1_history"]
    assert [r["step"] for r in h4] == [6, 12]
    for a, b in zip(h4, h1, strict=True):
        for k in ("loss", "accuracy", "test_loss", "test_accuracy"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k


def test_sigkill_stops_the_other_process_with_a_clear_error(runs):
    f = runs["fault"]
    assert f["saw_save"], f"process 1 never reported save {KILL_AFTER_SAVE} before ending: {f}"
    assert f["codes"][1] == -signal.SIGKILL
    code0, after = f["codes"][0], f["stopped_after_s"][0]
    assert code0 is not None, f"process 0 was still running {STOP_BOUND} s after the kill:\n{f['stderr0']}"
    assert code0 != 0, "process 0 finished as if nothing had happened"
    assert after is not None and after < STOP_BOUND
    assert "another task died" in f["stderr0"] or "unhealthy" in f["stderr0"], f["stderr0"]


def test_relaunch_resumes_from_the_last_complete_checkpoint_bit_for_bit(runs):
    assert runs["resume"]["codes"] == [0, 0], runs["resume"]["stderr"]
    resume = _load(runs, "resume", "resume.json")
    saves = runs["fault"]["saves_seen"]
    step = resume["info"]["resumed_from"]
    # Nothing lost: at least the last save both processes reported; nothing past the kill.
    assert min(max(s) for s in saves) <= step <= TOTAL_STEPS - 1, (step, saves)
    # The resumed run ends exactly like the uninterrupted 4-process run, history included.
    np.testing.assert_array_equal(_params(runs, "resume", "resume"), _params(runs, "four", "main"))
    assert resume["info"]["resume_history"] == _load(runs, "four", "main.json")["info"]["main_history"]


def test_checkpoint_written_by_2_processes_restores_in_1(runs):
    ref = _load(runs, "ref", "ref.json")
    assert runs["ref"]["codes"] == [0], runs["ref"]["stderr"]
    assert ref["errors"].get("reference", "missing") is None, ref["errors"]["reference"]
    assert ref["info"]["restored_layout"]["processes"] == 2
    assert ref["info"]["restored_step"] >= KILL_AFTER_SAVE


# ------------------------------------------------------------------ the launcher (no JAX in the workers)


def _script(code: str) -> list[str]:
    return [sys.executable, "-c", f"import os, sys, time\npid = int(os.environ['{distributed.ENV_PROCESS_ID}'])\n{code}"]


def test_launch_local_runs_every_worker_with_its_environment(tmp_path):
    code = f"open(os.path.join({str(tmp_path)!r}, str(pid)), 'w').write(os.environ['XLA_FLAGS'] + ' ' + os.environ['{distributed.ENV_NUM_PROCESSES}'])"
    assert distributed.launch_local(_script(code), 3, devices_per_process=2, timeout=60) == [0, 0, 0]
    for i in range(3):
        assert (tmp_path / str(i)).read_text().endswith("--xla_force_host_platform_device_count=2 3")


def test_launch_local_stops_the_others_when_one_fails():
    start = time.monotonic()
    with pytest.raises(distributed.WorkerError, match=r"process 1 failed first \(exit status 3\).*process 0: still running, killed") as e:
        distributed.launch_local(_script("sys.exit(3) if pid == 1 else time.sleep(60)"), 2, grace_seconds=0.5, timeout=60)
    assert e.value.first == 1 and e.value.returncodes[1] == 3
    assert time.monotonic() - start < 30


def test_launch_local_timeout():
    with pytest.raises(distributed.WorkerError, match=r"did not finish within 0.5 s"):
        distributed.launch_local(_script("time.sleep(60)"), 2, timeout=0.5)


def test_processes_launched_with_different_counts_get_a_clear_error(tmp_path):
    port = distributed.free_port()
    code = "from jaxdrop import distributed; distributed.initialize(initialization_timeout=60); print('joined')"
    base = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = []
    for i, n in ((0, 2), (1, 3)):  # process 1 was told there are 3 processes
        env = distributed.worker_env(i, n, port, heartbeat_timeout_seconds=HEARTBEAT, env=base)
        with open(tmp_path / f"err{i}", "w") as err:
            procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=err))
    try:
        procs[1].wait(timeout=120)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    err = (tmp_path / "err1").read_text()
    assert procs[1].returncode not in (0, None)
    assert "was told num_processes=3, but the runtime it joined has 2 processes" in err, err[-2000:]


def test_initialize_rejects_a_process_id_outside_the_count():
    with pytest.raises(ValueError, match=r"process_id=2 is outside \[0, 2\)"):
        distributed.initialize("127.0.0.1:1", num_processes=2, process_id=2)


if __name__ == "__main__":
    summary = run_all(os.path.abspath(sys.argv[1]))
    print(json.dumps({k: v for k, v in summary.items() if k != "fault"}, indent=1)[:3000])
    print(json.dumps(summary["fault"], indent=1)[:3000])
