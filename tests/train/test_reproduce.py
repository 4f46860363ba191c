"""``reproduce``: tables next to the paper's numbers, cell-by-cell resumability."""

from __future__ import annotations

import csv
import json
import shutil
import statistics

import pytest

from stnkit._checks import StnkitFileError
from stnkit.train import PAPER_NUMBERS, paper_error, reproduce
from stnkit.train.reproduce import CSV_COLUMNS

KW = dict(variants=["RTS"], models=["fcn", "st-fcn-aff"], seeds=2, schedule="cpu",
          data_dir="embedded", device="cpu", overrides={"dry_run": True, "num_threads": 1},
          progress=False)


def _final_error(run):
    return json.loads((run / "checkpoint.json").read_text())["metrics"]["test"]["error"]


def test_paper_numbers_are_the_papers():
    # Table 1 (left) spot checks, the TC text and the addition text
    assert paper_error("table1", "R", "fcn").error == 2.1
    assert paper_error("table1", "RTS", "cnn").error == 0.8
    assert paper_error("table1", "E", "st-cnn-tps").error == 1.1
    assert paper_error("table1", "P", "st-fcn-proj").error == 1.4
    assert paper_error("cluttered", "TC", "cnn").error == 3.5
    assert paper_error("cluttered", "T", "cnn") is None  # not reported
    assert paper_error("addition", "addition", "st-fcn-tps-x2").exact is False
    assert len([p for p in PAPER_NUMBERS if p.experiment == "table1"]) == 32
    assert all(p.source for p in PAPER_NUMBERS)


def test_reproduce_writes_tables_and_resumes_cell_by_cell(tmp_path):
    out = tmp_path / "repro"
    lines = []
    rows = reproduce("table1", out, log=lines.append, **KW)
    assert len(lines) == 4 and all("trained" in s for s in lines)
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == CSV_COLUMNS
    assert [(r["variant"], r["model"], r["seeds"]) for r in table] == \
        [("RTS", "fcn", "2"), ("RTS", "st-fcn-aff", "2")]
    for r, row in zip(table, rows, strict=True):
        errs = [_final_error(out / "runs" / "RTS" / r["model"] / f"seed{k}") for k in (0, 1)]
        assert float(r["mean_error"]) == pytest.approx(statistics.fmean(errs), abs=1e-4)
        assert float(r["std_error"]) == pytest.approx(statistics.stdev(errs), abs=1e-4)
        assert row["mean_error"] == pytest.approx(statistics.fmean(errs))
    assert [float(r["paper_error"]) for r in table] == [5.2, 0.8]
    md = (out / "results.md").read_text()
    assert "| model | RTS |" in md and "(paper 5.2)" in md and "(paper 0.8)" in md
    assert "Table 1 (left)" in md

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("checkpoint.safetensors")}
    lines.clear()
    reproduce("table1", out, log=lines.append, **KW)
    assert len(lines) == 4 and all("done before" in s for s in lines)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("checkpoint.safetensors")} == stamps

    # one cell lost, one cell that died before its first checkpoint: only they run again
    shutil.rmtree(out / "runs" / "RTS" / "fcn" / "seed1")
    crashed = out / "runs" / "RTS" / "st-fcn-aff" / "seed0"
    shutil.rmtree(crashed)
    crashed.mkdir()
    (crashed / "config.json").write_text("{}")
    lines.clear()
    reproduce("table1", out, log=lines.append, **KW)
    assert sum("trained" in s for s in lines) == 2 and sum("done before" in s for s in lines) == 2


def test_records_alone_resume_and_the_settings_name_the_precision(tmp_path):
    """A finished cell needs only its checkpoint.json and config.json to count as done (a
    reproduction's records can be kept without the weights and continued elsewhere); the
    table's settings line names the precision the cells trained in."""
    out = tmp_path / "repro"
    kw = dict(KW, models=["fcn"], seeds=1, overrides={**KW["overrides"], "precision": "bf16"})
    reproduce("table1", out, log=None, **kw)
    assert "precision=bf16" in (out / "results.md").read_text()
    run = out / "runs" / "RTS" / "fcn" / "seed0"
    error = _final_error(run)
    for p in run.iterdir():
        if p.name not in ("checkpoint.json", "config.json"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    lines = []
    rows = reproduce("table1", out, log=lines.append, **kw)
    assert len(lines) == 1 and "done before" in lines[0]
    assert rows[0]["mean_error"] == pytest.approx(error)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.json", "config.json"]


def test_a_different_setting_is_refused(tmp_path):
    out = tmp_path / "repro"
    kw = dict(KW, models=["fcn"], seeds=1)
    reproduce("table1", out, log=None, **kw)
    kw["overrides"] = {**kw["overrides"], "lr": 0.5}
    with pytest.raises(StnkitFileError, match=r"was trained with lr=0.001, this run asks for lr=0.5"):
        reproduce("table1", out, log=None, **kw)



def test_one_data_folder_spelt_two_ways_is_the_same_setting(tmp_path, monkeypatch):
    from stnkit.train.reproduce import _same_setting

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").mkdir()
    assert _same_setting("data_dir", str(tmp_path / "mnist"), "mnist")
    assert _same_setting("data_dir", "mnist", "./mnist/")
    assert not _same_setting("data_dir", "mnist", "other")
    assert not _same_setting("data_dir", "embedded", "mnist")
    assert not _same_setting("lr", 0.1, 0.2)

@pytest.mark.parametrize("kw, match", [
    (dict(variants=["TC"]), r"expected variants to contain only 'R', 'RTS', 'P', 'E', got 'TC'"),
    (dict(models=["resnet"]), r"expected models to contain only .*got 'resnet'"),
    (dict(seeds=0), r"expected seeds a positive int, got 0"),
])
def test_bad_arguments(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        reproduce("table1", tmp_path / "r", **{**KW, **kw})
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="expected experiment one of 'table1'"):
        reproduce("table2", tmp_path / "r")


def test_cli_reproduce(cli, tmp_path):
    out = tmp_path / "r"
    args = ["reproduce", "addition", "--out", out, "--models", "st-fcn-aff-x2", "--seeds", "1",
            "--schedule", "cpu", "--data-dir", "embedded", "--device", "cpu", "--dry-run", "--quiet"]
    code, stdout, err = cli(*args)
    assert code == 0, err
    assert "[1/1] addition st-fcn-aff-x2 seed0: trained" in stdout
    assert "| st-fcn-aff-x2 |" in stdout and "(paper 5.8†)" in stdout
    code, stdout, err = cli(*args)
    assert code == 0 and "done before" in stdout
    code, stdout, err = cli("reproduce", "table1", "--out", out, "--variants", "R,XX")
    assert code == 2 and "invalid choice 'XX'" in err and err.startswith("usage:")
    code, stdout, err = cli("reproduce", "table1", "--out", out, "--models", "nope")
    assert code == 2 and "unknown model 'nope'" in err
    code, stdout, err = cli("reproduce", "table9", "--out", out)
    assert code == 2
