"""The demo: ``python -m jaxdrop`` end to end (one small subprocess), resuming, and argparse errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jaxdrop.__main__ import format_table, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--epochs", "2", "--train-size", "300", "--hidden", "32", "--batch-size", "50"]


def table_lines(text: str) -> list[str]:
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if "train error" in line and "test error" in line)
    return lines[i : i + 3]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One real `python -m jaxdrop` process in a small configuration."""
    out = tmp_path_factory.mktemp("demo")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, "-m", "jaxdrop", *SMALL, "--quiet", "--output", str(out / "curves.png"),
         "--history", str(out / "history.json"), "--checkpoint-dir", str(out / "ckpt")],
        cwd=out, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return out, proc


def test_demo_prints_the_table_and_writes_the_plot(demo_run):
    out, proc = demo_run
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --quiet: no progress bars
    header, no_drop, drop = table_lines(proc.stdout)
    assert "gap (test - train)" in header
    assert no_drop.startswith("no dropout") and drop.startswith("dropout (input 0.2, hidden 0.5)")
    for row in (no_drop, drop):
        train_err, test_err, gap = (float(v) for v in row.split()[-6::2])
        assert 0 <= train_err <= 100 and 0 <= test_err <= 100 and gap == pytest.approx(test_err - train_err, abs=0.011)
    assert "MLP 784-32-32-10 on mnist5k: 300 train / 3000 test examples" in proc.stdout
    png = out / "curves.png"
    assert f"learning curves written to {png}" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    hist = json.loads((out / "history.json").read_text())
    assert set(hist) == {"no_dropout", "dropout"}
    for run in hist.values():
        assert [r["epoch"] for r in run] == [1, 2]
        assert {"train_error", "test_error", "train_loss", "test_loss", "loss"} <= set(run[0])
    final = hist["no_dropout"][-1]
    assert f"{100 * final['test_error']:.2f} %" in no_drop
    assert sorted(os.listdir(out / "ckpt")) == ["dropout", "no_dropout"]


def test_resume_continues_from_the_demo_checkpoints(demo_run, tmp_path, capsys, monkeypatch):
    out, proc = demo_run
    assert proc.returncode == 0, proc.stderr
    monkeypatch.chdir(tmp_path)
    # Both runs are complete at epoch 2: resuming trains nothing and reproduces the same table.
    code = main([*SMALL, "--quiet", "--checkpoint-dir", str(out / "ckpt"), "--resume", "--output", "again.png"])
    assert code == 0
    assert table_lines(capsys.readouterr().out) == table_lines(proc.stdout)
    assert (tmp_path / "again.png").exists()
    # Without --resume the demo refuses to overwrite the checkpoints.
    assert main([*SMALL, "--quiet", "--checkpoint-dir", str(out / "ckpt"), "--output", "x.png"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_two_processes_reach_the_errors_of_one(demo_run, tmp_path):
    """``--processes 2``: two local workers (jax.distributed, gloo), the batch split between them."""
    _, proc = demo_run
    assert proc.returncode == 0, proc.stderr
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg")
    two = subprocess.run(
        [sys.executable, "-m", "jaxdrop", *SMALL, "--quiet", "--processes", "2", "--output", str(tmp_path / "c.png")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert "data-parallel over 2 processes x 1 devices" in two.stdout
    assert two.stdout.count("train error") == 1, "only process 0 prints the table"
    for a, b in zip(table_lines(two.stdout)[1:], table_lines(proc.stdout)[1:], strict=True):
        # The same batches and masks; only the gradient's rounding differs: at most 0.1 point (3 test digits).
        errors_2 = [float(v) for v in a.split()[-6::2]]
        errors_1 = [float(v) for v in b.split()[-6::2]]
        assert errors_2 == pytest.approx(errors_1, abs=0.11), (a, b)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate", "1.5"], "drop probability must be in [0, 1)"),
        (["--rate", "half"], "expected a drop probability"),
        (["--epochs", "0"], "expected a positive integer"),
        (["--lr", "-1"], "positive finite number"),
        (["--model", "rnn"], "invalid choice: 'rnn'"),
        (["--model", "cnn", "--variant", "alpha"], "does not apply to --model cnn"),
        (["--variant", "dropblock"], "does not apply to --model mlp"),
        (["--dataset", "idx"], "needs --idx-images"),
        (["--dataset", "idx", "--idx-images", "nope", "--idx-labels", "nope"], "no such file"),
        (["--idx-images", "a"], "only apply with --dataset idx"),
        (["--resume"], "--resume needs --checkpoint-dir"),
        (["--output", "curves.jpg"], "must end in .png"),
        (["--history", "h.txt"], ".json or .csv"),
        (["--test-fraction", "1"], "fraction in (0, 1)"),
        (["--no-such-option"], "unrecognized arguments"),
        (["--processes", "3"], "--batch-size 100 does not split over 3 process(es) x 1 device(s): use a multiple of 3"),
        (["--processes", "0"], "expected a positive integer"),
    ],
)
def test_bad_options_are_argparse_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: jaxdrop" in err and message in err


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--dataset", "--model", "--variant", "--rate", "--epochs", "--seed", "--checkpoint-dir", "--resume", "--output", "--quiet", "--processes"):
        assert option in text


def test_format_table():
    text = format_table([("a", 0.0, 0.05), ("longer name", 0.01, 0.04)])
    lines = text.splitlines()
    assert lines[1].split()[-6:] == ["0.00", "%", "5.00", "%", "5.00", "%"]
    assert lines[2].split()[-6:] == ["1.00", "%", "4.00", "%", "3.00", "%"]
    percent_columns = [[i for i, c in enumerate(line) if c == "%"] for line in lines[1:]]
    assert percent_columns[0] == percent_columns[1]  # aligned
