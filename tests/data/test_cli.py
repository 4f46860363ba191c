"""``stnkit data``: show (PNG grid), download, generate, info, and one-line errors."""

from __future__ import annotations

import pytest
from PIL import Image

from stnkit.cli import main
from tests.data._helpers import http_server


def test_show_writes_a_png_of_the_expected_size(tmp_path, capsys):
    out = tmp_path / "sub" / "grid.png"
    rc = main(["data", "show", "RTS", "-o", str(out), "--data-dir", "embedded", "--count", "16",
               "--seed", "3"])
    assert rc == 0
    # 4 x 4 cells of 42 px zoomed x3 = 126 px; 4 px gaps; 14 px label band; 18 px title
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (4 * 126 + 5 * 4,
                                                        18 + 4 * (126 + 14) + 5 * 4)
        assert image.mode == "RGB"
    assert f"wrote {out} (524x598" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["grid.png"]  # no temporary file left


@pytest.mark.parametrize(("variant", "count", "cols", "size"), [
    # addition: 2 channels side by side (2 * 126 + 2 px); 7 samples in 3 columns -> 3 rows
    ("addition", 7, 3, (3 * 254 + 4 * 4, 18 + 3 * (126 + 14) + 4 * 4)),
    # colocalisation: 84 px zoomed x2 = 168 px; 2 samples -> 2 columns, 1 row
    ("colocalisation", 2, None, (2 * 168 + 3 * 4, 18 + 168 + 14 + 2 * 4)),
    # R: 28 px zoomed x4 = 112 px; one sample
    ("R", 1, None, (112 + 2 * 4, 18 + 112 + 14 + 2 * 4)),
])
def test_show_other_variants(tmp_path, variant, count, cols, size):
    out = tmp_path / "grid.png"
    args = ["data", "show", variant, "-o", str(out), "--data-dir", "embedded", "--split",
            "train", "--count", str(count)]
    assert main(args + (["--cols", str(cols)] if cols else [])) == 0
    with Image.open(out) as image:
        assert image.size == size


def test_show_offline_without_data_is_a_one_line_error(tmp_path, capsys):
    rc = main(["data", "show", "T", "-o", str(tmp_path / "g.png"), "--data-dir",
               str(tmp_path / "nothing"), "--offline"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err
    assert err.startswith("stnkit data show: error: load_mnist: ") and "MNIST test file(s)" in err
    assert "offline mode" in err and not (tmp_path / "g.png").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--seed", "-1"], "expected seed an int in [0, 2**63), got -1"),
])
def test_show_bad_values(tmp_path, capsys, args, message):
    rc = main(["data", "show", "R", "-o", str(tmp_path / "g.png"), "--data-dir", "embedded",
               *args])
    assert rc == 1 and message in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--count", "0"], "argument -n/--num-samples/--count: expected a positive integer, got '0'"),
    (["-n", "1025"], "argument -n/--num-samples/--count: expected an int in 1..1024, got '1025'"),
    (["--cols", "0"], "argument --cols: expected a positive integer, got '0'"),
])
def test_show_bad_flag_values_exit_2_with_the_data_show_usage(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        main(["data", "show", "R", "-o", str(tmp_path / "g.png"), "--data-dir", "embedded",
              *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("usage: stnkit data show ") and message in err, err


def test_show_needs_a_png_name(tmp_path, capsys):
    assert main(["data", "show", "R", "-o", str(tmp_path / "g.jpg"), "--data-dir",
                 "embedded"]) == 1
    assert "expected --out to be a .png file" in capsys.readouterr().err


def test_show_unknown_variant_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "show", "Q", "-o", str(tmp_path / "g.png")])
    assert info.value.code == 2 and "invalid choice: 'Q'" in capsys.readouterr().err


def test_download_from_a_local_mirror(mnist_dir, tmp_path, capsys):
    with http_server(mnist_dir) as (url, requests):
        rc = main(["data", "download", "--data-dir", str(tmp_path), "--split", "test",
                   "--mirror", url, "--quiet"])
    assert rc == 0 and len(requests) == 2
    out = capsys.readouterr().out
    assert "test: 10000 digits, verified" in out
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_download_errors(tmp_path, capsys, monkeypatch):
    assert main(["data", "download", "--data-dir", "embedded"]) == 1
    assert "nothing to download" in capsys.readouterr().err
    monkeypatch.setenv("STNKIT_OFFLINE", "1")
    assert main(["data", "download", "--data-dir", str(tmp_path)]) == 1
    assert "offline mode" in capsys.readouterr().err


def test_generate_then_info(tmp_path, capsys, monkeypatch, isolated_env):
    monkeypatch.setenv("STNKIT_DATA", "embedded")
    assert main(["data", "generate", "T", "--split", "test", "--quiet"]) == 0
    assert "generated in" in capsys.readouterr().out
    assert main(["data", "generate", "T", "--split", "test", "--quiet"]) == 0
    assert "cached" in capsys.readouterr().out
    assert main(["data", "info"]) == 0
    out = capsys.readouterr().out
    assert "data directory: embedded ($STNKIT_DATA)" in out
    assert "embedded subset: 6000 train, 2000 test digits" in out
    assert "cached datasets: 1" in out and "T test  seed 0: 2000 samples" in out
    assert str(isolated_env / "stnkit" / "distorted") in out


def test_info_on_a_data_directory(mnist_dir, capsys):
    assert main(["data", "info", "--data-dir", str(mnist_dir), "--verify"]) == 0
    out = capsys.readouterr().out
    assert f"train-images-idx3-ubyte: {mnist_dir / 'train-images-idx3-ubyte.gz'}" in out
    assert "train: 60000 digits, checksums verified" in out
    assert "test: 10000 digits, checksums verified" in out


def test_info_reports_missing_files(tmp_path, capsys):
    assert main(["data", "info", "--data-dir", str(tmp_path)]) == 0
    assert "t10k-labels-idx1-ubyte: missing" in capsys.readouterr().out
