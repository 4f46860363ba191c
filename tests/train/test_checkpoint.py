"""Checkpoint files: round trips of every piece of state, crash recovery, bad files."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from stnkit.train import checkpoint as ckpt


def _model_and_opt(kind):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    if kind == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.99))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    return model, opt


def _save(run, model, opt, step=3, model_name="toy"):
    opt_json, opt_t = ckpt.optimizer_state(opt)
    rng_json, rng_t = ckpt.rng_state()
    ckpt.save_checkpoint(run, weights=model.state_dict(), state_tensors={**opt_t, **rng_t},
                         record={"step": step, "model": model_name, "config": {},
                                 "optimizer": opt_json, "rng": rng_json})


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_optimizer_state_round_trip_is_exact(tmp_path, kind):
    model, opt = _model_and_opt(kind)
    _save(tmp_path, model, opt)
    loaded = ckpt.read_checkpoint(tmp_path)
    model2, opt2 = _model_and_opt(kind)
    with torch.no_grad():
        for p in model2.parameters():
            p.add_(1.0)
    opt2 = type(opt)(model2.parameters(), lr=123.0)  # fresh state, wrong lr: all must come back
    ckpt.load_weights_into(model2, loaded.weights, model_name="toy", path="x")
    ckpt.restore_optimizer_state(opt2, loaded.record["optimizer"], loaded.state)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == [dict(g, betas=tuple(g["betas"])) if "betas" in g else g
                                 for g in b["param_groups"]]
    for i in a["state"]:
        for k, v in a["state"][i].items():
            assert torch.equal(v, b["state"][i][k]), (i, k)
    # the next steps are identical too
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_rng_states_round_trip(tmp_path):
    model, opt = _model_and_opt("sgd")
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    _save(tmp_path, model, opt)
    want = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    loaded = ckpt.read_checkpoint(tmp_path)
    ckpt.restore_rng_state(loaded.record["rng"], loaded.state)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == want[0] and got[1] == want[1] and torch.equal(got[2], want[2])


def test_no_pickle_in_any_file(tmp_path):
    model, opt = _model_and_opt("adam")
    _save(tmp_path, model, opt)
    for name in (ckpt.WEIGHTS, ckpt.STATE):
        head = (tmp_path / name).read_bytes()[:2]
        assert head != b"\x80\x04" and head != b"PK", name  # neither pickle nor torch zip
    json.loads((tmp_path / ckpt.RECORD).read_text())


def test_recover_rolls_forward_an_interrupted_rename(tmp_path):
    model, opt = _model_and_opt("sgd")
    _save(tmp_path, model, opt, step=3)
    old_token = ckpt.read_record(tmp_path)["token"]
    # write checkpoint 6 into a scratch dir, then stage it as a crash after the first rename
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    _save(scratch, model, opt, step=6)
    (scratch / ckpt.STATE).replace(tmp_path / ckpt.STATE)  # first rename done
    (scratch / ckpt.WEIGHTS).replace(tmp_path / (ckpt.WEIGHTS + ".tmp"))
    (scratch / ckpt.RECORD).replace(tmp_path / (ckpt.RECORD + ".tmp"))
    with pytest.raises(ckpt.CheckpointError, match="torn"):
        ckpt.read_checkpoint(tmp_path)
    assert ckpt.recover(tmp_path) == "rolled forward"
    rec = ckpt.read_checkpoint(tmp_path).record
    assert rec["step"] == 6 and rec["token"] != old_token
    assert not list(tmp_path.glob("*.tmp"))


def test_recover_rolls_back_a_partial_write(tmp_path):
    model, opt = _model_and_opt("sgd")
    _save(tmp_path, model, opt, step=3)
    (tmp_path / (ckpt.WEIGHTS + ".tmp")).write_bytes(b"partial")
    (tmp_path / (ckpt.RECORD + ".tmp")).write_bytes(b'{"tok')  # cut short
    assert ckpt.recover(tmp_path) == "rolled back"
    assert ckpt.read_checkpoint(tmp_path).record["step"] == 3
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("target, data, match", [
    (ckpt.WEIGHTS, b"garbage that is not safetensors", "corrupt checkpoint file"),
    (ckpt.WEIGHTS, None, "checkpoint file is missing"),
    (ckpt.RECORD, b"{not json", "corrupt checkpoint record"),
    (ckpt.RECORD, b'{"format": "other"}', "not a stnkit checkpoint record"),
    (ckpt.STATE, b"\x08\x00\x00\x00\x00\x00\x00\x00{}", "corrupt checkpoint file|does not belong"),
])
def test_bad_files_give_clear_errors(tmp_path, target, data, match):
    model, opt = _model_and_opt("sgd")
    _save(tmp_path, model, opt)
    if data is None:
        (tmp_path / target).unlink()
    else:
        (tmp_path / target).write_bytes(data)
    with pytest.raises(ckpt.CheckpointError, match=match):
        ckpt.read_checkpoint(tmp_path)


def test_truncated_weights_file(tmp_path):
    model, opt = _model_and_opt("sgd")
    _save(tmp_path, model, opt)
    blob = (tmp_path / ckpt.WEIGHTS).read_bytes()
    (tmp_path / ckpt.WEIGHTS).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ckpt.CheckpointError, match="corrupt checkpoint file"):
        ckpt.read_checkpoint(tmp_path)


def test_weights_of_another_model(tmp_path):
    model, opt = _model_and_opt("sgd")
    other = torch.nn.Linear(4, 2)
    with pytest.raises(ckpt.CheckpointError, match=r"do not fit model 'toy'.*missing"):
        ckpt.load_weights_into(other, model.state_dict(), model_name="toy", path="w")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _save(a, model, opt, model_name="fcn")
    _save(b, model, opt, model_name="cnn")
    (a / ckpt.WEIGHTS).replace(b / ckpt.WEIGHTS)
    with pytest.raises(ckpt.CheckpointError, match=r"holds weights of model 'fcn', but the run is of model 'cnn'"):
        ckpt.read_checkpoint(b)


# ---------------------------------------------------------------------------- integrity

def _flip(path, offset):
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x01  # one bit: the smallest corruption there is
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("target", [ckpt.WEIGHTS, ckpt.STATE])
@pytest.mark.parametrize("where", [0.0, 0.1, 0.5, 0.75, 0.9, 1.0])
def test_one_flipped_bit_in_a_tensor_file_is_refused(tmp_path, target, where):
    model, opt = _model_and_opt("adam")
    _save(tmp_path, model, opt)
    path = tmp_path / target
    n = path.stat().st_size
    _flip(path, min(int(where * n), n - 1))  # header, tensor data, the last byte
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.read_checkpoint(tmp_path, fn="resume")
    msg = str(info.value)
    assert msg.startswith(f"resume: {path}: ") and "\n" not in msg, msg


def test_every_flipped_byte_of_the_tensor_data_is_refused(tmp_path):
    """Past the header, every byte of the weights is covered (not a sample of them)."""
    model, opt = _model_and_opt("sgd")
    _save(tmp_path, model, opt)
    path = tmp_path / ckpt.WEIGHTS
    clean = path.read_bytes()
    start = 8 + int.from_bytes(clean[:8], "little")
    for offset in range(start, len(clean)):
        _flip(path, offset)
        with pytest.raises(ckpt.CheckpointError, match="corrupt checkpoint file: .* sha256"):
            ckpt.read_weights(tmp_path, ckpt.read_record(tmp_path))
        path.write_bytes(clean)


def test_an_edited_or_damaged_record_is_refused(tmp_path):
    model, opt = _model_and_opt("sgd")
    _save(tmp_path, model, opt, step=3)
    path = tmp_path / ckpt.RECORD
    clean = path.read_text()
    # a change that keeps the JSON valid: the step (a flipped bit turns "3" into "2")
    path.write_text(clean.replace('"step": 3', '"step": 2'))
    with pytest.raises(ckpt.CheckpointError, match=r"corrupt checkpoint record: its content has sha256"):
        ckpt.read_record(tmp_path)
    # the digests removed from a current-format record
    rec = json.loads(clean)
    for key in ("sha256", "files"):
        rec.pop(key)
    path.write_text(json.dumps(rec))
    with pytest.raises(ckpt.CheckpointError, match="corrupt checkpoint record"):
        ckpt.read_checkpoint(tmp_path)


def test_legacy_records_without_digests_are_read(tmp_path):
    """stnkit-checkpoint-1 (before digests): accepted with the checks it always had; a legacy
    record that does carry digests is verified all the same."""
    model, opt = _model_and_opt("sgd")
    _save(tmp_path, model, opt)
    path = tmp_path / ckpt.RECORD
    rec = json.loads(path.read_text())
    legacy = {k: v for k, v in rec.items() if k not in ("sha256", "files")}
    legacy["format"] = ckpt.LEGACY_FORMAT
    path.write_text(json.dumps(legacy))
    assert ckpt.read_checkpoint(tmp_path).record["step"] == 3
    with_digests = dict(rec, format=ckpt.LEGACY_FORMAT)
    with_digests["sha256"] = ckpt._record_digest(with_digests)
    path.write_text(json.dumps(with_digests))
    _flip(tmp_path / ckpt.WEIGHTS, (tmp_path / ckpt.WEIGHTS).stat().st_size - 1)
    with pytest.raises(ckpt.CheckpointError, match="corrupt checkpoint file"):
        ckpt.read_checkpoint(tmp_path)


def test_non_finite_weights_are_refused(tmp_path):
    model, opt = _model_and_opt("sgd")
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    _save(tmp_path, model, opt)
    with pytest.raises(ckpt.CheckpointError, match=r"tensor '0.weight' holds 1 NaN or Inf value"):
        ckpt.read_checkpoint(tmp_path)


def test_checkpoint_errors_are_stnkit_file_errors():
    from stnkit._checks import StnkitFileError

    assert issubclass(ckpt.CheckpointError, StnkitFileError)
    assert issubclass(ckpt.CheckpointError, ValueError)  # as before, for callers catching it
