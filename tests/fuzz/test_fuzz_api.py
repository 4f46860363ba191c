"""Fuzz the rest of the public surface: grid generators against ``F.affine_grid`` / closed
forms, ``transforms.*`` (builders, compose / invert, pixel matrices), the ``stnkit.nn``
modules, and every public callable fed wrong arguments (a result or a clear StnkitError,
never torch's RuntimeError, an IndexError, a ZeroDivisionError or a crash)."""

import math
import warnings

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from stnkit import nn as snn
from stnkit.ops import affine_grid, projective_grid, sample, tps_grid, warp
from stnkit.ops import transforms as T
from stnkit.ops.grids import tps_lattice
from tests._helpers import assert_close
from tests.fuzz._oracle import (DTYPES, amax, assert_clear_error, eps, fuzz, gen, out_ulp,
                                seeds, work_dtype)

# ---------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------


@fuzz(1)
@given(nd=st.sampled_from([2, 3]), batch=st.integers(1, 3), seed=seeds,
       size=st.lists(st.integers(1, 5), min_size=3, max_size=3), align=st.booleans(),
       dtype=st.sampled_from(DTYPES), scale=st.sampled_from([0.1, 1.0, 1e3]))
def test_affine_grid_matches_torch(nd, batch, seed, size, align, dtype, scale):
    """Values and d grid / d theta against F.affine_grid; tolerance 16 eps |theta| (a dot
    product of 3-4 terms) plus one output ulp."""
    size = tuple(size[:nd])
    theta = (scale * torch.randn(batch, nd, nd + 1, generator=gen(seed),
                                 dtype=torch.float64)).to(dtype)
    t1 = theta.clone().requires_grad_()
    t2 = theta.to(work_dtype(dtype)).requires_grad_()  # F.affine_grid: no CPU float16
    got = affine_grid(t1, size, align_corners=align)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Since version 1.3.0, affine_grid", UserWarning)
        ref = F.affine_grid(t2, (batch, 1, *size), align_corners=align).to(dtype)
    tol = 16 * eps(dtype) + 2 * out_ulp(dtype)
    assert_close(got, ref, tol, "affine_grid")
    g = torch.randn(ref.shape, generator=gen(seed + 1), dtype=torch.float64).to(dtype)
    (a,), (b,) = torch.autograd.grad(got, t1, g), torch.autograd.grad(ref, t2, g.to(t2.dtype))
    b = b.to(dtype)
    assert_close(a, b, tol * math.prod(size), "affine_grid: grad theta")


@fuzz(1)
@given(batch=st.integers(0, 2), seed=seeds, size=st.tuples(st.integers(1, 5),
                                                          st.integers(1, 5)),
       align=st.booleans(), strength=st.sampled_from([0.0, 0.3, 2.0]))
def test_projective_grid_closed_form(batch, seed, size, align, strength):
    """(u / w, v / w) where w > 0, NaN where w <= 0 (float64, against the formula)."""
    h = torch.eye(3, dtype=torch.float64) + strength * torch.randn(
        batch, 3, 3, generator=gen(seed), dtype=torch.float64)
    got = projective_grid(h, size, align_corners=align)
    base = affine_grid(torch.eye(2, 3, dtype=torch.float64)[None], size, align_corners=align)
    pts = torch.cat([base, torch.ones_like(base[..., :1])], -1)  # (1, H, W, 3)
    uvw = torch.einsum("bij,...j->b...i", h, pts[0])
    want = torch.where(uvw[..., 2:] > 0, uvw[..., :2] / uvw[..., 2:], torch.nan)
    assert_close(got, want, 1e-12 * (1 + amax(want.nan_to_num())),
                 "projective_grid", equal_nan=True)


@fuzz(1)
@given(k=st.sampled_from([4, 9, 16, 25]), size=st.tuples(st.integers(1, 6),
                                                        st.integers(1, 6)),
       align=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=seeds)
def test_tps_reproduces_affine_maps(k, size, align, dtype, seed):
    """A TPS through the images of its lattice under an affine map is that affine map."""
    theta = torch.eye(2, 3, dtype=torch.float64) + 0.3 * torch.randn(
        1, 2, 3, generator=gen(seed), dtype=torch.float64)
    lat = tps_lattice(k, dtype=torch.float64)
    src = (lat @ theta[0, :, :2].T + theta[0, :, 2])[None]
    got = tps_grid(src.to(dtype), size, align_corners=align)
    want = affine_grid(theta, size, align_corners=align).to(dtype)
    assert_close(got, want, 1e4 * eps(dtype), "tps of an affine map")


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------

params = st.one_of(st.floats(-1e3, 1e3, allow_nan=False),
                   st.sampled_from([0.0, float("nan"), float("inf"), 1e30]))


@fuzz(1)
@given(angle=params, s=params, tx=params, ty=params, dtype=st.sampled_from(DTYPES),
       as_tensor=st.booleans())
def test_builders_closed_form(angle, s, tx, ty, dtype, as_tensor):
    """similarity / rotation / attention / translation / scaling / shear give their matrix
    (NaN / Inf parameters propagate as IEEE says; no error, no exception)."""
    args = [torch.tensor([v], dtype=dtype) if as_tensor else v for v in (angle, s, tx, ty)]
    got = T.similarity(*args)
    a64, s64 = torch.tensor([angle], dtype=torch.float64), torch.tensor([s], dtype=torch.float64)
    if as_tensor:  # the parameters themselves were rounded to dtype
        a64, s64 = a64.to(dtype).double(), s64.to(dtype).double()
    c, sn = s64 * torch.cos(a64), s64 * torch.sin(a64)
    t = torch.tensor([tx, ty], dtype=torch.float64)
    if as_tensor:
        t = t.to(dtype).double()
    want = torch.stack([torch.cat([c, -sn, t[:1]]), torch.cat([sn, c, t[1:]])])[None]
    want_dtype = dtype if as_tensor else torch.get_default_dtype()
    assert got.shape == (1, 2, 3) and got.dtype == want_dtype
    # cos / sin of |angle| <= 1e3 in float32: 1e3 eps absolute error in the argument
    tol = 1e3 * eps(want_dtype) * (1 + abs(angle) if math.isfinite(angle) else 1) \
        + 2 * out_ulp(want_dtype)
    fin = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got.double()) | ~fin, torch.ones_like(fin)), \
        f"non-finite entries where the formula is finite: {got}"
    w = want.to(want_dtype).double()
    err = (got.double()[fin] - w[fin]).abs()
    scale = max(1.0, w[fin].abs().max().item()) if fin.any() else 1.0
    assert bool((err <= tol * scale).all()), f"similarity: {got} vs {want}"


@fuzz(1)
@given(seed=seeds, kind=st.sampled_from(["affine", "affine3d", "projective"]),
       batch=st.integers(0, 3), dtype=st.sampled_from(DTYPES),
       singular=st.booleans(), special=st.sampled_from([None, float("nan"), float("inf")]))
def test_invert_and_compose(seed, kind, batch, dtype, singular, special):
    """compose(theta, invert(theta)) is the identity, or invert raises a clear error for a
    singular / non-finite matrix."""
    shape = {"affine": (2, 3), "affine3d": (3, 4), "projective": (3, 3)}[kind]
    theta = torch.eye(*shape, dtype=torch.float64) + 0.3 * torch.randn(
        batch, *shape, generator=gen(seed), dtype=torch.float64)
    if batch and singular:
        theta[0, 0] = theta[0, 1]  # two equal rows: singular
    if batch and special is not None:
        theta[-1, 0, 0] = special
    theta = theta.to(dtype)
    try:
        inv = T.invert(theta)
    except Exception as e:  # noqa: BLE001
        assert_clear_error(e, "invert", ["theta"])
        assert batch and (singular or special is not None), f"refused a regular theta: {e}"
        return
    assert not (batch and special is not None), "inverted a non-finite theta"
    eye = torch.eye(*shape, dtype=torch.float64).expand(batch, *shape)
    comp = T.compose(theta, inv).double()
    if kind == "projective":
        comp = comp / comp[:, 2:, 2:]
    cond = torch.linalg.cond(theta.double()[..., : shape[0]]).max().item() if batch else 1.0
    tol = 64 * eps(dtype) * cond + 8 * out_ulp(dtype) * cond
    assert_close(comp, eye, tol, "compose(theta, invert(theta))")


@fuzz(1)
@given(seed=seeds, in_size=st.tuples(st.integers(1, 50), st.integers(1, 50)),
       out_size=st.tuples(st.integers(1, 50), st.integers(1, 50)), align=st.booleans())
def test_pixel_round_trip(seed, in_size, out_size, align):
    """from_pixel(to_pixel(theta)) == theta, or a clear error naming the size (align_corners
    with a 1-pixel side)."""
    theta = torch.eye(2, 3, dtype=torch.float64) + 0.3 * torch.randn(
        2, 2, 3, generator=gen(seed), dtype=torch.float64)
    try:
        m = T.to_pixel(theta, in_size, out_size, align_corners=align)
    except Exception as e:  # noqa: BLE001
        assert_clear_error(e, "to_pixel", ["in_size", "out_size"])
        assert align and min(*in_size, *out_size) < 2, str(e)
        return
    back = T.from_pixel(m, in_size, out_size, align_corners=align)
    cond = torch.linalg.cond(theta[..., :2]).max().item()
    assert_close(back, theta, 1e-12 * cond * max(*in_size, *out_size), "pixel round trip")


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


@fuzz(0.5)
@given(transform=st.sampled_from(list(snn.TRANSFORMS)), batch=st.integers(0, 2),
       channels=st.integers(1, 3), side=st.integers(1, 12), other_c=st.integers(1, 3),
       out=st.one_of(st.none(), st.integers(1, 6)), backend=st.sampled_from(
           ["auto", "torch", "cpp"]), mode=st.sampled_from(["bilinear", "nearest"]),
       pad=st.sampled_from(["zeros", "border", "reflection"]), align=st.booleans(),
       seed=seeds)
def test_spatial_transformer(transform, batch, channels, side, other_c, out, backend, mode,
                             pad, align, seed):
    """A fresh transformer is the identity (output == input when the size is kept), and an
    input whose channels or spatial size differ from input_size is a clear error naming
    input (not the localisation net's matmul RuntimeError)."""
    nd = snn.TRANSFORMS[transform].dims
    in_size = (channels, *([side] * nd))
    loc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(in_size), 4),
                              torch.nn.ReLU())
    st_ = snn.SpatialTransformer(loc, transform, input_size=in_size, mode=mode,
                                 padding_mode=pad, align_corners=align, backend=backend,
                                 output_size=None if out is None else (out,) * nd)
    x = torch.randn(batch, *in_size, generator=gen(seed))
    y = st_(x)
    assert y.shape == (batch, channels, *((out,) * nd if out else in_size[1:]))
    if out is None:  # identity: every output pixel reads its own input pixel
        assert_close(y, x, 64 * eps(x.dtype), f"fresh {transform} transformer")
        if batch:
            y.sum().backward()
            assert st_.regressor.linear.bias.grad is not None
    for shape in [(other_c + channels, *in_size[1:]),  # other channels
                  (channels, *in_size[1:-1], in_size[-1] + other_c)]:  # other width
        bad = torch.randn(max(batch, 1), *shape, generator=gen(seed))
        try:
            st_(bad)
        except Exception as e:  # noqa: BLE001
            assert_clear_error(e, "SpatialTransformer", ["input"])
        else:
            raise AssertionError(f"accepted {tuple(bad.shape)} with input_size={in_size}")


@fuzz(1)
@given(kind=st.sampled_from(["fcn", "cnn", "tutorial"]), c=st.integers(0, 3),
       h=st.integers(0, 40), w=st.integers(0, 40), batch=st.integers(0, 2), seed=seeds)
def test_localisation_nets(kind, c, h, w, batch, seed):
    """Built and run for (B, C, H, W) -> (B, out_features), or a clear error naming
    input_size (too small, zero)."""
    cls = {"fcn": snn.FCNLocalization, "cnn": snn.CNNLocalization,
           "tutorial": snn.TutorialLocalization}[kind]
    try:
        net = cls((c, h, w))
    except Exception as e:  # noqa: BLE001
        assert_clear_error(e, cls.__name__, ["input_size"])
        return
    out = net(torch.randn(batch, c, h, w, generator=gen(seed)))
    assert out.shape == (batch, net.out_features) and bool(torch.isfinite(out).all())
    try:
        net(torch.randn(batch, c, h + 1, w, generator=gen(seed)))
    except Exception as e:  # noqa: BLE001
        assert_clear_error(e, cls.__name__, ["input"])
    else:
        raise AssertionError("accepted a mismatched input")


@fuzz(1)
@given(n=st.integers(1, 3), combine=st.sampled_from(["concat", "list"]),
       sizes=st.lists(st.one_of(st.none(), st.integers(2, 5)), min_size=3, max_size=3),
       batch=st.integers(0, 2), seed=seeds)
def test_parallel_transformers(n, combine, sizes, batch, seed):
    """Concatenated outputs share batch and size, or a clear error says so."""
    sts = [snn.SpatialTransformer(snn.FCNLocalization((1, 6, 6)), "attention",
                                  output_size=None if s is None else (s, s))
           for s in sizes[:n]]
    par = snn.ParallelSpatialTransformers(sts, combine=combine)
    x = torch.randn(batch, 1, 6, 6, generator=gen(seed))
    try:
        y, thetas = par(x, return_theta=True)
    except Exception as e:  # noqa: BLE001
        assert_clear_error(e, "ParallelSpatialTransformers", [f"output {i}" for i in range(n)])
        assert combine == "concat" and len({s or 6 for s in sizes[:n]}) > 1
        return
    assert len(thetas) == n
    if combine == "concat":
        assert y.shape[:2] == (batch, n)
    else:
        assert [o.shape[0] for o in y] == [batch] * n


# ---------------------------------------------------------------------------------------------
# Wrong arguments everywhere
# ---------------------------------------------------------------------------------------------

_JUNK = [None, 0, -1, 2**40, 1.5, float("nan"), "x", (0, 0), (2, -3), [2, 2], (2, 2, 2),
         (2**40, 2**40), torch.zeros(0), torch.zeros(2, 3, dtype=torch.int64),
         torch.zeros(1, 2, 3), torch.zeros(1, 2, 3, dtype=torch.float16),
         torch.zeros(1, 3, 3), torch.zeros(1, 1, 4, 4), torch.zeros(0, 1, 4, 4),
         torch.zeros(1, 1, 0, 4), torch.zeros(1, 4, 4, 2), torch.full((1, 2, 3), float("nan")),
         torch.zeros(3, 2, 1).permute(2, 1, 0)]
junk = st.sampled_from(_JUNK)

_CALLS = {
    "warp": lambda a, b, c: warp(a, b, size=c),
    "sample": lambda a, b, c: sample(a, b),
    "affine_grid": lambda a, b, c: affine_grid(a, b),
    "projective_grid": lambda a, b, c: projective_grid(a, b),
    "tps_grid": lambda a, b, c: tps_grid(a, b),
    "compose": lambda a, b, c: T.compose(a, b),
    "invert": lambda a, b, c: T.invert(a),
    "to_pixel": lambda a, b, c: T.to_pixel(a, b, c),
    "from_pixel": lambda a, b, c: T.from_pixel(a, b, c),
    "rotation": lambda a, b, c: T.rotation(a),
    "scaling": lambda a, b, c: T.scaling(a, b),
    "translation": lambda a, b, c: T.translation(a, b),
    "identity": lambda a, b, c: T.identity(a),
    "FCNLocalization": lambda a, b, c: snn.FCNLocalization(a),
    "CNNLocalization": lambda a, b, c: snn.CNNLocalization(a),
    "TutorialLocalization": lambda a, b, c: snn.TutorialLocalization(a),
}


@fuzz(4)
@given(fn=st.sampled_from(sorted(_CALLS)), a=junk, b=junk, c=junk)
def test_wrong_arguments_are_clear_errors(fn, a, b, c):
    """Any argument mix: a result or a StnkitError whose message names the call and says
    what it expected ("<fn>: expected <name> ...")."""
    try:
        _CALLS[fn](a, b, c)
    except Exception as e:  # noqa: BLE001 - the property is about which exception
        assert_clear_error(e, fn, [""])
