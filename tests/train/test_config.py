"""TrainConfig: presets, files, precedence, validation."""

from __future__ import annotations

import json

import pytest

from stnkit._checks import StnkitError, StnkitFileError, StnkitValueError
from stnkit.train import PRESETS, TrainConfig, load_config_file, resolve_config
from stnkit.train.config import INT_RANGES, check_config

from ._helpers import tiny_config


def test_defaults_are_the_papers_schedule():
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.lr, cfg.lr_step, cfg.lr_gamma, cfg.iterations, cfg.batch_size,
            cfg.weight_decay) == ("sgd", 0.01, 50_000, 0.1, 150_000, 256, 0.0)
    assert resolve_config() == TrainConfig()


def test_cpu_preset_applies():
    for cfg in (resolve_config(overrides={"schedule": "cpu"}), TrainConfig(schedule="cpu")):
        for k, v in PRESETS["cpu"].items():
            assert getattr(cfg, k) == v, k
    # an explicit value beats the preset in the dataclass too
    assert TrainConfig(schedule="cpu", lr=0.5).lr == 0.5


@pytest.mark.parametrize("ext", ["yaml", "toml", "json"])
def test_precedence_defaults_preset_file_flags(tmp_path, ext):
    # file: schedule cpu, lr and batch size; flags: batch size again and seed
    body = {
        "yaml": "schedule: cpu\nlr: 5e-3\nbatch-size: 32\nmodel: cnn\n",
        "toml": 'schedule = "cpu"\nlr = 5e-3\nbatch_size = 32\nmodel = "cnn"\n',
        "json": json.dumps({"schedule": "cpu", "lr": 5e-3, "batch_size": 32, "model": "cnn"}),
    }[ext]
    path = tmp_path / f"c.{ext}"
    path.write_text(body)
    cfg = resolve_config(file=path, overrides={"batch_size": 8, "seed": 5})
    assert cfg.schedule == "cpu"
    assert cfg.iterations == PRESETS["cpu"]["iterations"]  # preset beats default
    assert PRESETS["cpu"]["lr"] != 5e-3 and cfg.lr == 5e-3  # file beats preset
    assert cfg.batch_size == 8  # flag beats file
    assert cfg.seed == 5 and cfg.model == "cnn"
    assert cfg.optimizer == PRESETS["cpu"]["optimizer"]  # preset, untouched by file or flags
    assert cfg.snapshot_count == 16 and cfg.data_seed == 0  # untouched defaults


def test_flag_schedule_beats_file_schedule(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("schedule: cpu\n")
    cfg = resolve_config(file=path, overrides={"schedule": "paper"})
    assert cfg.schedule == "paper" and cfg.iterations == PRESETS["paper"]["iterations"]


def test_unknown_key_in_file_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.1\nlearning_rate: 0.1\n")
    with pytest.raises(StnkitFileError, match=r"c\.yaml: unknown key 'learning_rate' \(known keys: .*batch_size"):
        load_config_file(path)


@pytest.mark.parametrize("body, match", [
    ("iterations: many\n", "expected iterations an integer, got 'many'"),
    ("lr: [1]\n", "expected lr a number"),
    ("- 1\n- 2\n", "expected a mapping of settings, got list"),
    ("a: [\n", "could not be parsed"),
])
def test_bad_file_values(tmp_path, body, match):
    path = tmp_path / "c.yaml"
    path.write_text(body)
    with pytest.raises(StnkitError, match=match):
        load_config_file(path)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(StnkitFileError, match="none.yaml: config file does not exist"):
        load_config_file(tmp_path / "none.yaml")
    (tmp_path / "c.ini").write_text("")
    with pytest.raises(ValueError, match=r"\.yaml, \.yml, \.toml or \.json"):
        load_config_file(tmp_path / "c.ini")


def test_dry_run_shrinks_everything(tmp_path):
    cfg = resolve_config(overrides={"dry_run": True, "schedule": "paper"})
    assert cfg.iterations <= 4 and cfg.test_size <= 64 and cfg.train_size <= 128
    assert cfg.eval_every == cfg.iterations
    from stnkit.train import train

    # a dataclass built by hand with dry_run=True is shrunk by train() too
    result = train(tiny_config(tmp_path / "run", dry_run=True, iterations=1000, train_size=None),
                   progress=False)
    assert result["step"] == 4


@pytest.mark.parametrize("field, value, error, match", [
    ("iterations", 0, ValueError, r"expected config.iterations a positive int, got 0"),
    ("batch_size", 2.5, TypeError, r"expected config.batch_size an int, got 2.5"),
    ("lr", float("nan"), ValueError, r"expected config.lr a finite number, got nan"),
    ("lr", 0.0, ValueError, r"expected config.lr a positive number, got 0.0"),
    ("optimizer", "rmsprop", ValueError, r"expected config.optimizer one of 'sgd', 'adam', 'adamw'"),
    ("device", "tpu", ValueError, r"expected config.device one of"),
    ("model", None, ValueError, r"expected config.model a non-empty string, got None"),
    ("train_size", 0, ValueError, r"expected config.train_size None or a positive int, got 0"),
    ("momentum", -1.0, ValueError, r"expected config.momentum a number >= 0"),
])
def test_check_config_rejects(tmp_path, field, value, error, match):
    cfg = tiny_config(tmp_path / "run")
    setattr(cfg, field, value)  # past __post_init__, as code that edits a config would
    with pytest.raises(error, match="train: " + match):
        check_config(cfg)
    if field in INT_RANGES:  # the dataclass itself refuses an integer out of range
        with pytest.raises(error, match="TrainConfig: " + match):
            tiny_config(tmp_path / "run", **{field: value})


BIG = 99999999999999999999999  # > 2**64: torch's "Overflow when unpacking long long"


@pytest.mark.parametrize("field, value, match", [
    ("seed", BIG, r"config.seed an int in \[0, 2\*\*63\), got 99999999999999999999999"),
    ("seed", 2**63, r"config.seed an int in \[0, 2\*\*63\), got 9223372036854775808"),
    ("seed", -1, r"config.seed an int >= 0, got -1"),
    ("data_seed", BIG, r"config.data_seed an int in \[0, 2\*\*63\)"),
    ("iterations", BIG, r"config.iterations an int in \[1, 2\*\*63\)"),
    ("batch_size", 2**63, r"config.batch_size an int in \[1, 2\*\*63\)"),
    ("lr_step", BIG, r"config.lr_step an int in \[0, 2\*\*63\)"),
    ("snapshot_count", BIG, r"config.snapshot_count an int in \[0, 2\*\*63\)"),
    ("train_size", BIG, r"config.train_size None or an int in \[1, 2\*\*63\)"),
    ("num_threads", 2**31, r"config.num_threads None or an int in \[1, 2\*\*31\)"),
    ("checkpoint_every", BIG, r"config.checkpoint_every an int in \[1, 2\*\*63\)"),
])
def test_integers_out_of_their_real_range_are_refused_everywhere(tmp_path, field, value, match):
    """The API, resolve_config (flags), YAML and TOML files all reach the dataclass's check."""
    with pytest.raises(StnkitValueError, match="TrainConfig: expected " + match):
        tiny_config(tmp_path / "run", **{field: value})
    with pytest.raises(StnkitValueError, match=match):
        resolve_config(overrides={field: value})
    for ext, text in ((".yaml", f"{field}: {value}\n"), (".toml", f"{field} = {value}\n")):
        path = tmp_path / ("c" + ext)
        path.write_text(text)
        try:
            with pytest.raises(StnkitValueError, match=match):
                resolve_config(file=path)
        except StnkitFileError as e:  # TOML: integers past int64 do not parse at all
            assert ext == ".toml" and "could not be parsed" in str(e), e


def test_largest_seed_trains(tmp_path):
    """2**63 - 1 is a valid seed: the run's per-rank offset must not overflow torch's seed."""
    from stnkit.train import train

    result = train(tiny_config(tmp_path / "run", seed=2**63 - 1, iterations=1), progress=False)
    assert result["step"] == 1


def test_positions_must_fit_int64(tmp_path):
    with pytest.raises(StnkitValueError, match=r"config.iterations \* config.batch_size < 2\*\*63"):
        tiny_config(tmp_path / "run", iterations=2**62, batch_size=4)


def test_a_learning_rate_schedule_that_overflows_is_refused(tmp_path):
    """lr_gamma ** (step // lr_step) past the float range: an OverflowError mid-run before."""
    cfg = tiny_config(tmp_path / "run", lr_gamma=10.0, lr_step=1, iterations=400)
    with pytest.raises(StnkitValueError, match=r"train: expected config.lr_gamma a factor that "
                                               r"keeps the learning rate finite for 400 iterations"):
        check_config(cfg)
    check_config(tiny_config(tmp_path / "run", lr_gamma=10.0, lr_step=100, iterations=400))
