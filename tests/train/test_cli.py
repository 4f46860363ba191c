"""``stnkit train`` / ``eval`` from the command line: flags, errors, kill -9, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from stnkit.train import train

from ._helpers import (REPO, assert_same_weights, metrics, record, stnkit_cmd, stnkit_env,
                       tiny_config)

TINY = ["--data", "mnist", "--data-dir", "embedded", "--schedule", "cpu", "--batch-size", "16",
        "--train-size", "256", "--test-size", "64", "--device", "cpu", "--num-threads", "1",
        "--quiet"]


# ------------------------------------------------------------------ flags and usage errors

@pytest.mark.parametrize("args, match", [
    (["--iterations", "abc"], "argument --iterations: expected a positive integer, got 'abc'"),
    (["--iterations", "0"], "argument --iterations: expected a positive integer"),
    (["--lr", "fast"], "argument --lr: expected a number"),
    (["--schedule", "gpu"], "argument --schedule: invalid choice: 'gpu'"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ([], "required .*: --model, --data, --out"),
    (["--resume", "x", "--model", "cnn"], "--resume takes only --iterations.*got --model"),
])
def test_bad_flags_exit_2_with_usage(cli, args, match):
    code, out, err = cli("train", *args)
    assert code == 2, (code, err)
    assert err.startswith("usage: stnkit"), err
    import re

    assert re.search(match, err), err


def test_train_then_eval(cli, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", "--model", "fcn", "--out", run, "--iterations", "4", *TINY)
    assert code == 0, err
    assert "fcn on mnist: step 4" in out and str(run) in out
    code, out, err = cli("eval", run, "--test-size", "100")
    assert code == 0, err
    ev = json.loads((run / "eval.json").read_text())
    assert ev["num_samples"] == 100 and f"test error {ev['test_error']:.2f}%" in out
    assert "confusion matrix" in out and len(ev["confusion_matrix"]) == 10
    code, out, err = cli("eval", run, "--test-size", "100", "--json")
    assert code == 0 and json.loads(out)["test_error"] == ev["test_error"]


def test_config_file_and_flags(cli, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('model = "fcn"\niterations = 3\nlr = 0.05\nbatch_size = 8\n')
    run = tmp_path / "run"
    code, out, err = cli("train", "--config", conf, "--out", run, "--batch-size", "4",
                         *[a for a in TINY if a not in ("--batch-size", "16")])
    assert code == 0, err
    saved = json.loads((run / "config.json").read_text())
    assert (saved["model"], saved["iterations"], saved["lr"], saved["batch_size"]) == ("fcn", 3, 0.05, 4)
    assert (saved["optimizer"], saved["lr_step"]) == ("adam", 800)  # from the cpu preset


@pytest.mark.parametrize("body, match", [
    ("model = 'fcn'\nlearning_rate = 1\n", "unknown key 'learning_rate'"),
    ("model = 'fcn'\niterations = 'many'\n", "expected iterations an integer"),
])
def test_bad_config_file(cli, tmp_path, body, match):
    conf = tmp_path / "c.toml"
    conf.write_text(body)
    code, out, err = cli("train", "--config", conf, "--out", tmp_path / "run", *TINY)
    assert code == 1 and err.startswith("stnkit train: error: ") and match in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_missing_run_directory(cli, tmp_path):
    for cmd in (["train", "--resume"], ["eval"]):
        code, out, err = cli(*cmd, tmp_path / "nope")
        assert code == 1 and "does not exist" in err and len(err.strip().splitlines()) == 1, err


def test_corrupt_checkpoint(cli, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, iterations=2), progress=False)
    blob = (run / "checkpoint.safetensors").read_bytes()
    (run / "checkpoint.safetensors").write_bytes(blob[:100])
    for cmd in (["train", "--resume", run], ["eval", run]):
        code, out, err = cli(*cmd)
        assert code == 1 and "corrupt checkpoint file" in err, err
        assert len(err.strip().splitlines()) == 1
    assert not (run / "eval.json").exists() and not list(run.glob("*.tmp"))


def test_checkpoint_of_a_different_model(cli, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(tiny_config(a, iterations=2, model="fcn"), progress=False)
    train(tiny_config(b, iterations=2, model="st-fcn-aff"), progress=False)
    (a / "checkpoint.safetensors").replace(b / "checkpoint.safetensors")
    before = (b / "checkpoint.json").read_bytes()
    for cmd in (["train", "--resume", b, "--iterations", "4"], ["eval", b]):
        code, out, err = cli(*cmd)
        assert code == 1, err
        assert "holds weights of model 'fcn', but the run is of model 'st-fcn-aff'" in err
    assert (b / "checkpoint.json").read_bytes() == before and not (b / "eval.json").exists()


def test_unwritable_output_directory(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, out, err = cli("train", "--model", "fcn", "--out", blocker / "run", *TINY)
    assert code == 1 and "cannot create run directory" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root writes through permissions")
def test_read_only_output_directory(cli, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    code, out, err = cli("train", "--model", "fcn", "--out", ro / "run", *TINY)
    assert code == 1 and "run directory" in err
    assert list(ro.iterdir()) == []


def test_divergence_from_the_command_line(cli, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", "--model", "fcn", "--out", run, "--lr", "1e12",
                         "--optimizer", "sgd", "--momentum", "0.9",
                         "--iterations", "40", "--checkpoint-every", "1", *TINY)
    assert code == 1 and "training diverged at step" in err and "is kept in" in err, err
    rec = record(run)
    assert rec["finished"] is False and rec["step"] < 40


# ------------------------------------------------------------------ kill -9 and Ctrl-C

KILL_ARGS = ["--model", "st-cnn-aff", "--iterations", "40", "--checkpoint-every", "5",
             "--eval-every", "10", "--log-every", "1", *TINY]


def _start(out):
    return subprocess.Popen(stnkit_cmd("train", "--out", out, *KILL_ARGS), env=stnkit_env(),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(proc, run, min_step, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before step {min_step}: {proc.communicate()}"
        try:
            step = json.loads((run / "checkpoint.json").read_text())["step"]
        except (OSError, ValueError, KeyError):
            step = -1
        if step >= min_step:
            return step
        time.sleep(0.005)
    raise AssertionError("no checkpoint in time")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted run the interrupted ones must match bit for bit."""
    from stnkit.cli import main

    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", "--out", str(out), *KILL_ARGS]) == 0  # in process: same code path
    return out


@pytest.mark.slow  # ~50-70 s on 2 cores (pytest --durations)
def test_sigkill_then_resume_is_bitwise_identical(tmp_path, reference_run):
    run = tmp_path / "run"
    proc = _start(run)
    _wait_for_checkpoint(proc, run, 5)
    proc.kill()
    proc.communicate(timeout=30)
    killed_at = record(run)["step"]
    assert not record(run)["finished"] and killed_at < 40, "the run finished before the kill"
    res = subprocess.run(stnkit_cmd("train", "--resume", run, "--quiet"), env=stnkit_env(),
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert record(run)["step"] == 40 and record(run)["finished"]
    assert_same_weights(reference_run, run)
    assert metrics(run) == metrics(reference_run)
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == \
        sorted(p.name for p in (reference_run / "snapshots").iterdir())


@pytest.mark.slow  # ~50-70 s on 2 cores (pytest --durations)
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, reference_run):
    run = tmp_path / "run"
    proc = _start(run)
    _wait_for_checkpoint(proc, run, 5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    rec = record(run)
    assert f"interrupted at step {rec['step']} of 40; checkpoint saved" in err
    assert f"stnkit train --resume {run}" in err
    assert not rec["finished"] and not list(run.glob("*.tmp"))
    res = subprocess.run(stnkit_cmd("train", "--resume", run, "--quiet"), env=stnkit_env(),
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert_same_weights(reference_run, run)
    assert metrics(run) == metrics(reference_run)
