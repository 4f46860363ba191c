"""`stnkit warp`: the same pictures as OpenCV for the same pixel matrix, and clear failures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

cv2 = pytest.importorskip("cv2")
Image = pytest.importorskip("PIL.Image")

from stnkit.cli import main  # noqa: E402
from stnkit.ops.transforms import pixel_affine  # noqa: E402

# OpenCV interpolates bilinearly in fixed point (coordinates to 1/32 pixel, weights to 1/2^15)
# and rounds; we interpolate in float32 and round. On images whose neighbouring pixels differ
# by at most ~100 grey levels the two agree to within 1 grey level (the bar).
TOL = 1


def smooth_image(h: int, w: int, channels: int, seed: int = 0) -> np.ndarray:
    """uint8 (h, w) or (h, w, 3): random values on a coarse lattice, cubic-upsampled."""
    rng = np.random.default_rng(seed)
    base = rng.random((h // 5 + 2, w // 5 + 2, channels))
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 1) * 255
    return img.round().astype(np.uint8).reshape(h, w) if channels == 1 else \
        img.round().astype(np.uint8).reshape(h, w, channels)


def save(path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def load(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def interior(matrix: np.ndarray, size_in, size_out, margin: float = 1.0) -> np.ndarray:
    """Output pixels whose source point (OpenCV matrix, input -> output) lies at least
    ``margin`` pixels inside the input: (h_out, w_out) bool."""
    (h, w), (ho, wo) = size_in, size_out
    m = matrix if matrix.shape == (3, 3) else np.vstack([matrix, [0, 0, 1]])
    yy, xx = np.mgrid[0:ho, 0:wo]
    src = np.linalg.inv(m) @ np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    x, y = src[0] / src[2], src[1] / src[2]
    ok = (src[2] > 0) & (x >= margin) & (x <= w - 1 - margin)
    ok &= (y >= margin) & (y <= h - 1 - margin)
    return ok.reshape(ho, wo)


def max_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> int:
    assert a.shape == b.shape, f"{a.shape} != {b.shape}"
    d = np.abs(a.astype(np.int32) - b.astype(np.int32))
    if d.ndim == 3:
        d = d.max(axis=2)
    return int(d[mask].max())


def run_warp(*args: str) -> int:
    return main(["warp", *args])


# ----------------------------------------------------------------------------- OpenCV agreement


@pytest.mark.parametrize("deg", [30.0, -75.0, 90.0, 180.0, 12.5])
def test_rotate_matches_opencv_rotation_matrix_non_square(tmp_path, deg):
    img = smooth_image(37, 53, 1)
    src, out = save(tmp_path / "in.png", img), tmp_path / "out.png"
    assert run_warp(src, "-o", str(out), f"--rotate={deg}") == 0
    h, w = img.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), deg, 1.0)
    ref = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR)
    ours = load(out)
    mask = interior(m, (h, w), (h, w))
    assert mask.sum() > 0.3 * h * w
    diff = max_diff(ours, ref, mask)
    assert diff <= TOL, f"{deg=}: max difference {diff} grey levels"


def test_rotate_and_scale_match_get_rotation_matrix(tmp_path):
    img = smooth_image(48, 31, 3, seed=1)
    src, out = save(tmp_path / "in.png", img), tmp_path / "out.png"
    assert run_warp(src, "-o", str(out), "--rotate", "-40", "--scale", "1.3") == 0
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), -40, 1.3)
    ref = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR)
    diff = max_diff(load(out), ref, interior(m, (h, w), (h, w)))
    assert diff <= TOL, f"max difference {diff}"


def test_simple_flags_compose_in_the_documented_order(tmp_path):
    """shear, then scale, then rotate about the centre, then translate; centre -> centre."""
    img = smooth_image(40, 56, 3, seed=2)
    h, w = img.shape[:2]
    ho, wo = 50, 45
    src, out = save(tmp_path / "in.png", img), tmp_path / "out.png"
    assert run_warp(src, "-o", str(out), "--rotate", "25", "--scale", "0.8", "--shear", "0.2",
                    "-0.1", "--translate", "3", "-2.5", "--size", f"{ho}x{wo}") == 0
    # Built independently: OpenCV's rotation+scale about the input centre, applied after the
    # shear about the input centre, then moved to the output centre and translated.
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    shear = np.array([[1, 0.2, 0], [-0.1, 1, 0], [0, 0, 1]], dtype=np.float64)
    shear[:2, 2] = c - shear[:2, :2] @ c  # about the centre
    rs = np.vstack([cv2.getRotationMatrix2D(tuple(c), 25, 0.8), [0, 0, 1]])
    move = np.array([[1, 0, (wo - 1) / 2 - c[0] + 3], [0, 1, (ho - 1) / 2 - c[1] - 2.5], [0, 0, 1]])
    m = (move @ rs @ shear)[:2]
    np.testing.assert_allclose(
        pixel_affine((h, w), (ho, wo), degrees=25, scale=0.8, shear=(0.2, -0.1),
                     translate=(3, -2.5), dtype=torch.float64)[0].numpy(), m, atol=1e-12)
    ref = cv2.warpAffine(img, m, (wo, ho), flags=cv2.INTER_LINEAR)
    ours = load(out)
    assert ours.shape == (ho, wo, 3)
    diff = max_diff(ours, ref, interior(m, (h, w), (ho, wo)))
    assert diff <= TOL, f"max difference {diff}"


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [None, (23, 61), (70, 44)])
def test_matrix_matches_warp_affine(tmp_path, channels, size):
    img = smooth_image(33, 47, channels, seed=3)
    h, w = img.shape[:2]
    ho, wo = size or (h, w)
    m = np.array([[0.9, -0.25, 6.0], [0.3, 1.1, -4.0]])
    src, out = save(tmp_path / "in.png", img), tmp_path / "out.png"
    args = [src, "-o", str(out), "--matrix", ",".join(str(v) for v in m.ravel())]
    if size:
        args += ["--size", f"{ho}x{wo}"]
    assert run_warp(*args) == 0
    ref = cv2.warpAffine(img, m, (wo, ho), flags=cv2.INTER_LINEAR)
    ours = load(out)
    assert ours.shape == ref.shape
    mask = interior(m, (h, w), (ho, wo))
    assert mask.sum() > 100
    diff = max_diff(ours, ref, mask)
    assert diff <= TOL, f"max difference {diff}"


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [None, (52, 39)])
def test_homography_matches_warp_perspective(tmp_path, channels, size):
    img = smooth_image(44, 58, channels, seed=4)
    h, w = img.shape[:2]
    ho, wo = size or (h, w)
    hm = np.array([[0.95, 0.12, 2.0], [-0.08, 1.05, 3.0], [0.0012, -0.0021, 1.0]])
    src, out = save(tmp_path / "in.png", img), tmp_path / "out.png"
    args = [src, "-o", str(out), "--homography", ",".join(repr(float(v)) for v in hm.ravel())]
    if size:
        args += ["--size", f"{ho}x{wo}"]
    assert run_warp(*args) == 0
    ref = cv2.warpPerspective(img, hm, (wo, ho), flags=cv2.INTER_LINEAR)
    mask = interior(hm, (h, w), (ho, wo))
    assert mask.sum() > 100
    diff = max_diff(load(out), ref, mask)
    assert diff <= TOL, f"max difference {diff}"


def test_homography_given_up_to_sign_gives_the_same_picture(tmp_path):
    img = smooth_image(30, 30, 1, seed=5)
    hm = np.array([[1.0, 0.1, 1.0], [0.05, 0.9, -2.0], [0.001, 0.002, 1.0]])
    src = save(tmp_path / "in.png", img)
    for name, m in (("pos.png", hm), ("neg.png", -2.0 * hm)):
        assert run_warp(src, "-o", str(tmp_path / name),
                        "--homography=" + ",".join(repr(float(v)) for v in m.ravel())) == 0
    np.testing.assert_array_equal(load(tmp_path / "pos.png"), load(tmp_path / "neg.png"))


@pytest.mark.parametrize("padding,border,align", [
    ("border", cv2.BORDER_REPLICATE, False),
    ("reflection", cv2.BORDER_REFLECT, False),       # mirror about the outer pixel edges
    ("reflection", cv2.BORDER_REFLECT_101, True),    # mirror about the corner pixel centres
])
def test_padding_matches_opencv_border_modes_everywhere(tmp_path, padding, border, align):
    img = smooth_image(29, 41, 1, seed=6)
    h, w = img.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 33, 0.6)
    src, out = save(tmp_path / "in.png", img), tmp_path / "out.png"
    args = [src, "-o", str(out), "--rotate", "33", "--scale", "0.6", "--padding", padding]
    if align:
        args.append("--align-corners")
    assert run_warp(*args) == 0
    ref = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=border)
    diff = max_diff(load(out), ref, np.ones((h, w), bool))
    assert diff <= TOL, f"{padding}: max difference {diff} (whole image)"


@pytest.mark.parametrize("align", [False, True])
def test_theta_is_the_normalised_grid_sample_transform(tmp_path, align):
    img = smooth_image(26, 38, 1, seed=7)
    theta = torch.tensor([[0.7, -0.3, 0.1], [0.2, 0.8, -0.15]], dtype=torch.float64)
    src, out = save(tmp_path / "in.png", img), tmp_path / "out.png"
    args = [src, "-o", str(out), "--theta", ",".join(str(v) for v in theta.ravel().tolist()),
            "--size", "30x20"]
    if align:
        args.append("--align-corners")
    assert run_warp(*args) == 0
    x = torch.from_numpy(img).double()[None, None] / 255
    grid = F.affine_grid(theta[None], [1, 1, 30, 20], align_corners=align)
    ref = F.grid_sample(x, grid, align_corners=align)[0, 0]
    ref = (ref * 255).round().clamp(0, 255).numpy().astype(np.uint8)
    ours = load(out)
    assert ours.shape == (30, 20)
    diff = int(np.abs(ours.astype(int) - ref.astype(int)).max())
    assert diff <= 1, f"max difference {diff}"  # float32 vs float64 rounding at .5


@pytest.mark.parametrize("mode", ["nearest", "bicubic"])
def test_other_modes_agree_with_grid_sample(tmp_path, mode):
    img = smooth_image(24, 24, 3, seed=8)
    src, out = save(tmp_path / "in.png", img), tmp_path / "out.png"
    assert run_warp(src, "-o", str(out), "--theta", "0.8,0.1,0.05,-0.1,0.9,0", "--mode", mode) == 0
    x = torch.from_numpy(img).double().permute(2, 0, 1)[None] / 255
    theta = torch.tensor([[[0.8, 0.1, 0.05], [-0.1, 0.9, 0.0]]], dtype=torch.float64)
    grid = F.affine_grid(theta, [1, 3, 24, 24], align_corners=False)
    ref = F.grid_sample(x, grid, mode=mode, align_corners=False)[0].permute(1, 2, 0)
    ref = (ref.clamp(0, 1) * 255).round().numpy().astype(np.uint8)
    # Nearest picks a different pixel where float32 and float64 round a coordinate that sits
    # on a half-pixel differently: compare away from those ties.
    pix = ((grid[0] + 1) * 24 - 1) / 2  # (24, 24, 2) source pixel coordinates
    frac = pix - pix.floor()
    mask = ((frac - 0.5).abs() > 1e-3).all(dim=-1).numpy()
    assert mask.sum() > 400
    diff = max_diff(load(out), ref, mask)
    assert diff <= 1, f"{mode}: max difference {diff}"


def test_no_transform_is_the_identity_bit_for_bit(tmp_path):
    img = smooth_image(21, 34, 3, seed=9)
    src, out = save(tmp_path / "in.png", img), tmp_path / "out.png"
    assert run_warp(src, "-o", str(out)) == 0
    np.testing.assert_array_equal(load(out), img)
    assert run_warp(src, "-o", str(out), "--theta", "1,0,0,0,1,0") == 0
    np.testing.assert_array_equal(load(out), img)
    assert run_warp(src, "-o", str(out), "--rotate", "360") == 0
    assert max_diff(load(out), img, np.ones(img.shape[:2], bool)) <= 1


# ----------------------------------------------------------------------------- file formats


@pytest.mark.parametrize("mode,channels", [("L", 1), ("RGB", 3), ("RGBA", 4), ("LA", 2)])
def test_grey_stays_grey_and_colour_stays_colour(tmp_path, mode, channels):
    img = smooth_image(20, 27, channels, seed=10)
    src = tmp_path / "in.png"
    Image.fromarray(img, mode).save(src)
    out = tmp_path / "out.png"
    assert run_warp(str(src), "-o", str(out), "--rotate", "10", "--size", "15x18") == 0
    with Image.open(out) as im:
        assert (im.format, im.mode, im.size) == ("PNG", mode, (18, 15))


@pytest.mark.parametrize("name,fmt", [("out.jpg", "JPEG"), ("out.JPEG", "JPEG"), ("o.png", "PNG")])
@pytest.mark.parametrize("channels,modes", [(1, ("L",)), (3, ("RGB",))])
def test_output_format_follows_the_suffix(tmp_path, name, fmt, channels, modes):
    img = smooth_image(16, 16, channels, seed=11)
    src = save(tmp_path / "in.jpg", img)  # JPEG input too
    out = tmp_path / name
    assert run_warp(src, "-o", str(out), "--scale", "1.5") == 0
    with Image.open(out) as im:
        assert im.format == fmt and im.mode in modes and im.size == (16, 16)


def test_rgba_written_as_jpeg_drops_alpha(tmp_path):
    img = smooth_image(12, 14, 4, seed=12)
    src = tmp_path / "in.png"
    Image.fromarray(img, "RGBA").save(src)
    out = tmp_path / "out.jpg"
    assert run_warp(str(src), "-o", str(out)) == 0
    with Image.open(out) as im:
        assert im.format == "JPEG" and im.mode == "RGB"


def test_sixteen_bit_grey_png_is_read(tmp_path):
    img = (np.linspace(0, 65535, 20 * 30).reshape(20, 30)).astype(np.uint16)
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), img)
    out = tmp_path / "out.png"
    assert run_warp(str(src), "-o", str(out)) == 0
    got = load(out)
    assert got.dtype == np.uint8 and got.shape == (20, 30)
    expect = np.round(img / 65535 * 255).astype(np.uint8)
    assert int(np.abs(got.astype(int) - expect).max()) <= 1


def test_help_states_the_composition_order(capsys):
    with pytest.raises(SystemExit) as e:
        main(["warp", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "first shear, then scale, then rotate, then" in text
    assert "getRotationMatrix2D" in text and "--homography" in text and "--theta" in text


# ----------------------------------------------------------------------------- bad input


def _bad(tmp_path, capsys, args, match):
    """Exit status 1, one line on stderr matching ``match``, no output file nor temp file."""
    out = tmp_path / "out" / "result.png"
    out.parent.mkdir(exist_ok=True)
    rc = main(["warp", *[a.replace("{OUT}", str(out)) for a in args]])
    err = capsys.readouterr().err
    assert rc == 1, f"{rc=} {err=}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("stnkit warp: error: "), err
    assert __import__("re").search(match, lines[0]), f"{match!r} not in {lines[0]!r}"
    assert list(out.parent.iterdir()) == [], "left a file behind"


def _usage(tmp_path, capsys, args, match):
    """A bad flag value: exit status 2 with warp's usage and the message, no output file."""
    out = tmp_path / "out" / "result.png"
    out.parent.mkdir(exist_ok=True)
    with pytest.raises(SystemExit) as e:
        main(["warp", *[a.replace("{OUT}", str(out)) for a in args]])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("usage: stnkit warp "), err
    last = err.strip().splitlines()[-1]
    assert last.startswith("stnkit warp: error: argument "), err
    assert __import__("re").search(match, last), f"{match!r} not in {last!r}"
    assert list(out.parent.iterdir()) == [], "left a file behind"


@pytest.fixture
def image_file(tmp_path):
    return save(tmp_path / "img.png", smooth_image(10, 12, 1))


def test_missing_file(tmp_path, capsys):
    _bad(tmp_path, capsys, [str(tmp_path / "nope.png"), "-o", "{OUT}"], r"nope\.png.*no such file")


def test_directory_as_image(tmp_path, capsys):
    _bad(tmp_path, capsys, [str(tmp_path), "-o", "{OUT}"], r"a directory")


def test_not_an_image(tmp_path, capsys):
    p = tmp_path / "notes.png"
    p.write_text("hello, I am text\n")
    _bad(tmp_path, capsys, [str(p), "-o", "{OUT}"], r"cannot read image .*notes\.png")


def test_truncated_image(tmp_path, capsys):
    p = tmp_path / "cut.png"
    Image.fromarray(smooth_image(64, 64, 3)).save(p)
    p.write_bytes(p.read_bytes()[:200])
    _bad(tmp_path, capsys, [str(p), "-o", "{OUT}"], r"cannot read image .*cut\.png")


@pytest.mark.parametrize("args,match", [
    (["--theta", "1,0,0,0,1"], r"--theta: expected 6 comma-separated numbers, got 5"),
    (["--matrix", "1,0,0,0,1,0,0"], r"--matrix: expected 6 comma-separated numbers, got 7"),
    (["--homography", "1,0,0,0,1,0,0,0"], r"--homography: expected 9 .* got 8"),
    (["--theta", "1,0,x,0,1,0"], r"--theta: expected a number, got 'x'"),
    (["--theta", "1,0,nan,0,1,0"], r"--theta: expected a finite number, got 'nan'"),
    (["--matrix", "1,0,inf,0,1,0"], r"--matrix: expected a finite number, got 'inf'"),
    (["--rotate", "abc"], r"--rotate: expected a number, got 'abc'"),
    (["--rotate", "nan"], r"--rotate: expected a finite number"),
    (["--scale", "0"], r"--scale: expected a positive number, got '0'"),
    (["--scale", "-2"], r"--scale: expected a positive number"),
    (["--translate", "1", "two"], r"--translate: expected a number, got 'two'"),
    (["--shear", "inf", "0"], r"--shear: expected a finite number"),
])
def test_bad_numbers(tmp_path, capsys, image_file, args, match):
    _usage(tmp_path, capsys, [image_file, "-o", "{OUT}", *args], match)


@pytest.mark.parametrize("args", [
    ["--matrix", "1,2,0,2,4,0"],
    ["--matrix", "0,0,5,0,0,5"],
    ["--homography", "1,2,3,2,4,6,1,1,1"],
    ["--theta", "1,1,0,1,1,0"],
    ["--shear", "2", "0.5"],
])
def test_singular_matrix(tmp_path, capsys, image_file, args):
    _bad(tmp_path, capsys, [image_file, "-o", "{OUT}", *args], r"singular")


@pytest.mark.parametrize("size,match", [
    ("0x10", r"--size: expected a positive height and width, got '0x10'"),
    ("10x0", r"--size: expected a positive"),
    ("10", r"--size: expected HxW"),
    ("10x", r"--size: expected HxW"),
    ("axb", r"--size: expected HxW"),
    ("-3x4", r"--size: expected HxW"),
    ("2.5x4", r"--size: expected HxW"),
])
def test_bad_size(tmp_path, capsys, image_file, size, match):
    _usage(tmp_path, capsys, [image_file, "-o", "{OUT}", f"--size={size}"], match)


@pytest.mark.parametrize("quality", ["0", "101", "high"])
def test_bad_quality(tmp_path, capsys, image_file, quality):
    _usage(tmp_path, capsys, [image_file, "-o", "{OUT}", "--quality", quality],
           rf"--quality: expected an int in 1\.\.100, got '{quality}'")


def test_two_kinds_of_transform(tmp_path, capsys, image_file):
    with pytest.raises(SystemExit) as e:
        main(["warp", image_file, "-o", str(tmp_path / "o.png"), "--rotate", "3", "--theta",
              "1,0,0,0,1,0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("usage: stnkit warp "), err
    assert "expected one kind of transform, got --rotate, --theta" in err, err


def test_unknown_output_format(tmp_path, capsys, image_file):
    _bad(tmp_path, capsys, [image_file, "-o", "{OUT}.xyz"], r"unknown image format")


def test_output_directory_missing(tmp_path, capsys, image_file):
    out = tmp_path / "out" / "missing" / "x.png"
    _bad(tmp_path, capsys, [image_file, "-o", str(out)], r"cannot write .*x\.png.*No such file")


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root ignores directory permissions")
def test_output_directory_read_only(tmp_path, capsys, image_file):
    ro = tmp_path / "out"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc = main(["warp", image_file, "-o", str(ro / "x.png")])
        err = capsys.readouterr().err
        assert rc == 1 and "cannot write" in err and "Permission denied" in err, err
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, capsys, image_file,
                                                            monkeypatch):
    out = tmp_path / "keep.png"
    out.write_bytes(b"old")
    from PIL import Image as PILImage

    def boom(self, fp, format=None, **params):
        with open(fp, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PILImage.Image, "save", boom)
    rc = main(["warp", image_file, "-o", str(out), "--rotate", "5"])
    err = capsys.readouterr().err
    assert rc == 1 and "No space left on device" in err, err
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.png", "keep.png"]


def test_bad_flag_values_exit_2_with_usage(capsys, image_file):
    with pytest.raises(SystemExit) as e:
        main(["warp", image_file, "-o", "x.png", "--mode", "cubic"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_negative_values_need_equals_and_then_work(tmp_path, image_file):
    out = tmp_path / "o.png"
    assert main(["warp", image_file, "-o", str(out), "--theta=-1,0,0,0,-1,0"]) == 0
    img = load(image_file)
    np.testing.assert_array_equal(load(out), img[::-1, ::-1])  # 180 degrees about the centre
    assert math.isfinite(float(load(out).mean()))


def test_output_parent_is_a_file(tmp_path, capsys, image_file):
    _bad(tmp_path, capsys, [image_file, "-o", image_file + "/x.png"],
         r"cannot write .*x\.png.*Not a directory")


def test_transparent_pixels_do_not_bleed_their_colour(tmp_path):
    """RGBA is warped premultiplied: at the edge of an opaque blue area next to transparent
    red, half-covered pixels are blue and half transparent, not purple."""
    img = np.zeros((8, 8, 4), np.uint8)
    img[:, :4] = [255, 0, 0, 0]  # transparent red
    img[:, 4:] = [0, 0, 255, 255]  # opaque blue
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(img, "RGBA").save(src)
    assert run_warp(str(src), "-o", str(out), "--translate", "0.5", "0") == 0
    got = load(out)
    edge = got[:, 4]  # reads half of pixel 3 (transparent) and half of pixel 4 (blue)
    assert (np.abs(edge[:, 3].astype(int) - 128) <= 1).all(), edge
    assert (edge[:, 0] == 0).all() and (edge[:, 2] == 255).all(), edge


@pytest.mark.parametrize("command,module", [("warp", "PIL.Image"), ("show", "matplotlib"),
                                            ("demo", "matplotlib")])
def test_missing_viz_extra_is_one_clear_line(tmp_path, capsys, monkeypatch, image_file,
                                             command, module):
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    args = {"warp": [image_file, "-o", str(tmp_path / "o.png")], "show": [str(tmp_path)],
            "demo": ["-o", str(tmp_path / "d")]}[command]
    rc = main([command, *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert f"stnkit {command}: error: " in err[0] and "pip install 'stnkit[viz]'" in err[0], err
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "d").exists()


# ----------------------------------------------------------------------------- output, memory


def test_prints_what_it_wrote_and_quiet_silences_it(tmp_path, capsys, image_file):
    out = tmp_path / "o.png"
    assert run_warp(image_file, "-o", str(out), "--rotate", "5", "--size", "7x9") == 0
    assert capsys.readouterr().out == f"wrote {out} (7x9, grey, simple transform)\n"
    assert run_warp(image_file, "--out", str(out), "--theta", "1,0,0,0,1,0", "-q") == 0
    assert capsys.readouterr().out == ""
    assert load(out).shape == (10, 12)


@pytest.mark.parametrize("size", [f"{2**40}x{2**40}", f"{2**20}x{2**21}"])
def test_output_bigger_than_memory_is_refused_in_one_line(tmp_path, capsys, image_file, size):
    _bad(tmp_path, capsys, [image_file, "-o", "{OUT}", f"--size={size}"],
         r"--size: a \d+x\d+ output of 1 channel\(s\) needs about .* GiB of memory; this "
         r"machine has .* GiB")


def test_the_memory_limit_is_the_machine_not_a_fixed_pixel_count(tmp_path, capsys, image_file,
                                                                 monkeypatch):
    """2**28 pixels was a fixed cap; now the limit follows the machine's memory."""
    import stnkit.cli.warp as cli_warp

    monkeypatch.setattr(cli_warp, "total_memory", lambda: 1000 * 24)  # 24 bytes/pixel, grey
    _bad(tmp_path, capsys, [image_file, "-o", "{OUT}", "--size=20x51"], r"needs about")
    out = tmp_path / "ok.png"
    assert run_warp(image_file, "-o", str(out), "--size=20x50") == 0
    assert load(out).shape == (20, 50)
    monkeypatch.setattr(cli_warp, "total_memory", lambda: 2**50)
    big = 2**14 + 1  # 2**28 + 2**15 + 1 pixels: refused by the old fixed cap, not by memory
    checked = []
    monkeypatch.setattr(cli_warp, "_check_fits_in_memory",
                        lambda size, c: checked.append(size) or (_ for _ in ()).throw(
                            cli_warp.CommandError("stop here")))
    _bad(tmp_path, capsys, [image_file, "-o", "{OUT}", f"--size={big}x{big}"], r"stop here")
    assert checked == [(big, big)]
