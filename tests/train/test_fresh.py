"""Fresh distortions every epoch, the validation split, the cosine schedule and the ``fresh``
preset (issue 18): reproducible from (data seed, epoch, index), bitwise after a SIGKILL, and
a validation run that never reads the test set."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from stnkit._checks import StnkitValueError
from stnkit.data import VARIANTS, distort, load_mnist
from stnkit.train import TrainConfig, resume, train
from stnkit.train import _data as data_module
from stnkit.train import loop as loop_module
from stnkit.train._data import BatchOrder, load_training
from stnkit.train.config import from_dict, resolve_config, to_dict

from ._helpers import REPO, assert_same_weights, metrics, record, stnkit_env, tiny_config

TRAINING_VARIANTS = ("R", "RTS", "P", "E", "T", "TC", "addition")


@pytest.fixture(scope="module")
def digits():
    images, labels = load_mnist("train", root="embedded")
    return images[:200], labels[:200]


# ---------------------------------------------------------------------------- the data

@pytest.mark.parametrize("variant", TRAINING_VARIANTS)
def test_each_epoch_draws_new_distortions_and_epoch_0_is_the_fixed_set(digits, variant):
    images, labels = digits
    idx = np.arange(20, 36)
    fixed = distort(variant, images, labels, idx)
    again = distort(variant, images, labels, idx, epoch=0)
    one, two = (distort(variant, images, labels, idx, epoch=e) for e in (1, 2))
    assert np.array_equal(fixed[0], again[0])
    for a, b in ((fixed, one), (one, two), (fixed, two)):
        assert a[0].shape == b[0].shape
        differs = (a[0] != b[0]).reshape(len(idx), -1).any(1)
        assert differs.all(), f"{variant}: {(~differs).sum()} samples repeated across epochs"
    if variant != "addition":  # a digit keeps its label; addition draws a new partner
        assert np.array_equal(fixed[1], one[1])
    # a sample does not depend on the batch it is generated in
    alone = np.concatenate([distort(variant, images, labels, [i], epoch=2)[0] for i in idx])
    assert np.array_equal(alone, two[0])


def test_a_bad_epoch_is_refused(digits):
    images, labels = digits
    with pytest.raises(StnkitValueError, match=r"distort: expected epoch an int in \[0, 2\*\*63\)"
                                               r", got -1"):
        distort("R", images, labels, [0], epoch=-1)
    with pytest.raises(TypeError, match="distort: expected epoch an int, got float"):
        distort("R", images, labels, [0], epoch=1.0)


def test_fresh_batches_follow_the_epoch_of_each_position():
    train_split, val = load_training("RTS", seed=0, data_dir="embedded", limit=40,
                                     validation=None, fresh=True)
    assert val is None and len(train_split) == 40 and train_split.images is None
    assert train_split.image_size == VARIANTS["RTS"].image_size()
    order = BatchOrder(40, 16, seed=1)
    idx, epochs = order.draw(2)  # positions 32..47 straddle epochs 0 and 1
    assert epochs.tolist() == [0] * 8 + [1] * 8
    x, y = train_split.batch(idx, torch.device("cpu"), epochs)
    images, labels = load_mnist("train", root="embedded")
    for k in (0, 8, 15):
        want = distort("RTS", images, labels, [int(idx[k])], epoch=int(epochs[k]))
        assert torch.equal(x[k], torch.from_numpy(want[0][0]).float() / 255)
        assert int(y[k]) == int(want[1][0])


def test_validation_holds_out_the_last_training_digits():
    images, labels = load_mnist("train", root="embedded")
    n = len(labels)
    for fresh in (False, True):
        tr, val = load_training("R", seed=0, data_dir="embedded", limit=None, validation=500,
                                fresh=fresh)
        assert len(tr) == n - 500 and len(val) == 500
        want = distort("R", images, labels, np.arange(n - 500, n))
        assert torch.equal(val.images, torch.from_numpy(want[0]))
        assert torch.equal(val.labels, torch.from_numpy(want[1]))
    tr, _ = load_training("RTS", seed=0, data_dir="embedded", limit=None, validation=500,
                          fresh=True)
    assert len(tr.fresh.source.images) == n - 500  # no partner or clutter from held-out digits
    with pytest.raises(StnkitValueError, match=rf"train: expected config.validation_size fewer "
                                               rf"than the {n} training digits, got {n}"):
        load_training("R", seed=0, data_dir="embedded", limit=None, validation=n, fresh=True)


def test_plain_mnist_has_nothing_to_redraw():
    a, _ = load_training("mnist", seed=0, data_dir="embedded", limit=64, validation=None,
                         fresh=True)
    assert a.fresh is None and a.images.shape == (64, 1, 28, 28)


# ---------------------------------------------------------------------------- the schedule

def test_cosine_schedule_with_warmup():
    cfg = resolve_config(overrides={"model": "cnn", "data": "RTS", "out": "x",
                                    "schedule": "fresh", "iterations": 1000, "warmup": 100})
    f = [loop_module._lr_factor(cfg, s) for s in range(1000)]
    assert f[0] == pytest.approx(0.01) and f[49] == pytest.approx(0.5) and f[99] == 1.0
    assert f[100] == 1.0 and f[550] == pytest.approx(0.5) and 0 < f[999] < 1e-4
    assert all(a >= b for a, b in zip(f[100:], f[101:]))  # decays monotonically
    step = resolve_config(overrides={"model": "cnn", "data": "RTS", "out": "x",
                                     "schedule": "cpu", "warmup": 10})
    assert [loop_module._lr_factor(step, s) for s in (0, 9, 799, 800)] == \
        [pytest.approx(0.1), 1.0, 1.0, pytest.approx(0.3)]


def test_the_fresh_preset_and_old_configs():
    cfg = resolve_config(overrides={"model": "st-cnn-aff", "data": "RTS", "out": "x",
                                    "schedule": "fresh"})
    assert cfg.fresh_distortions is True and cfg.lr_schedule == "cosine" and cfg.warmup > 0
    for schedule in ("paper", "cpu"):  # unchanged: fixed data, step schedule, no warm-up
        c = resolve_config(overrides={"model": "cnn", "data": "R", "out": "x",
                                      "schedule": schedule})
        assert (c.fresh_distortions, c.lr_schedule, c.warmup) == (False, "step", 0)
    # a config.json written before these settings existed still reads as it trained
    old = to_dict(resolve_config(overrides={"model": "cnn", "data": "R", "out": "x",
                                            "schedule": "cpu"}))
    for k in ("fresh_distortions", "lr_schedule", "warmup", "validation_size"):
        old.pop(k)
    c = from_dict(old, source="config.json")
    assert (c.fresh_distortions, c.lr_schedule, c.warmup, c.validation_size) == \
        (False, "step", 0, None)


def test_a_bad_lr_schedule_is_refused(tmp_path):
    with pytest.raises(StnkitValueError, match=r"train: expected config.lr_schedule one of "
                                               r"'step', 'cosine', got 'linear'"):
        train(tiny_config(tmp_path / "run", lr_schedule="linear"), progress=False)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- runs

def _fresh(out, **kw):
    base = dict(model="fcn", data="R", out=str(out), schedule="fresh", data_dir="embedded",
                iterations=8, batch_size=16, train_size=40, test_size=32, checkpoint_every=3,
                eval_every=4, log_every=1, device="cpu", num_threads=1, warmup=2)
    base.update(kw)
    return TrainConfig(**base)


def test_a_fresh_run_differs_from_a_fixed_one_only_after_its_first_epoch(tmp_path):
    train(_fresh(tmp_path / "fresh"), progress=False)
    train(_fresh(tmp_path / "fixed", fresh_distortions=False), progress=False)
    fresh, fixed = metrics(tmp_path / "fresh"), metrics(tmp_path / "fixed")
    # 40 samples, batch 16: steps 1-2 read epoch 0 only (the fixed set), step 3 reaches epoch 1
    assert fresh[:2] == fixed[:2]
    assert fresh[2]["loss"] != fixed[2]["loss"]


def test_a_validation_run_never_reads_the_test_set(tmp_path, monkeypatch):
    real = data_module.load_split

    def no_test(variant, split, **kw):
        assert split != "test", "the validation run read the test set"
        return real(variant, split, **kw)

    monkeypatch.setattr(loop_module, "load_split", no_test)
    result = train(_fresh(tmp_path / "run", validation_size=300), progress=False)
    lines = metrics(tmp_path / "run")
    assert {m["split"] for m in lines} == {"train", "validation"}
    assert result["test_error"] is None and result["validation_error"] is not None
    assert record(tmp_path / "run")["metrics"]["validation"]["error"] == \
        result["validation_error"]


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import stnkit.train.loop as loop
    from stnkit.train import TrainConfig, train

    calls = [0]
    real_loss = loop._loss

    def loss(logits, y):  # SIGKILL in the middle of iteration 5 (checkpoints at 3, 6, 8)
        calls[0] += 1
        if calls[0] == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_loss(logits, y)

    loop._loss = loss
    cfg = TrainConfig(model="fcn", data="RTS", out=sys.argv[1], schedule="fresh",
                      data_dir="embedded", iterations=8, batch_size=16, train_size=40,
                      test_size=32, checkpoint_every=3, eval_every=4, log_every=1,
                      device="cpu", num_threads=1, warmup=2)
    train(cfg, progress=False)
""")


def test_sigkill_then_resume_is_bitwise_identical_with_fresh_distortions(tmp_path):
    ref = tmp_path / "ref"
    train(_fresh(ref, data="RTS"), progress=False)
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(run)], env=stnkit_env(),
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert res.returncode == -9, (res.returncode, res.stderr)
    assert record(run)["step"] == 3 and not record(run)["finished"]
    resume(run, progress=False)
    assert record(run)["finished"]
    assert_same_weights(ref, run)
    assert metrics(run) == metrics(ref)
    assert record(run)["scheduler"]["type"] == "cosine"
    assert math.isclose(record(run)["scheduler"]["factor"], 0.0, abs_tol=1e-12)
