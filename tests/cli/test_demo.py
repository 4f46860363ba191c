"""`stnkit demo`: the reduced `--quick` form end to end, and its argument checks."""

from __future__ import annotations

import json
import math
import re

import pytest

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

from stnkit.cli import CommandError, main  # noqa: E402
from stnkit.cli.demo import BUDGETS, EVALUATIONS, MARKER, _prepare  # noqa: E402
from stnkit.viz import plots  # noqa: E402


def size_of(path):
    with Image.open(path) as im:
        im.load()
        return im.format, im.size


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "-o", str(out)]) == 0  # not -q: it prints what it wrote
    stdout = capsys.readouterr().out
    written = re.findall(r"^wrote (\S+) \(.+\)$", stdout, re.M)
    expected = [out / "runs" / m for m in ("cnn", "st-cnn-aff")] + [
        out / n for n in ("curves.png", "samples.png", "evolution.gif", "evolution.png")] + [
        out / "cnn" / n for n in ("curves.png", "samples.png")] + [
        out / "summary.md", out / "summary.json"]
    assert sorted(written) == sorted(map(str, expected)), stdout
    assert all(p.exists() for p in expected)
    its = BUDGETS["quick"]["iterations"]
    printed = {}
    for model in ("cnn", "st-cnn-aff"):
        m = re.search(rf"^{model}: test error (\d+\.\d\d)% after {its} iterations", stdout, re.M)
        assert m, stdout
        printed[model] = float(m.group(1))

    summary = json.loads((out / "summary.json").read_text())
    for model, err in printed.items():
        run = out / "runs" / model
        tests = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                 if '"test"' in line]
        assert tests[-1]["step"] == its
        assert abs(tests[-1]["error"] - err) < 0.006, "printed error is the run's final one"
        assert summary["models"][model]["test_error"] == pytest.approx(tests[-1]["error"])
        assert 0 <= err <= 100
    assert "| st-cnn-aff |" in (out / "summary.md").read_text()

    n = BUDGETS["quick"]["snapshot_count"]
    frames = 1 + math.ceil(its / math.ceil(its / EVALUATIONS["st-cnn-aff"]))  # + step 0
    tile, gap = plots.TILE, plots.GAP
    assert size_of(out / "samples.png") == ("PNG", plots.samples_figure_size(n, 1))
    assert size_of(out / "curves.png") == ("PNG", plots.curves_figure_size())
    assert size_of(out / "evolution.png") == (
        "PNG", (plots.LABEL_WIDTH + n * (tile + gap), gap + (1 + min(frames, 8)) * (tile + gap)))
    with Image.open(out / "evolution.gif") as im:
        assert im.format == "GIF" and im.n_frames == frames
        assert im.size == (gap + n * (tile + gap), plots.HEADER + 2 * (tile + gap))
    assert size_of(out / "cnn" / "samples.png") == ("PNG", plots.samples_figure_size(n, 0))
    assert size_of(out / "cnn" / "curves.png") == ("PNG", plots.curves_figure_size())
    assert not list(out.rglob("*.tmp")), "no temporary files left"


def test_prepare_replaces_only_a_previous_demo(tmp_path):
    out = tmp_path / "d"
    _prepare(out)
    assert (out / MARKER).is_file()
    (out / "runs" / "cnn").mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    _prepare(out)  # a previous demo: its runs go, the rest stays
    assert not (out / "runs").exists() and (out / "keep.txt").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(CommandError, match=r"is not empty and holds no previous demo"):
        _prepare(other)
    assert (other / "thesis.tex").read_text() == "precious"
    with pytest.raises(CommandError, match=r"exists and is not a directory"):
        _prepare(other / "thesis.tex")


@pytest.mark.parametrize("args,match", [
    (["--seed", "-1"], r"argument --seed: expected an integer >= 0, got '-1'"),
    (["--iterations", "0"], r"argument --iterations: expected a positive integer, got '0'"),
    (["--data-dir", "x"], r"argument --data-dir: only with --full"),
])
def test_demo_bad_arguments(tmp_path, capsys, args, match):
    """Bad flag values are usage errors, as in every command: exit 2 with demo's usage."""
    out = tmp_path / "d"
    with pytest.raises(SystemExit) as e:
        main(["demo", "-o", str(out), *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("usage: stnkit demo "), err
    assert re.search(match, err), err
    assert not out.exists()


def test_quick_and_iterations_are_exclusive(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--quick", "--iterations", "5"])
    assert e.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_full_without_data_offline_fails_cleanly(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STNKIT_OFFLINE", "1")
    empty = tmp_path / "no-mnist"
    empty.mkdir()
    out = tmp_path / "d"
    rc = main(["demo", "--full", "--data-dir", str(empty), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err and err[-1].startswith("stnkit demo: error: "), err
    assert "no-mnist" in err[-1] or "MNIST" in err[-1], err[-1]
    assert not out.exists(), "nothing half-made left behind"

