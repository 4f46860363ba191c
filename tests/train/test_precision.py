"""``config.precision`` (fp32 / bf16 / fp16): autocast, channels_last, the fp16 GradScaler,
and resume (stopped at a checkpoint, or killed with SIGKILL) bitwise equal to a run never
interrupted, in every precision on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from stnkit._checks import StnkitValueError
from stnkit.train import CheckpointError, resume, train
from stnkit.train import loop as loop_module
from stnkit.train.checkpoint import _record_digest
from stnkit.train.config import resolve_config

from ._helpers import REPO, assert_same_weights, metrics, record, stnkit_env, tiny_config

PRECISIONS = ["fp32", "bf16", "fp16"]


class TinyConvNet(nn.Module):
    """A conv layer and a classifier: the channels_last path at a test's cost."""

    def __init__(self, *, input_size, num_classes):
        super().__init__()
        c, h, w = input_size
        self.conv = nn.Conv2d(c, 4, 5, stride=2)
        self.fc = nn.Linear(4 * ((h - 5) // 2 + 1) * ((w - 5) // 2 + 1), num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture
def conv_model(monkeypatch):
    monkeypatch.setattr(loop_module, "_create_model",
                        lambda name, *, input_size, num_classes: TinyConvNet(
                            input_size=input_size, num_classes=num_classes))


# ---------------------------------------------------------------------------- settings

def test_precision_defaults_to_fp32_and_is_saved(tmp_path):
    assert resolve_config(overrides={"model": "fcn", "data": "R", "out": "x"}).precision == "fp32"
    train(tiny_config(tmp_path / "run", precision="bf16", iterations=2), progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == "bf16"
    assert record(tmp_path / "run")["config"]["precision"] == "bf16"


def test_a_bad_precision_is_refused(tmp_path):
    with pytest.raises(StnkitValueError,
                       match=r"train: expected config.precision one of 'fp32', 'bf16', 'fp16', "
                             r"got 'fp64'"):
        train(tiny_config(tmp_path / "run", precision="fp64"), progress=False)
    assert not (tmp_path / "run").exists()


def test_precision_from_a_config_file_and_the_flag(cli, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('precision = "fp16"\n')
    common = ["--model", "fcn", "--data", "mnist", "--data-dir", "embedded", "--schedule", "cpu",
              "--iterations", "2", "--batch-size", "8", "--train-size", "32", "--test-size", "16",
              "--device", "cpu", "-q"]
    code, _, err = cli("train", "-o", tmp_path / "a", "--config", cfg, *common)
    assert code == 0, err
    assert record(tmp_path / "a")["config"]["precision"] == "fp16"
    code, _, err = cli("train", "-o", tmp_path / "b", "--config", cfg, "--precision", "bf16",
                       *common)
    assert code == 0, err
    assert record(tmp_path / "b")["config"]["precision"] == "bf16"  # the flag wins
    code, _, err = cli("train", "-o", tmp_path / "c", "--precision", "fp8", *common)
    assert code == 2 and "invalid choice: 'fp8'" in err, err
    code, _, err = cli("train", "--resume", tmp_path / "a", "--precision", "fp32")
    assert code == 2 and "--resume takes only --iterations" in err, err


def test_reproduce_passes_the_precision_to_every_cell(cli, tmp_path):
    code, _, err = cli("reproduce", "table1", "-o", tmp_path / "r", "--variants", "R",
                       "--models", "fcn", "--seeds", "1", "--schedule", "cpu", "--data-dir",
                       "embedded", "--device", "cpu", "--dry-run", "--precision", "bf16", "-q")
    assert code == 0, err
    run = tmp_path / "r" / "runs" / "R" / "fcn" / "seed0"
    assert record(run)["config"]["precision"] == "bf16"


# ---------------------------------------------------------------------------- what runs

@pytest.mark.parametrize("precision", PRECISIONS)
def test_autocast_memory_format_and_scaler_per_precision(tmp_path, conv_model, monkeypatch,
                                                         precision):
    seen = []
    real_loss = loop_module._loss

    def loss(logits, y):  # the loss sees float32 logits; the forward ran in the precision
        seen.append((logits.dtype, torch.is_autocast_enabled("cpu"),
                     torch.get_autocast_dtype("cpu")))
        return real_loss(logits, y)

    monkeypatch.setattr(loop_module, "_loss", loss)
    run = tmp_path / "run"
    train(tiny_config(run, precision=precision, iterations=3), progress=False)
    assert seen and all(s == (torch.float32, False, torch.get_autocast_dtype("cpu"))
                        for s in seen), seen
    rec = record(run)
    assert rec["memory_format"] == ("contiguous" if precision == "fp32" else "channels_last")
    if precision == "fp16":
        assert rec["grad_scaler"]["scale"] == 65536.0, rec["grad_scaler"]
        assert rec["grad_scaler"]["_growth_tracker"] == 3, rec["grad_scaler"]
    else:
        assert rec["grad_scaler"] is None
    assert all(m["loss"] is not None for m in metrics(run))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_changes_the_numbers(tmp_path, precision):
    """The autocast is really on: the weights differ from an fp32 run's."""
    train(tiny_config(tmp_path / "fp32", iterations=3), progress=False)
    train(tiny_config(tmp_path / "low", precision=precision, iterations=3), progress=False)
    with pytest.raises(AssertionError, match="expected bitwise equal"):
        assert_same_weights(tmp_path / "fp32", tmp_path / "low")


# ---------------------------------------------------------------------------- exact resume

@pytest.mark.parametrize("model", ["fcn", "conv"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_resume_at_a_checkpoint_equals_uninterrupted(tmp_path, request, precision, model):
    if model == "conv":
        request.getfixturevalue("conv_model")
    kw = dict(precision=precision, optimizer="adam", lr=1e-3)
    train(tiny_config(tmp_path / "a", **kw), progress=False)
    train(tiny_config(tmp_path / "b", iterations=3, **kw), progress=False)
    resume(tmp_path / "b", iterations=6, progress=False)
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert record(tmp_path / "a")["grad_scaler"] == record(tmp_path / "b")["grad_scaler"]


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import stnkit.train.loop as loop
    from stnkit.train import TrainConfig, train

    calls = [0]
    real_loss = loop._loss

    def loss(logits, y):  # SIGKILL in the middle of iteration 6 (checkpoints at 3, 6, 8)
        calls[0] += 1
        if calls[0] == 6:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_loss(logits, y)

    loop._loss = loss
    cfg = TrainConfig(model="fcn", data="mnist", out=sys.argv[1], schedule="cpu",
                      data_dir="embedded", iterations=8, batch_size=16, train_size=256,
                      test_size=64, checkpoint_every=3, eval_every=4, log_every=1,
                      device="cpu", num_threads=1, precision=sys.argv[2])
    train(cfg, progress=False)
""")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_sigkill_then_resume_is_bitwise_identical(tmp_path, precision):
    ref = tmp_path / "ref"
    train(tiny_config(ref, precision=precision, iterations=8, checkpoint_every=3, eval_every=4),
          progress=False)
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(run), precision],
                         env=stnkit_env(), cwd=REPO, capture_output=True, text=True, timeout=240)
    assert res.returncode == -9, (res.returncode, res.stderr)
    assert record(run)["step"] == 3 and not record(run)["finished"]
    resume(run, progress=False)
    assert record(run)["step"] == 8 and record(run)["finished"]
    assert_same_weights(ref, run)
    assert metrics(run) == metrics(ref)
    assert record(run)["grad_scaler"] == record(ref)["grad_scaler"]


def _edit_record(run, **changes):
    rec = record(run)
    rec.update(changes)
    rec["sha256"] = _record_digest(rec)
    (run / "checkpoint.json").write_text(json.dumps(rec, indent=1) + "\n")


@pytest.mark.parametrize("state", [None, {"scale": 65536.0}, {"scale": -1.0},
                                   {"_growth_tracker": 1.5}])
def test_an_fp16_checkpoint_without_a_valid_scaler_state_is_refused(tmp_path, state):
    run = tmp_path / "run"
    train(tiny_config(run, precision="fp16", iterations=2), progress=False)
    good = record(run)["grad_scaler"]
    bad = state if state is None or len(state) == len(good) else {**good, **state}
    if state == {"scale": 65536.0}:
        bad = state  # keys missing
    _edit_record(run, grad_scaler=bad)
    with pytest.raises(CheckpointError, match=r"an fp16 run needs its GradScaler state"):
        resume(run, iterations=4, progress=False)


# ---------------------------------------------------------------------------- ST models

@pytest.mark.parametrize("model", ["st-fcn-aff", "st-fcn-proj", "st-fcn-tps"])
def test_st_models_train_and_resume_in_bf16(tmp_path, model):
    kw = dict(model=model, precision="bf16", iterations=4, checkpoint_every=2, eval_every=2)
    train(tiny_config(tmp_path / "a", **kw), progress=False)
    train(tiny_config(tmp_path / "b", **{**kw, "iterations": 2}), progress=False)
    resume(tmp_path / "b", iterations=4, progress=False)
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")


class _Captured(Exception):
    pass


@pytest.mark.parametrize("flags, want", [([], "fp32"), (["--precision", "bf16"], "bf16"),
                                         (["--precision", "fp16"], "fp16")])
def test_demo_passes_its_precision_to_both_runs(tmp_path, monkeypatch, flags, want):
    """The demo's default stays fp32 (measured: bf16 is slower without bf16 hardware)."""
    pytest.importorskip("matplotlib")
    import stnkit.cli.demo as demo
    from stnkit.cli import main

    def run_demo(out, budget, **kw):
        raise _Captured(budget)

    monkeypatch.setattr(demo, "run_demo", run_demo)
    with pytest.raises(_Captured) as e:
        main(["demo", "--quick", "-q", "-o", str(tmp_path / "d"), *flags])
    assert e.value.args[0]["precision"] == want
    assert resolve_config(overrides={**e.value.args[0], "model": "cnn", "data": "RTS",
                                     "out": "x", "schedule": "cpu"}).precision == want
