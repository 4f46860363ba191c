"""Image files: read and write round trips, atomic writes, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

Image = pytest.importorskip("PIL.Image")

from stnkit.viz import read_image, write_image  # noqa: E402
from stnkit.viz._deps import require  # noqa: E402
from stnkit.viz.images import ImageReadError, image_format, save_gif  # noqa: E402


@pytest.mark.parametrize("mode,channels", [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)])
def test_png_round_trip_is_exact(tmp_path, mode, channels):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(7, 11, channels), dtype=np.uint8)
    src = tmp_path / "a.png"
    Image.fromarray(array.squeeze(2) if channels == 1 else array, mode).save(src)
    x = read_image(src)
    assert x.dtype == torch.float32 and x.shape == (channels, 7, 11)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    out = write_image(tmp_path / "b.png", x)
    with Image.open(out) as im:
        assert im.mode == mode and im.size == (11, 7)
        np.testing.assert_array_equal(np.asarray(im).reshape(7, 11, channels), array)


def test_palette_bilevel_and_sixteen_bit_inputs(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2] = [255, 0, 0]
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (3, 4, 4)
    Image.fromarray(np.eye(4, dtype=bool)).save(tmp_path / "b.png")
    b = read_image(tmp_path / "b.png")
    assert b.shape == (1, 4, 4) and torch.equal(b[0], torch.eye(4))
    Image.fromarray(np.full((3, 3), 65535, np.uint16)).save(tmp_path / "i16.png")
    assert torch.equal(read_image(tmp_path / "i16.png"), torch.ones(1, 3, 3))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied(tmp_path, suffix):
    """EXIF orientation 6 means "rotate 90 degrees clockwise to display": the pixels come out
    rotated so, not merely with swapped dimensions (PNG exactly; JPEG within its loss)."""
    array = np.zeros((4, 6, 3), np.uint8)  # wide, every pixel different, smooth for JPEG
    array[..., 0] = np.arange(6) * 40
    array[..., 1] = np.arange(4)[:, None] * 60
    array[..., 2] = 128
    img = Image.fromarray(array)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    jpeg = {"quality": 100, "subsampling": 0} if suffix == ".jpg" else {}  # 4:4:4
    img.save(tmp_path / f"o{suffix}", exif=exif, **jpeg)
    got = (read_image(tmp_path / f"o{suffix}") * 255).round().to(torch.int32).permute(1, 2, 0)
    expected = np.rot90(array, k=-1).astype(np.int32)  # tall, as viewers show it
    assert tuple(got.shape) == expected.shape == (6, 4, 3)
    err = int(np.abs(got.numpy() - expected).max())
    tol = 0 if suffix == ".png" else 8  # JPEG at quality 100, no chroma subsampling
    assert err <= tol, f"{err=} {tol=}"
    # the same pixels without the rotation are far off: the test sees the orientation
    assert int(np.abs(got.numpy() - np.rot90(array, k=1)).max()) > 3 * tol + 20


def test_write_uint8_and_formats(tmp_path):
    x = torch.randint(0, 256, (3, 5, 6), dtype=torch.uint8)
    for name, fmt in [("a.jpg", "JPEG"), ("a.bmp", "BMP"), ("a.tif", "TIFF"), ("a.webp", "WEBP")]:
        write_image(tmp_path / name, x)
        with Image.open(tmp_path / name) as im:
            assert im.format == fmt and im.size == (6, 5)
    write_image(tmp_path / "t.tif", x)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "t.tif")),
                                  x.permute(1, 2, 0).numpy())


def test_write_rounds_and_clips(tmp_path):
    x = torch.tensor([[[-0.5, 0.0, 0.4 / 255, 1.6 / 255, 1.0, 7.0, float("nan")]]],
                     dtype=torch.float64)
    write_image(tmp_path / "c.png", x)
    got = np.asarray(Image.open(tmp_path / "c.png"))
    assert got.tolist() == [[0, 0, 0, 2, 255, 255, 0]]


def test_write_errors(tmp_path):
    with pytest.raises(ValueError, match=r"write_image: expected path to end in one of"):
        write_image(tmp_path / "x.gifx", torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"write_image: expected image to have 1, 2, 3 or 4"):
        write_image(tmp_path / "x.png", torch.zeros(5, 2, 2))
    with pytest.raises(ValueError, match=r"write_image: expected image of shape \(\*, H, W\)"):
        write_image(tmp_path / "x.png", torch.zeros(2, 2))
    with pytest.raises(TypeError, match=r"write_image: expected image to be floating or uint8"):
        write_image(tmp_path / "x.png", torch.zeros(1, 2, 2, dtype=torch.int32))
    with pytest.raises(OSError, match=r"cannot write .*x\.png.*No such file"):
        write_image(tmp_path / "missing" / "x.png", torch.zeros(1, 2, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert image_format("A.JPG") == "JPEG"


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def boom(self, fp, format=None, **params):
        with open(fp, "wb") as f:
            f.write(b"half")
        raise ValueError("encoder exploded")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(ValueError, match="encoder exploded"):
        write_image(tmp_path / "x.png", torch.zeros(1, 2, 2))
    assert list(tmp_path.iterdir()) == []


def test_read_errors(tmp_path):
    with pytest.raises(ImageReadError, match=r"read_image: expected path .* \(no such file\)"):
        read_image(tmp_path / "none.png")
    with pytest.raises(ImageReadError, match=r"\(a directory\)"):
        read_image(tmp_path)
    (tmp_path / "t.png").write_text("text")
    with pytest.raises(ValueError, match=r"\(not an image format Pillow reads\)"):
        read_image(tmp_path / "t.png")


def test_errors_raised_on_purpose_are_stnkit_errors(tmp_path, monkeypatch):
    """The CLI shortens exactly the StnkitErrors: a bad image file is one (a file error, and
    a ValueError as before), so is a missing optional package (and an ImportError)."""
    import sys

    from stnkit._checks import StnkitError, StnkitFileError

    with pytest.raises(StnkitFileError) as e:
        read_image(tmp_path / "none.png")
    assert isinstance(e.value, ValueError) and isinstance(e.value, ImageReadError)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(StnkitError) as e:
        require("matplotlib")
    assert isinstance(e.value, ImportError)


def test_gif_frames_and_palette(tmp_path):
    frames = [np.full((6, 8, 3), v, np.uint8) for v in (0, 100, 200)]
    save_gif(tmp_path / "a.gif", frames, duration_ms=[100, 100, 400])
    with Image.open(tmp_path / "a.gif") as im:
        assert im.format == "GIF" and im.size == (8, 6) and im.n_frames == 3
        values = []
        for i in range(3):
            im.seek(i)
            values.append(int(np.asarray(im.convert("RGB"))[0, 0, 0]))
    assert values == [0, 100, 200]
    with pytest.raises(ValueError, match=r"save_gif: expected frames all of shape"):
        save_gif(tmp_path / "b.gif", [frames[0], np.zeros((5, 8, 3), np.uint8)])
    with pytest.raises(ValueError, match=r"save_gif: expected frames at least one frame"):
        save_gif(tmp_path / "b.gif", [])
    assert not (tmp_path / "b.gif").exists()


def test_missing_extra_names_the_install_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"needs matplotlib.*pip install 'stnkit\[viz\]'"):
        require("matplotlib")
    from stnkit.viz import plot_curves

    with pytest.raises(ImportError, match=r"pip install 'stnkit\[viz\]'"):
        plot_curves("never.png", [])
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(ImportError, match=r"needs pillow"):
        require("PIL.Image")
