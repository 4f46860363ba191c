"""``stnkit export RUN_DIR -o model.onnx``: a trained run to ONNX, its test error checked."""

from __future__ import annotations

import re
import sys

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from stnkit import export  # noqa: E402
from stnkit.train import load_model, train  # noqa: E402
from tests.train._helpers import tiny_config  # noqa: E402

LINE = re.compile(r"test error on (\d+) samples: torch ([\d.]+)%, onnxruntime ([\d.]+)% "
                  r"\(max \|logit difference\| (\S+)\)")


@pytest.fixture(scope="module")
def fcn_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "fcn"
    train(tiny_config(run, model="fcn", iterations=4, checkpoint_every=4, eval_every=4,
                      log_every=4), progress=False)
    return run


def check_round_trip(cli, run, tmp_path, test_size):
    out_file = tmp_path / "model.onnx"
    code, out, err = cli("export", run, "-o", out_file, "--test-size", test_size)
    assert code == 0, err
    m = LINE.search(out)
    assert m, out
    n, err_torch, err_onnx, diff = int(m[1]), float(m[2]), float(m[3]), float(m[4])
    assert n == test_size and err_torch == err_onnx and diff <= 1e-4, out
    assert f"wrote {out_file} (ONNX opset 20" in out, out
    model = load_model(run)
    x = torch.rand(7, *model.input_size)  # another batch size than the export's
    with torch.no_grad():
        want = model(x)
    got = export.run_onnx(export.onnx_session(out_file), x)
    assert (got - want).abs().max().item() <= 1e-4


def test_export_round_trip(cli, fcn_run, tmp_path):
    check_round_trip(cli, fcn_run, tmp_path, 64)


@pytest.mark.slow  # a 20-step st-cnn-aff run and its export: ~40 s of CPU on 2 cores
def test_export_round_trip_with_a_spatial_transformer(cli, tmp_path):
    run = tmp_path / "st"
    code, _, err = cli("train", "--model", "st-cnn-aff", "--out", run, "--iterations", "20",
                       "--data", "mnist", "--data-dir", "embedded", "--schedule", "cpu",
                       "--batch-size", "16", "--train-size", "256", "--test-size", "64",
                       "--device", "cpu", "--num-threads", "1", "--quiet")
    assert code == 0, err
    check_round_trip(cli, run, tmp_path, 100)


def test_refuses_when_onnxruntime_disagrees(cli, fcn_run, tmp_path, monkeypatch):
    real = export.run_onnx

    def shifted(session, x):  # a wrong translation: every prediction moves to the next class
        return real(session, x).roll(1, dims=1)

    monkeypatch.setattr(export, "run_onnx", shifted)
    out_file = tmp_path / "model.onnx"
    code, out, err = cli("export", fcn_run, "-o", out_file, "--test-size", "64")
    assert code == 1, (out, err)
    assert re.fullmatch(r"stnkit export: error: onnxruntime's test error [\d.]+% differs from "
                        r"torch's [\d.]+% by more than --tolerance 0.1 percentage points "
                        r"\(max \|logit difference\| \S+\); \S+ not written\n", err), err
    assert not out_file.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, code, match", [
    (["-o", "x.onnx", "--tolerance", "-1"], 2, "argument --tolerance: expected a finite"),
    (["-o", "x.onnx", "--opset", "0"], 2, "argument --opset: expected a positive integer"),
    ([], 2, "the following arguments are required: -o/--out"),
])
def test_bad_flags(cli, fcn_run, args, code, match):
    c, out, err = cli("export", fcn_run, *args)
    assert c == code and match in err, (c, err)


def test_missing_run_and_low_opset(cli, fcn_run, tmp_path):
    code, _, err = cli("export", tmp_path / "nope", "-o", tmp_path / "m.onnx")
    assert code == 1 and err.startswith("stnkit export: error: ") and "nope" in err, err
    assert err.count("\n") == 1, err
    code, _, err = cli("export", fcn_run, "-o", tmp_path / "m.onnx", "--opset", "18")
    assert code == 1 and "expected opset >= 20" in err and err.count("\n") == 1, err
    assert not (tmp_path / "m.onnx").exists()


def test_missing_onnx_packages_say_how_to_install_them(cli, fcn_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript raises ImportError
    code, out, err = cli("export", fcn_run, "-o", tmp_path / "m.onnx", "--test-size", "8")
    assert code == 1, (out, err)
    assert re.fullmatch(r"stnkit export: error: stnkit.export needs onnxscript, which is not "
                        r"installed \(.*\); install it with: pip install 'stnkit\[onnx\]'\n",
                        err), err
    assert not (tmp_path / "m.onnx").exists()
