"""Kill -9 and corruption of run directories (issue 12): every damaged file is refused with
one line naming it, a run cut before its first checkpoint resumes from step 0, nothing that
is not JSON reaches a JSON file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import stnkit.train.loop as loop
from stnkit._checks import StnkitFileError
from stnkit.train import checkpoint as ckpt
from stnkit.train import evaluate, resume, train

from ._helpers import REPO, assert_same_weights, metrics, record, stnkit_env, tiny_config


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A finished tiny run (6 iterations, checkpoints at 0, 2, 4, 6): never modified."""
    run = tmp_path_factory.mktemp("ref") / "run"
    train(tiny_config(run), progress=False)
    return run


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------------------- 1: digests

@pytest.mark.parametrize("name", [ckpt.WEIGHTS, ckpt.STATE, ckpt.RECORD])
def test_one_flipped_byte_is_refused_by_resume_and_eval(cli, tmp_path, reference, name):
    run = _copy(reference, tmp_path / "run")
    path = run / name
    blob = bytearray(path.read_bytes())
    # the middle of the file: tensor data for the safetensors files, a value in the record
    # (a digit, so that the JSON stays valid and only the digest can tell)
    at = len(blob) // 2
    if name == ckpt.RECORD:
        at = next(i for i in range(at, len(blob)) if chr(blob[i]).isdigit() and blob[i] != 0x39)
        blob[at] += 1
    else:
        blob[at] ^= 0x01
    path.write_bytes(bytes(blob))
    # eval reads (and so verifies) the weights and the record, not the optimizer state
    commands = [["train", "--resume", run, "--iterations", "8"]]
    if name != ckpt.STATE:
        commands.append(["eval", run])
    for cmd in commands:
        code, out, err = cli(*cmd)
        line = _one_line(err)
        assert code == 1 and str(path) in line and "corrupt checkpoint" in line, err
    assert record(reference)["step"] == 6 and not (run / "eval.json").exists()
    assert not (run / "checkpoint.json.tmp").exists()


# ---------------------------------------------------------------------------- 2: config.json

@pytest.mark.parametrize("body, match", [
    (b"{garbage", r"config.json: not valid JSON"),
    (b"[1, 2]", r"config.json: expected a JSON object of settings, got list"),
    (None, r"config.json: unknown key 'learning_rate' \(known keys: "),
    ("model", r"config.json: model is 'st-fcn-aff', but checkpoint.json says the run was trained "
              r"with 'fcn'"),
    ("lr", r"config.json: lr is 0.5, but checkpoint.json says the run was trained with 0.001"),
    ("iterations", r"config.json: iterations is 99, .*--iterations N"),
])
def test_a_damaged_or_edited_config_json_is_refused(tmp_path, reference, body, match):
    run = _copy(reference, tmp_path / "run")
    path = run / "config.json"
    cfg = json.loads(path.read_text())
    if body is None:
        cfg["learning_rate"] = 0.1
        body = json.dumps(cfg).encode()
    elif isinstance(body, str):
        cfg[body] = {"model": "st-fcn-aff", "lr": 0.5, "iterations": 99}[body]
        body = json.dumps(cfg).encode()
    path.write_bytes(body)
    before = (run / ckpt.RECORD).read_bytes()
    with pytest.raises(StnkitFileError, match="resume: .*" + match):
        resume(run, progress=False)
    with pytest.raises(StnkitFileError, match="eval: .*" + match):
        evaluate(run, write=False)
    assert (run / ckpt.RECORD).read_bytes() == before


def test_config_json_may_differ_in_iterations_when_resume_sets_them(tmp_path, reference):
    """A kill between resume --iterations rewriting config.json and its first checkpoint."""
    run = _copy(reference, tmp_path / "run")
    cfg = json.loads((run / "config.json").read_text())
    cfg["iterations"], cfg["out"] = 8, "/moved/elsewhere"
    (run / "config.json").write_text(json.dumps(cfg))
    assert resume(run, iterations=8, progress=False)["step"] == 8


def test_a_missing_config_json_is_rewritten(tmp_path, reference):
    run = _copy(reference, tmp_path / "run")
    (run / "config.json").unlink()
    assert resume(run, iterations=7, progress=False)["step"] == 7
    assert json.loads((run / "config.json").read_text())["iterations"] == 7


# ---------------------------------------------------------------------------- 3: kill -9

_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import stnkit._io as io
    import stnkit.train.checkpoint as ckpt
    from stnkit.train import TrainConfig, train

    victim = sys.argv[2]

    def write_fsynced(path, data):  # the checkpoint's *.tmp files
        if Path(path).name == victim:
            Path(path).write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        real_fsynced(path, data)

    real_fsynced = ckpt.write_fsynced
    ckpt.write_fsynced = write_fsynced
    real_replace = io.os.replace

    def replace(src, dst):  # the atomic writes of config.json, metrics.jsonl, ...
        if Path(dst).name == victim:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    io.os.replace = replace
    cfg = TrainConfig(model="fcn", data="mnist", out=sys.argv[1], schedule="cpu",
                      data_dir="embedded", iterations=6, batch_size=16, train_size=256,
                      test_size=64, checkpoint_every=2, eval_every=3, log_every=1,
                      device="cpu", num_threads=1)
    train(cfg, progress=False)
""")


def _killed_run(run, victim):
    """A real process, SIGKILLed while it writes ``victim`` during its first checkpoint."""
    res = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(run), victim], env=stnkit_env(),
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert res.returncode == -9, (res.returncode, res.stderr)


@pytest.mark.parametrize("victim", ["checkpoint.state.safetensors.tmp",
                                    "checkpoint.safetensors.tmp", "checkpoint.json.tmp"])
def test_kill_during_the_first_checkpoint_resumes_from_step_0(tmp_path, reference, victim):
    run = tmp_path / "run"
    _killed_run(run, victim)
    assert not (run / ckpt.RECORD).exists() and (run / victim).exists()
    # leftovers of other killed writes, and files that are not ours to delete
    (run / ".metrics.jsonl.0123abcd.tmp").write_bytes(b"half")
    (run / "snapshots" / ".step_00000002.safetensors.89abcdef.tmp").write_bytes(b"half")
    keep = [run / "notes.tmp", run / ".config.json.tmp", run / ".mine.0123abcd.tmp"]
    for p in keep:
        p.write_text("user data")
    result = resume(run, progress=False)
    assert result["step"] == 6
    assert_same_weights(reference, run)
    assert metrics(run) == metrics(reference)
    left = sorted(p.name for p in run.rglob("*tmp"))
    assert left == sorted(p.name for p in keep), left


def test_kill_before_config_json_says_what_to_do(cli, tmp_path):
    run = tmp_path / "run"
    _killed_run(run, "config.json")
    assert not (run / "config.json").exists() and list(run.glob(".config.json.*.tmp"))
    code, out, err = cli("train", "--resume", run)
    line = _one_line(err)
    assert code == 1 and "not a run directory (no checkpoint.json and no config.json)" in line
    assert f"start it again with `stnkit train ... --out {run}`" in line, line
    # ... and that works, leaving no temporary behind
    train(tiny_config(run, iterations=2), progress=False)
    assert record(run)["step"] == 2 and not list(run.rglob("*.tmp"))


def test_eval_of_a_run_without_checkpoint_says_resume(cli, tmp_path):
    run = tmp_path / "run"
    _killed_run(run, "checkpoint.json.tmp")
    code, out, err = cli("eval", run)
    assert code == 1 and "holds no checkpoint yet" in _one_line(err) and "from step 0" in err, err


# ---------------------------------------------------------------------------- 4: NaN / Inf

def _rewrite_weights(run, edit):
    """Save the run's checkpoint again with edited weights (valid digests: as a writer that
    saved them would have)."""
    loaded = ckpt.read_checkpoint(run)
    rec = {k: v for k, v in loaded.record.items()
           if k not in ("format", "token", "files", "sha256")}
    weights = {k: v.clone() for k, v in loaded.weights.items()}
    edit(weights)
    ckpt.save_checkpoint(run, weights=weights, state_tensors=loaded.state, record=rec)


def test_eval_of_nan_weights_says_what_is_wrong(cli, tmp_path, reference):
    run = _copy(reference, tmp_path / "run")
    name = sorted(ckpt.read_checkpoint(run).weights)[0]
    _rewrite_weights(run, lambda w: w[name].view(-1)[0].fill_(float("nan")))
    code, out, err = cli("eval", run)
    line = _one_line(err)
    assert code == 1 and f"tensor {name!r} holds 1 NaN or Inf value(s)" in line, err
    assert "JSON" not in err and not (run / "eval.json").exists()


def test_eval_of_overflowing_outputs_says_what_is_wrong(cli, tmp_path, reference):
    run = _copy(reference, tmp_path / "run")
    last = [k for k in sorted(ckpt.read_checkpoint(run).weights) if k.endswith("weight")][-1]
    _rewrite_weights(run, lambda w: w[last].mul_(1e38))
    code, out, err = cli("eval", run)
    line = _one_line(err)
    assert code == 1 and "the model's test loss is" in line and "overflow" in line, err


def test_a_non_finite_test_loss_is_null_in_metrics(tmp_path, monkeypatch):
    real = loop.evaluate_split

    def overflowing(*args, **kw):
        loss, err, n = real(*args, **kw)
        return float("inf"), err, n

    monkeypatch.setattr(loop, "evaluate_split", overflowing)
    run = tmp_path / "run"
    result = train(tiny_config(run), progress=False)
    test_lines = [m for m in metrics(run) if m["split"] == "test"]
    assert [m["loss"] for m in test_lines] == [None, None], test_lines
    assert result["test_loss"] is None and record(run)["metrics"]["test"]["loss"] is None


# ---------------------------------------------------------------------------- 8: environment

@pytest.mark.parametrize("before", [None, ":16:8"])
def test_cublas_workspace_is_set_for_a_deterministic_cuda_run_only(monkeypatch, tmp_path, before):
    key = "CUBLAS_WORKSPACE_CONFIG"
    if before is None:
        monkeypatch.delenv(key, raising=False)
    else:
        monkeypatch.setenv(key, before)
    cfg = tiny_config(tmp_path / "run", deterministic=True)
    det = torch.are_deterministic_algorithms_enabled()
    with loop._torch_settings(cfg, torch.device("cuda")):  # no CUDA call is made
        assert os.environ.get(key) == (before or loop.CUBLAS_WORKSPACE)
    assert os.environ.get(key) == before, "CUBLAS_WORKSPACE_CONFIG leaked out of the run"
    with loop._torch_settings(cfg, torch.device("cpu")):
        assert os.environ.get(key) == before
    assert torch.are_deterministic_algorithms_enabled() == det
