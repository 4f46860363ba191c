"""`stnkit show`: pictures of run and reproduction directories, and clear failures."""

from __future__ import annotations

import pytest

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

from stnkit.cli import main  # noqa: E402
from stnkit.viz import plots  # noqa: E402
from tests.viz.rundirs import TABLE, make_repro_dir, make_run_dir, tiny_st_model  # noqa: E402


def check_png(path, size):
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.size == size, (path, im.format, im.size)


def test_show_run_dir_default_out(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", model=tiny_st_model(), n=10, steps=(5, 10, 15, 20))
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    figures = run / "figures"
    assert [line.split(" (")[0] for line in out] == [f"wrote {figures / n}" for n in
                                                      ("curves.png", "samples.png",
                                                       "evolution.gif", "evolution.png")], out
    check_png(figures / "samples.png", plots.samples_figure_size(8, 1))  # 8 of the 10 by default
    check_png(figures / "curves.png", plots.curves_figure_size())
    check_png(figures / "evolution.png", (plots.LABEL_WIDTH + 8 * (plots.TILE + plots.GAP),
                                          plots.GAP + 5 * (plots.TILE + plots.GAP)))
    with Image.open(figures / "evolution.gif") as im:
        assert im.format == "GIF" and im.n_frames == 4
        assert im.size == (plots.GAP + 8 * (plots.TILE + plots.GAP),
                           plots.HEADER + 2 * (plots.TILE + plots.GAP))


def test_show_out_dir_and_num_samples(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", model=tiny_st_model(), n=6)
    out = tmp_path / "pics" / "nested"
    assert main(["show", str(run), "-o", str(out), "-n", "3"]) == 0
    check_png(out / "samples.png", plots.samples_figure_size(3, 1))
    assert not (run / "figures").exists()


def test_show_run_without_transformer_says_so(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", model=None, n=4)
    assert main(["show", str(run)]) == 0
    captured = capsys.readouterr().out
    assert "no evolution pictures" in captured
    check_png(run / "figures" / "samples.png", plots.samples_figure_size(4, 0))
    assert not (run / "figures" / "evolution.gif").exists()


def test_show_reproduction_dir(tmp_path, capsys):
    repro = make_repro_dir(tmp_path / "repro", TABLE)
    assert main(["show", str(repro)]) == 0
    assert capsys.readouterr().out == (f"wrote {repro / 'figures' / 'results.png'} "
                                       "(our test errors next to the paper's)\n")
    check_png(repro / "figures" / "results.png", plots.results_figure_size(TABLE))


def test_show_notes_a_corrupt_checkpoint_and_still_draws(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", model=tiny_st_model(), n=3)
    (run / "checkpoint.json").write_text("garbage")
    assert main(["show", str(run)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("note: the checkpoint does not load"), err
    assert (run / "figures" / "evolution.gif").is_file()


@pytest.mark.parametrize("setup,args,match", [
    (None, ["{TMP}/missing"], r"'.*missing': is not a directory"),
    ("empty", ["{TMP}/empty"], r"is neither a run directory .* nor a reproduction directory"),
    ("run", ["{TMP}/run", "-o", "{TMP}/run/config.json"], r"--out: .* is not a directory"),
])
def test_show_bad_input(tmp_path, capsys, setup, args, match):
    if setup == "empty":
        (tmp_path / "empty").mkdir()
    if setup == "run":
        make_run_dir(tmp_path / "run", model=None, n=2)
    rc = main(["show", *[a.replace("{TMP}", str(tmp_path)) for a in args]])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("stnkit show: error: "), err
    assert __import__("re").search(match, err[0]), err[0]
    assert not any(tmp_path.rglob("figures"))


def test_show_bad_flag_value_exits_2_with_the_show_usage(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["show", str(tmp_path), "-n", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("usage: stnkit show "), err
    assert "argument -n/--num-samples: expected a positive integer, got '0'" in err, err


def test_show_quiet_prints_nothing_and_still_draws(tmp_path, capsys):
    repro = make_repro_dir(tmp_path / "repro", TABLE)
    assert main(["show", str(repro), "-q"]) == 0
    assert capsys.readouterr().out == ""
    check_png(repro / "figures" / "results.png", plots.results_figure_size(TABLE))
