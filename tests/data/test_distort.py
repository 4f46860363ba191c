"""The distorted-MNIST generators: shapes, labels, recorded transforms, geometry, ranges,
placement inside the canvas, determinism, bad arguments."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stnkit.data import VARIANTS, distort, generate, ink_boxes, load_mnist, resolve_params
from stnkit.ops.grids import tps_grid, tps_lattice

N = 400  # samples per variant in these tests (the embedded test split has 2000)


@pytest.fixture(scope="module")
def source():
    images, labels = load_mnist("test", root="embedded")
    return images.numpy(), labels.numpy()


@pytest.fixture(scope="module")
def samples(source):
    """variant -> (images, labels, transforms) of samples 0..N-1 of the test split, seed 0."""
    x, y = source
    return {v: distort(v, x, y, np.arange(N), seed=0, split="test") for v in VARIANTS}


def _border(image: np.ndarray) -> np.ndarray:
    return np.concatenate([image[..., 0, :], image[..., -1, :], image[..., :, 0],
                           image[..., :, -1]], axis=-1)


def _paste(canvas, patch, x, y):
    h, w = patch.shape
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, canvas.shape[1]), min(y + h, canvas.shape[0])
    region = canvas[y0:y1, x0:x1]
    np.maximum(region, patch[y0 - y:y1 - y, x0 - x:x1 - x], out=region)


def _rebuild_clutter(canvas, x, params, k, crop):
    for j, (cx, cy), (px, py) in zip(params["clutter_source"][k], params["clutter_crop"][k],
                                     params["clutter_position"][k]):
        _paste(canvas, x[j, cy:cy + crop, cx:cx + crop], int(px), int(py))


# --------------------------------------------------------------------------- shapes, labels


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_shapes_and_dtypes(samples, variant):
    images, labels, params = samples[variant]
    c, s, _ = VARIANTS[variant].image_size()
    assert images.shape == (N, c, s, s) and images.dtype == np.uint8
    assert labels.shape == (N,) and labels.dtype == np.int64
    assert 0 <= labels.min() and labels.max() < VARIANTS[variant].num_classes
    assert all(v.shape[0] == N for v in params.values()), {k: v.shape for k, v in params.items()}
    assert images.max() > 200, "no ink"


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "addition"])
def test_labels_preserved(samples, source, variant):
    _, y = source
    _, labels, params = samples[variant]
    assert np.array_equal(labels, y[:N])
    if variant == "colocalisation":
        for k in range(N):
            src = params["sources"][k][params["sources"][k] >= 0]
            assert src[0] == k and len(set(src.tolist())) == len(src)
            assert (y[src] == labels[k]).all(), "instances of another class"


def test_addition_labels_are_sums(samples, source):
    _, y = source
    images, labels, params = samples["addition"]
    partner = params["partner"]
    assert (partner != np.arange(N)).all() and partner.min() >= 0 and partner.max() < len(y)
    assert np.array_equal(labels, y[:N] + y[partner])
    assert VARIANTS["addition"].num_classes == 19 and labels.max() <= 18
    assert len(set(partner.tolist())) > N // 2, "partners not spread over the split"


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("variant", ["R", "RTS", "P", "T", "addition"])
def test_images_match_opencv_warp_of_the_recorded_pixel_matrix(samples, source, variant):
    """OpenCV (fixed-point bilinear, 1/32 px) warps by the recorded pixel matrix agree with
    ours to rounding: at most 2 grey levels (observed: 1), never a misplaced pixel."""
    x, _ = source
    images, _, params = samples[variant]
    s = images.shape[-1]
    worst, total, count = 0, 0, 0
    for k in range(0, N, 4):
        digits = [k, params["partner"][k]] if variant == "addition" else [k]
        mats = params["matrix"][k] if variant == "addition" else params["matrix"][k][None]
        for ch, (j, m) in enumerate(zip(digits, mats)):
            if m.shape == (3, 3):
                ref = cv2.warpPerspective(x[j], m, (s, s), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            else:
                ref = cv2.warpAffine(x[j], m, (s, s), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            diff = np.abs(ref.astype(int) - images[k, ch].astype(int))
            worst, total, count = max(worst, diff.max()), total + diff.sum(), count + diff.size
    assert worst <= 2, f"{variant}: max |ours - OpenCV| = {worst} grey levels"
    assert total / count < 0.01, f"{variant}: mean |ours - OpenCV| = {total / count}"


@pytest.mark.parametrize("variant", ["R", "RTS", "addition"])
def test_rotation_convention_is_opencv(samples, variant):
    """Positive angles turn the digit counter-clockwise as displayed (cv2's convention)."""
    _, _, p = samples[variant]
    angle = p["angle"].reshape(-1)
    scale = p.get("scale", np.ones_like(p["angle"])).reshape(-1)
    matrix = p["matrix"].reshape(-1, 2, 3)
    for a, sc, m in zip(angle[:50], scale[:50], matrix[:50]):
        ref = cv2.getRotationMatrix2D((13.5, 13.5), float(a), float(sc))
        assert np.allclose(m[:, :2], ref[:, :2], atol=1e-12), (a, m, ref)
    if "center" in p:  # the digit's centre lands on the recorded position
        centre = p["center"].reshape(-1, 2)
        assert np.allclose(np.einsum("bij,j->bi", matrix, [13.5, 13.5, 1]), centre)


def _grid_sample(x, grid):
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@pytest.mark.parametrize("variant", ["R", "RTS", "P", "E", "T", "addition"])
def test_theta_reproduces_the_image_with_torch_grid_sample(samples, source, variant):
    """The recorded normalised theta (src_points for E) is what was applied."""
    x, _ = source
    images, _, p = samples[variant]
    s = images.shape[-1]
    if variant == "addition":
        digits = np.stack([np.arange(N), p["partner"]], 1).reshape(-1)
        theta = torch.from_numpy(p["theta"].reshape(-1, 2, 3))
        expected = images.reshape(-1, s, s)
    else:
        digits, expected = np.arange(N), images[:, 0]
        theta = torch.from_numpy(p["src_points" if variant == "E" else "theta"])
    inp = torch.from_numpy(x[digits].astype(np.float32) / 255)[:, None]
    if variant == "E":
        grid = tps_grid(theta, (s, s))
    elif variant == "P":
        base = torch.stack(torch.meshgrid(*(torch.linspace(-1 + 1 / s, 1 - 1 / s, s),) * 2,
                                          indexing="xy") + (torch.ones(s, s),), -1)  # (s,s,3)
        uvw = torch.einsum("bij,hwj->bhwi", theta, base)
        grid = torch.where(uvw[..., 2:] > 0, uvw[..., :2] / uvw[..., 2:], torch.nan)
        grid = torch.nan_to_num(grid, nan=-10.0)  # behind the camera: outside
    else:
        grid = F.affine_grid(theta, (len(theta), 1, s, s), align_corners=False)
    ref = torch.round(_grid_sample(inp, grid)[:, 0].clamp(0, 1) * 255).numpy().astype(int)
    diff = np.abs(ref - expected.astype(int))
    assert diff.max() <= 1, f"{variant}: max difference {diff.max()} grey levels"


def test_elastic_source_points_follow_the_definition(samples):
    _, _, p = samples["E"]
    lattice = tps_lattice(16, dtype=torch.float64).numpy()
    src = lattice[None] / p["scale"][:, None, None] + p["offsets"] * 2 / 28
    assert np.allclose(p["src_points"], src, atol=1e-6)


@pytest.mark.parametrize(("variant", "params"), [
    ("R", {"angle": (0, 0)}),
    ("P", {"scale": (1, 1), "corner_sigma": 0}),
    ("E", {"scale": (1, 1), "control_sigma": 0}),
])
def test_zero_distortion_is_the_identity(source, variant, params):
    x, _ = source
    images, _, _ = distort(variant, x, x[:, 0, 0], np.arange(64), params=params)
    diff = np.abs(images[:, 0].astype(int) - x[:64].astype(int))
    assert diff.max() <= 1, f"{variant}: identity changed pixels by {diff.max()}"


# --------------------------------------------------------------------------- ranges


def _quarters(values, lo, hi):
    return np.histogram(values, bins=4, range=(lo, hi))[0] / len(values)


def test_parameter_ranges_r_rts(samples):
    a = samples["R"][2]["angle"]
    assert -90 <= a.min() and a.max() <= 90
    # uniform: each quarter holds 1/4 +- 0.08 (SE 0.022 for N=400)
    assert np.all(np.abs(_quarters(a, -90, 90) - 0.25) < 0.08), _quarters(a, -90, 90)
    p = samples["RTS"][2]
    assert -45 <= p["angle"].min() and p["angle"].max() <= 45
    assert 0.7 <= p["scale"].min() and p["scale"].max() <= 1.2
    assert np.all(np.abs(_quarters(p["scale"], 0.7, 1.2) - 0.25) < 0.08)
    q = samples["addition"][2]
    assert -45 <= q["angle"].min() and q["angle"].max() <= 45 and q["angle"].shape == (N, 2)
    assert 0.7 <= q["scale"].min() and q["scale"].max() <= 1.2


def test_parameter_ranges_p_e(samples):
    p = samples["P"][2]
    assert 0.75 <= p["scale"].min() and p["scale"].max() <= 1.0
    # N(0, 5 px) per corner coordinate (folded draws redrawn: std a little under 5);
    # 3200 values: SE of the std 0.06, of the mean 0.09
    assert abs(p["corner_offsets"].std() - 5.0) < 0.4, p["corner_offsets"].std()
    assert abs(p["corner_offsets"].mean()) < 0.4, p["corner_offsets"].mean()
    e = samples["E"][2]
    assert 0.75 <= e["scale"].min() and e["scale"].max() <= 1.0
    assert e["offsets"].shape == (N, 16, 2)
    # N(0, 1.5 px): 12800 values, SE of the std 0.009, of the mean 0.013
    assert abs(e["offsets"].std() - 1.5) < 0.06, e["offsets"].std()
    assert abs(e["offsets"].mean()) < 0.06, e["offsets"].mean()


def test_projective_corners_never_fold(samples):
    corners = samples["P"][2]["corners"]  # (N, 4, 2)
    edges = np.roll(corners, -1, axis=1) - corners
    nxt = np.roll(edges, -1, axis=1)
    turns = edges[..., 0] * nxt[..., 1] - edges[..., 1] * nxt[..., 0]
    assert (turns > 0).all()



def test_projective_digits_keep_their_ink_on_the_canvas(samples, source):
    """N(0, 5 px) corner moves shrink or stretch a digit but rarely push ink off the 28 x 28
    canvas: warp each digit by its recorded matrix onto a canvas three times as large (with
    OpenCV) and measure the share of the ink inside the 28 x 28 window. Measured on these 400
    digits: median 1.00, 5th percentile 0.92, 4.5 % of digits lose over 10 %."""
    x, _ = source
    matrices = samples["P"][2]["matrix"]
    shift = np.array([[1.0, 0, 28], [0, 1, 28], [0, 0, 1]])
    inside = []
    for k in range(N):
        big = cv2.warpPerspective(x[k].astype(np.float32), shift @ matrices[k], (84, 84),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        inside.append(big[28:56, 28:56].sum() / big.sum())
    inside = np.array(inside)
    assert np.median(inside) > 0.99, np.median(inside)
    assert (inside < 0.9).mean() < 0.08, (inside < 0.9).mean()

def test_parameter_ranges_clutter_and_instances(samples):
    tc = samples["TC"][2]
    assert tc["clutter_source"].shape == (N, 6)
    assert (tc["clutter_source"] != np.arange(N)[:, None]).all(), "clutter from the digit itself"
    assert tc["clutter_crop"].min() >= 0 and tc["clutter_crop"].max() <= 22
    assert tc["clutter_position"].min() >= 0 and tc["clutter_position"].max() <= 54
    co = samples["colocalisation"][2]
    assert set(co["count"].tolist()) == {2, 3, 4, 5, 6}
    assert co["clutter_source"].shape == (N, 16)


# --------------------------------------------------------------------------- placement


@pytest.mark.parametrize("variant", ["RTS", "T", "addition"])
def test_digit_stays_inside_the_canvas(samples, variant):
    images, _, p = samples[variant]
    s = images.shape[-1]
    boxes = p["box"].reshape(-1, 4)
    flat = images.reshape(-1, s, s)
    # recorded placement: the ink's bilinear support keeps a 1 px margin from the edges
    assert boxes[:, :2].min() >= 0.5 - 1e-9 and boxes[:, 2:].max() <= s - 1.5 + 1e-9
    # the pictures: nothing on the border rows/columns, all ink inside the recorded box
    assert _border(flat).max() == 0, "ink cut at the border"
    for image, (x0, y0, x1, y1) in zip(flat, boxes):
        rows, cols = np.nonzero(image)
        assert x0 < cols.min() and cols.max() < x1 and y0 < rows.min() and rows.max() < y1


def test_translation_is_an_exact_copy(samples, source):
    x, _ = source
    images, _, p = samples["T"]
    ink = ink_boxes(x[:N])
    for k in range(N):
        dx, dy = p["offset"][k]
        expected = np.zeros((60, 60), np.uint8)
        _paste(expected, x[k], int(dx), int(dy))  # the ink is inside, the frame may not be
        assert np.array_equal(images[k, 0], expected)
        k0, r0, k1, r1 = ink[k]
        expected_box = [k0 + dx - 0.5, r0 + dy - 0.5, k1 + dx + 0.5, r1 + dy + 0.5]
        assert np.allclose(p["box"][k], expected_box)


def test_translation_positions_cover_the_canvas(samples):
    box = samples["T"][2]["box"]
    centre = (box[:, :2] + box[:, 2:]) / 2
    assert centre.min() < 15 and centre.max() > 44, "positions not spread over the canvas"


def test_cluttered_images_rebuild_from_the_record(samples, source):
    x, _ = source
    images, _, p = samples["TC"]
    for k in range(0, N, 3):
        canvas = np.zeros((60, 60), np.uint8)
        dx, dy = p["offset"][k]
        _paste(canvas, x[k], int(dx), int(dy))
        _rebuild_clutter(canvas, x, p, k, 6)
        assert np.array_equal(images[k, 0], canvas), k


def test_colocalisation_instances_boxes_and_clutter(samples, source):
    _check_colocalisation(source[0], *samples["colocalisation"])


def test_colocalisation_packed_canvas_uses_the_cell_layout(source):
    """9 digits in 84x84 rarely fit by random placement: the 3x3 cell fallback must keep
    every guarantee."""
    x, y = source
    images, labels, p = distort("colocalisation", x, y, np.arange(40), split="test",
                                params={"instances": (9, 9)})
    assert (p["count"] == 9).all()
    _check_colocalisation(x, images, labels, p)


def _check_colocalisation(x, images, labels, p):
    ink = ink_boxes(x)
    for k in range(len(images)):
        n = p["count"][k]
        src, off, boxes = p["sources"][k][:n], p["offsets"][k][:n], p["boxes"][k][:n]
        assert (p["sources"][k][n:] == -1).all() and np.isnan(p["boxes"][k][n:]).all()
        # boxes: the exact ink boxes, inside the canvas, at least 1 px apart
        expected = np.concatenate([ink[src, :2] - 0.5 + off, ink[src, 2:] + 0.5 + off], 1)
        assert np.allclose(boxes, expected)
        assert boxes[:, :2].min() >= 0.5 and boxes[:, 2:].max() <= 82.5
        for a in range(n):
            for b in range(a + 1, n):
                apart = (boxes[a, 2] + 1 <= boxes[b, 0] or boxes[b, 2] + 1 <= boxes[a, 0]
                         or boxes[a, 3] + 1 <= boxes[b, 1] or boxes[b, 3] + 1 <= boxes[a, 1])
                assert apart, (k, boxes[a], boxes[b])
        canvas = np.zeros((84, 84), np.uint8)
        for j, (ox, oy) in zip(src, off):
            _paste(canvas, x[j], int(ox), int(oy))
        _rebuild_clutter(canvas, x, p, k, 6)
        assert np.array_equal(images[k, 0], canvas), k


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_same_seed_same_bytes_and_each_sample_alone(samples, source, variant):
    x, y = source
    images, labels, params = distort(variant, x, y, np.arange(N), seed=0, split="test")
    ref_images, ref_labels, ref_params = samples[variant]
    assert images.tobytes() == ref_images.tobytes() and np.array_equal(labels, ref_labels)
    for k in (0, 123, N - 1):  # sample i regenerated on its own
        one_images, one_labels, one_params = distort(variant, x, y, [k], seed=0, split="test")
        for name, value in ref_params.items():
            assert np.array_equal(one_params[name][0], value[k], equal_nan=True), name
        diff = np.abs(one_images[0].astype(int) - ref_images[k].astype(int)).max()
        assert diff <= 1 and one_labels[0] == ref_labels[k], (k, diff)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_empty_batch_and_inputs_untouched(source, variant):
    x, y = source
    x_before, y_before = x.copy(), y.copy()
    images, labels, params = distort(variant, x, y, np.zeros(0, np.int64), split="test")
    c, s, _ = VARIANTS[variant].image_size()
    assert images.shape == (0, c, s, s) and labels.shape == (0,)
    assert all(v.shape[0] == 0 for v in params.values())
    distort(variant, x, y, np.arange(8), split="test")
    assert np.array_equal(x, x_before) and np.array_equal(y, y_before)


def test_streams_differ_by_seed_and_split(samples, source):
    x, y = source
    a = samples["RTS"][2]["angle"][:50]
    other_seed = distort("RTS", x, y, np.arange(50), seed=1, split="test")[2]["angle"]
    other_split = distort("RTS", x, y, np.arange(50), seed=0, split="train")[2]["angle"]
    assert not np.allclose(other_seed, a) and not np.allclose(other_split, a)


def test_changed_range_rescales_the_same_draws(samples, source):
    x, y = source
    wide = distort("RTS", x, y, np.arange(50), split="test", params={"angle": (-90, 90)})[2]
    assert np.allclose(wide["angle"], 2 * samples["RTS"][2]["angle"][:50])


@pytest.mark.parametrize("variant", ["RTS", "TC"])
def test_byte_identical_across_worker_counts(variant):
    one = generate(variant, "test", root="embedded", indices=np.arange(700), workers=1)
    two = generate(variant, "test", root="embedded", indices=np.arange(700), workers=2)
    assert one[0].tobytes() == two[0].tobytes() and np.array_equal(one[1], two[1])
    for name in one[2]:
        assert one[2][name].tobytes() == two[2][name].tobytes(), name


# --------------------------------------------------------------------------- errors


def test_bad_arguments(source):
    x, y = source
    with pytest.raises(ValueError, match=r"distort: expected variant one of 'R', 'RTS', 'P', "
                                         r"'E', 'T', 'TC', 'addition', 'colocalisation', got 'X'"):
        distort("X", x, y, [0])
    with pytest.raises(ValueError, match=r"distort: expected split one of 'train', 'test', "
                                         r"got 'val'"):
        distort("R", x, y, [0], split="val")
    with pytest.raises(TypeError, match=r"distort: expected seed an int, got float \(1.5\)"):
        distort("R", x, y, [0], seed=1.5)
    with pytest.raises(TypeError, match=r"distort: expected seed an int, got bool"):
        distort("R", x, y, [0], seed=True)
    with pytest.raises(TypeError, match=r"distort: expected seed an int, got str"):
        distort("R", x, y, [0], seed="0")
    with pytest.raises(ValueError, match=r"distort: expected seed an int in \[0, 2\*\*63\), "
                                         r"got -1"):
        distort("R", x, y, [0], seed=-1)
    with pytest.raises(ValueError, match=r"distort: expected images a uint8 array of shape "
                                         r"\(N, 28, 28\), got float32"):
        distort("R", x.astype(np.float32), y, [0])
    with pytest.raises(ValueError, match=r"distort: expected indices in \[0, 2000\), got values "
                                         r"in \[0, 2000\]"):
        distort("R", x, y, [0, 2000])


@pytest.mark.parametrize(("variant", "params", "error", "match"), [
    ("RTS", {"shear": 1}, ValueError, r"expected params names among size, angle, scale, "
                                      r"margin for variant 'RTS', got 'shear'"),
    ("RTS", {"angle": (5, 1)}, ValueError, r"params\['angle'\] a \(low, high\) pair with "
                                           r"low <= high, got \(5, 1\)"),
    ("RTS", {"scale": (0, 1)}, ValueError, r"0 < low <= high"),
    ("RTS", {"angle": 5}, TypeError, r"params\['angle'\] a \(low, high\) pair, got 5"),
    ("RTS", {"angle": (0, float("nan"))}, ValueError, r"a finite number"),
    ("R", {"size": 10}, ValueError, r"params\['size'\] an int in \[28, 1024\], got 10"),
    ("R", {"size": 28.0}, TypeError, r"params\['size'\] an int, got 28.0"),
    ("E", {"control_points": 15}, ValueError, r"a perfect square >= 4, got 15"),
    ("P", {"corner_sigma": -1}, ValueError, r"a number >= 0, got -1"),
    ("colocalisation", {"instances": (2, 10)}, ValueError, r"at most 9 instances in a 84x84"),
    ("TC", {"clutter_size": 30}, ValueError, r"an int in \[1, 28\], got 30"),
])
def test_bad_parameters(variant, params, error, match):
    with pytest.raises(error, match=match):
        resolve_params(variant, params)


def test_parameters_resolve_with_defaults():
    p = resolve_params("RTS", {"angle": [-30, 30]})
    assert p == {"size": 42, "angle": (-30.0, 30.0), "scale": (0.7, 1.2), "margin": 1.0}
    assert VARIANTS["colocalisation"].image_size() == (1, 84, 84)
    assert VARIANTS["addition"].image_size({"size": 64}) == (2, 64, 64)
