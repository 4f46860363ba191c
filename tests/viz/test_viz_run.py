"""Pictures of run and reproduction directories (synthetic ones, written to the contract)."""

from __future__ import annotations

import json

import pytest
import torch

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

from stnkit.viz import (  # noqa: E402
    plots,
    read_metrics,
    read_snapshots,
    render_reproduction,
    render_run,
)
from tests.viz.rundirs import TABLE, make_repro_dir, make_run_dir, tiny_st_model  # noqa: E402

TILE, GAP = plots.TILE, plots.GAP


def size_of(path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()
        return im.size


def frames_of(path) -> int:
    with Image.open(path) as im:
        assert im.format == "GIF"
        return im.n_frames


def test_run_from_snapshots_alone(tmp_path):
    """No checkpoint: everything comes from the snapshots."""
    run = make_run_dir(tmp_path / "run", model=tiny_st_model(), n=6, steps=(50, 100, 150))
    written = render_run(run, num_samples=4)
    assert set(written) == {"samples", "curves", "evolution_gif", "evolution_png"}
    assert all(p.parent == run / "figures" for p in written.values())
    assert size_of(written["samples"]) == plots.samples_figure_size(4, 1)
    assert size_of(written["curves"]) == plots.curves_figure_size()
    assert frames_of(written["evolution_gif"]) == 3
    assert size_of(written["evolution_gif"]) == (GAP + 4 * (TILE + GAP),
                                                 plots.HEADER + 2 * (TILE + GAP))
    assert size_of(written["evolution_png"]) == (plots.LABEL_WIDTH + 4 * (TILE + GAP),
                                                 GAP + 4 * (TILE + GAP))


def test_model_and_snapshot_outlines_agree(tmp_path):
    """The final outline drawn from the model equals the one drawn from the last snapshot."""
    model = tiny_st_model()
    run = make_run_dir(tmp_path / "run", model=model, n=5)
    model.train()
    a = render_run(run, tmp_path / "a", model=model)
    b = render_run(run, tmp_path / "b")
    assert size_of(a["samples"]) == size_of(b["samples"])
    from stnkit.viz.run import _tracks_from_model, _tracks_from_snapshot

    snaps = read_snapshots(run)
    (tm,), _ = _tracks_from_model(model, snaps.images)
    (ts,) = _tracks_from_snapshot(snaps.steps[-1], snaps.images)
    torch.testing.assert_close(tm.outline(tm.theta, tm.output.shape[-2:]),
                               ts.outline(ts.theta, ts.output.shape[-2:]), atol=1e-4, rtol=0)
    assert model.training, "render_run leaves the model's mode alone"


def test_two_transformers_each_get_rows_and_their_channel(tmp_path):
    model = tiny_st_model(size=(2, 20, 20), transforms=("affine", "attention"))
    run = make_run_dir(tmp_path / "run", model=model, size=(2, 20, 20), n=3, steps=(10, 20))
    for m in (model, None):
        written = render_run(run, tmp_path / f"out{m is None}", model=m)
        assert size_of(written["samples"]) == plots.samples_figure_size(3, 2)
        assert frames_of(written["evolution_gif"]) == 2
        assert size_of(written["evolution_gif"])[1] == plots.HEADER + 2 * 2 * (TILE + GAP)
    from stnkit.viz.run import _tracks_from_model

    tracks, _ = _tracks_from_model(model, read_snapshots(run).images)
    assert [t.input.shape[1] for t in tracks] == [1, 1]  # warp_channels [0] and [1]


def test_model_without_transformer_gets_samples_and_curves(tmp_path):
    run = make_run_dir(tmp_path / "run", model=None, n=4)
    written = render_run(run)
    assert set(written) == {"samples", "curves"}
    assert size_of(written["samples"]) == plots.samples_figure_size(4, 0)


def test_run_without_saved_samples_or_metrics(tmp_path):
    run = make_run_dir(tmp_path / "run", model=None, inputs=False, steps=())
    (run / "metrics.jsonl").unlink()
    assert set(render_run(run)) == {"curves"}


def test_mismatched_model_falls_back_to_snapshots_with_a_note(tmp_path):
    run = make_run_dir(tmp_path / "run", model=tiny_st_model(), n=3)
    from torch import nn

    from stnkit.nn import SpatialTransformer

    def st():
        return SpatialTransformer(nn.Sequential(nn.Flatten(), nn.Linear(400, 4)), features=4)

    other = nn.Sequential(st(), st(), nn.Flatten(), nn.Linear(400, 10))  # two transformers
    notes = []
    written = render_run(run, model=other, note=notes.append)
    assert len(notes) == 1 and "snapshots" in notes[0]
    assert size_of(written["samples"]) == plots.samples_figure_size(3, 1)


def test_corrupt_checkpoint_falls_back_with_a_note(tmp_path):
    run = make_run_dir(tmp_path / "run", model=tiny_st_model(), n=3)
    (run / "checkpoint.json").write_text("{not json")
    notes = []
    written = render_run(run, note=notes.append)
    assert len(notes) == 1 and "checkpoint does not load" in notes[0], notes
    assert "evolution_gif" in written


def test_read_metrics_skips_a_torn_last_line_only(tmp_path):
    run = make_run_dir(tmp_path / "run", model=None, n=2)
    path = run / "metrics.jsonl"
    good = read_metrics(run)
    path.write_text(path.read_text() + '{"step": 999, "spl')
    assert read_metrics(run) == good
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "garbage", *lines[1:-1]]) + "\n")
    expected = r"read_metrics: expected metrics.jsonl one JSON object a line, got line 2"
    with pytest.raises(ValueError, match=expected):
        read_metrics(run)


def test_reproduction_bar_chart(tmp_path):
    repro = make_repro_dir(tmp_path / "repro", TABLE)
    written = render_reproduction(repro)
    assert written["results"] == repro / "figures" / "results.png"
    assert size_of(written["results"]) == plots.results_figure_size(TABLE)


def test_bad_directories(tmp_path):
    with pytest.raises(ValueError, match=r"render_run: expected run_dir a run directory"):
        render_run(tmp_path)
    with pytest.raises(ValueError,
                       match=r"read_results: expected repro_dir a reproduction directory"):
        render_reproduction(tmp_path)
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"read_results: expected results.csv columns"):
        render_reproduction(tmp_path)
    run = make_run_dir(tmp_path / "run", model=None)
    with pytest.raises(ValueError, match=r"render_run: expected num_samples a positive int"):
        render_run(run, num_samples=0)
    (run / "config.json").write_text(json.dumps({"model": "x"}))
    assert "curves" in render_run(run)  # a config without data still draws
