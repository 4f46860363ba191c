"""Profiles, input builders and oracles shared by the fuzz properties.

Oracle. A grid point with a finite (x, y[, z]) samples what ``F.grid_sample`` samples there;
a point with any NaN / +-Inf coordinate samples 0 and neither gives nor gets gradient (our
stated rule; PyTorch clips such points into the image instead). ``reference_sample`` is
``F.grid_sample`` with that rule applied, so it is exact for every point.

Tolerances, from the machine epsilon ``eps`` of the computing dtype (float32 for
float16/bfloat16, which are computed in float32 and cast back):

- a pixel coordinate p = ((x + 1) W - 1) / 2 (or (x + 1)(W - 1) / 2) is computed by us and by
  PyTorch with different roundings, and we snap it onto an integer within 2 eps W: the two
  differ by ``dp <= 8 eps (|p| + S)`` (S the largest input side);
- an output is a sum of at most 16 taps |U| |w|, each weight moving by at most
  ``|k'| dp <= 1.5 dp`` (bicubic; bilinear 1): output error ``<= 16 * 1.5 * dp * max|U|``,
  i.e. relative ``TOL_C = 192`` times ``eps (|p| + S)`` per point, against the scale
  ``max(1, max|expected|)`` of ``tests._helpers.assert_close``;
- grad_input at a pixel sums its points' ``g w``: at most ``1.5 dp |g|`` each, so per (b, c)
  at most ``1.5 * 8 eps (max|p| + S) * sum|g|`` over the image's points (used as is);
- |p| counts as is only under reflection padding: zeros / border read exactly 0 / the border
  pixel beyond the image, so there |p| is capped at S + 3;
- grad_grid is compared only at *smooth* points, at least ``SMOOTH = 64 eps (|p| + S)``
  pixels from every integer and half-integer (knots, nearest ties, clip and fold points),
  where both are differentiable and agree to ``TOL_C`` times ``eps (|p| + S)`` (relative to
  max |grad_grid|, which carries the same factor S / 2 as the error);
- float16/bfloat16: plus one unit in the last place of the output dtype (both round the
  same float32 value, which may sit on a rounding boundary).
- a fused warp (grid never materialised) adds the ``theta_scale`` term to |p|: the error of
  an affine map evaluated for a theta perturbed by eps relative.
At huge coordinates these bounds grow with |p| and say little: there the properties also
check that bilinear/nearest outputs stay within [min U, max U] and that border/reflection
hand every finite point's whole gradient mass to the input.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from stnkit._checks import StnkitError
from tests._helpers import assert_close

# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
# default: no shrinking, so a property that fails (a bug not fixed yet) still costs only
# its examples; run the long profile (or this one with STNKIT_FUZZ_PROFILE=long) to shrink.
settings.register_profile("stnkit-fuzz-default", max_examples=10, derandomize=True,
                          database=None, phases=[Phase.explicit, Phase.generate],
                          **_COMMON)
settings.register_profile("stnkit-fuzz-long", max_examples=2000, **_COMMON)
PROFILE = os.environ.get("STNKIT_FUZZ_PROFILE", "default")
if PROFILE not in ("default", "long"):
    raise ValueError(f"STNKIT_FUZZ_PROFILE must be 'default' or 'long', got {PROFILE!r}")
FUZZ = settings.get_profile(f"stnkit-fuzz-{PROFILE}")
if os.environ.get("STNKIT_FUZZ_EXAMPLES"):  # scripts/fuzz_long.py --examples
    FUZZ = settings(FUZZ, max_examples=int(os.environ["STNKIT_FUZZ_EXAMPLES"]))
"""Decorator: the profile's settings (``@FUZZ`` below ``@given``)."""


def fuzz(scale: float = 1.0):
    """``FUZZ`` with ``scale`` times its example count (for the costlier properties)."""
    return settings(FUZZ, max_examples=max(1, int(FUZZ.max_examples * scale)))


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def assert_clear_error(err: BaseException, fn: str, names) -> None:
    """``err`` is a StnkitError of ``fn`` whose message names one of ``names``."""
    assert isinstance(err, StnkitError), f"{fn}: not a StnkitError: {type(err).__name__}: {err}"
    msg = str(err)
    assert msg.startswith(f"{fn}: "), f"message does not name the call {fn!r}: {msg}"
    assert any(f"expected {n}" in msg for n in names), \
        f"message names none of {names}: {msg}"


# ---------------------------------------------------------------------------------------------
# Dtypes, layouts
# ---------------------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
PADS = ["zeros", "border", "reflection"]
HUGE = [1e3, 1e7, 1e20, 1e30]
LAYOUTS = ["contiguous", "channels_last", "non_contiguous"]


def work_dtype(dtype):
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def eps(dtype) -> float:
    return torch.finfo(work_dtype(dtype)).eps


def out_ulp(dtype) -> float:
    """One unit in the last place (relative) of the result dtype, 0 for float32/64."""
    return torch.finfo(dtype).eps if dtype in (torch.float16, torch.bfloat16) else 0.0


def layout(x: torch.Tensor, how: str) -> torch.Tensor:
    """The same values as ``x`` in another memory layout."""
    if how == "channels_last":
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        return x.contiguous(memory_format=fmt)
    if how == "non_contiguous":  # every other element of a twice-as-wide buffer
        big = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
        big[..., ::2] = x
        out = big[..., ::2]
        assert out.numel() <= 1 or not out.is_contiguous() or x.shape[-1] <= 1
        return out
    return x


# ---------------------------------------------------------------------------------------------
# Builders (values from a seed; hypothesis draws the seed and the special entries)
# ---------------------------------------------------------------------------------------------


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SPECIAL_PIXELS = [float("nan"), float("inf"), -float("inf")]
SPECIAL_COORDS = ["nan", "inf", "-inf", "knot", "half", "huge", "-huge"]


def make_input(shape, dtype, seed, specials) -> torch.Tensor:
    """randn * 2 in float64, cast; ``specials``: (flat index fraction, value) injections."""
    x = 2 * torch.randn(shape, generator=gen(seed), dtype=torch.float64)
    flat = x.view(-1)
    for frac, value in specials:
        if flat.numel():
            flat[int(frac * flat.numel()) % flat.numel()] = value
    return x.to(dtype)


def make_grid(batch, out_size, in_size, align, dtype, seed, spread, specials, huge):
    """(B, *out_size, nd): pixel coordinates k + f (f uniform) over the image and ``spread``
    image-widths around it, normalised; ``specials``: (point fraction, axis, kind) injections
    (exact knots / half-integers, NaN, +-Inf, +-huge)."""
    g = gen(seed)
    nd = len(in_size)
    cols = []
    for d in range(nd):
        size = in_size[-1 - d]
        pix = (torch.rand((batch, *out_size), generator=g, dtype=torch.float64)
               * (1 + 2 * spread) - spread) * size - 0.5
        cols.append(_normalise(pix, size, align))
    grid = torch.stack(cols, dim=-1)
    flat = grid.view(-1, nd)
    for frac, axis, kind in specials:
        if not flat.shape[0]:
            continue
        i, d = int(frac * flat.shape[0]) % flat.shape[0], axis % nd
        size = in_size[-1 - d]
        k = int(frac * 1000) % (size + 2) - 1
        flat[i, d] = {"nan": float("nan"), "inf": float("inf"), "-inf": -float("inf"),
                      "knot": _normalise(torch.tensor(float(k)), size, align).item(),
                      "half": _normalise(torch.tensor(k + 0.5), size, align).item(),
                      "huge": huge, "-huge": -huge}[kind]
    return grid.to(dtype)


def _normalise(pix, size, align):
    if align:
        return 2 * pix / (size - 1) - 1 if size > 1 else pix * 0
    return (2 * pix + 1) / size - 1


def pixel_coords(grid: torch.Tensor, in_size, align) -> torch.Tensor:
    """(B, *out, nd) float64 pixel coordinates (NaN/Inf kept); a size-1 axis with
    align_corners (everything maps onto its pixel) reads as 0."""
    sizes = torch.tensor(list(reversed(in_size)), dtype=torch.float64)
    g = grid.detach().to(torch.float64)
    pix = (g + 1) / 2 * (sizes - 1) if align else ((g + 1) * sizes - 1) / 2
    if align:
        pix = torch.where(sizes > 1, pix, torch.zeros_like(pix))
    return pix


def smooth_points(pix: torch.Tensor, dtype, in_size) -> torch.Tensor:
    """(B, *out) bool: finite points SMOOTH away from every integer and half-integer."""
    s = max(in_size)
    finite = torch.isfinite(pix).all(-1)
    p = torch.where(torch.isfinite(pix), pix, torch.zeros_like(pix))
    margin = 64 * eps(dtype) * (p.abs() + s)
    dist = (2 * p - torch.round(2 * p)).abs() / 2
    return finite & (dist > margin).all(-1)


# ---------------------------------------------------------------------------------------------
# The oracle
# ---------------------------------------------------------------------------------------------


def reference_sample(x, grid, grad_out, *, mode, padding_mode, align_corners):
    """``F.grid_sample`` (in the working dtype) with our rule for non-finite points:
    (output, grad_input, grad_grid) in ``x.dtype``."""
    dtype, work = x.dtype, work_dtype(x.dtype)
    bad = ~torch.isfinite(grid).all(-1)  # (B, *out)
    keep = (~bad).unsqueeze(1)  # (B, 1, *out)
    xr = x.detach().to(work).requires_grad_()
    gr = torch.where(bad.unsqueeze(-1), 0, grid.detach()).to(work).requires_grad_()
    out = F.grid_sample(xr, gr, mode=mode, padding_mode=padding_mode,
                        align_corners=align_corners)
    out = torch.where(keep, out, 0)
    go = torch.where(keep, grad_out.to(work), 0)
    if out.numel():
        gx, gg = torch.autograd.grad(out, (xr, gr), go)
    else:
        gx, gg = torch.zeros_like(xr), torch.zeros_like(gr)
    gg = torch.where(bad.unsqueeze(-1), 0, gg)
    return out.detach().to(dtype), gx.to(dtype), gg.to(dtype)


def effective_p(pix, padding_mode, in_size, p_extra=0.0) -> torch.Tensor:
    """|p| per coordinate where it matters: NaN/Inf -> 0; without reflection a point beyond
    the image reads exactly 0 or the border pixel, so |p| counts only up to S + 3;
    ``p_extra``: the theta term of a fused warp (see ``theta_scale``)."""
    p = torch.where(torch.isfinite(pix), pix, torch.zeros_like(pix)).abs()
    p = p if padding_mode == "reflection" else p.clamp(max=max(in_size) + 3)
    return p + p_extra


def value_tol(pix, dtype, in_size, padding_mode, p_extra=0.0):
    """(B, 1, *out) relative tolerance of each output point (see the module docstring)."""
    p = effective_p(pix, padding_mode, in_size, p_extra).amax(-1)
    return (192 * eps(dtype) * (p + max(in_size)) + out_ulp(dtype)).unsqueeze(1)


def grad_input_tol(pix, grad_out, dtype, in_size, scale_ref, padding_mode, p_extra=0.0):
    """A float: the bound of the module docstring, relative to ``scale_ref``."""
    p = effective_p(pix, padding_mode, in_size, p_extra)
    pmax = p.max().item() if p.numel() else 0.0
    g = grad_out.detach().double().abs()
    mass = g.flatten(2).sum(-1).max().item() if g.numel() else 0.0
    return 12 * eps(dtype) * (pmax + max(in_size)) * max(mass, 1.0) / max(1.0, scale_ref) \
        + 2 * out_ulp(dtype)


def check_sample_result(got, ref, x, grid, grad_out, *, mode, padding_mode, align_corners,
                        what, check_grid_grad=True, p_extra=0.0):
    """``got`` / ``ref``: (output, grad_input, grad_grid or None) against the oracle's;
    ``p_extra``: ``theta_scale`` of a fused warp's theta (0 for a given grid)."""
    in_size = tuple(x.shape[2:])
    pix = pixel_coords(grid, in_size, align_corners)
    dtype = x.dtype
    out, gx, gg = got
    rout, rgx, rgg = ref
    # NaN / Inf pixels: the non-finite pattern must be grid_sample's (NaN vs Inf may differ
    # where a zero weight meets an Inf pixel: 0 * Inf), at every point whose pixel is
    # resolved (8 eps (|p| + S) < 1/2: which pixels it reads is not left to rounding)
    p_eff = effective_p(pix, padding_mode, in_size, p_extra).amax(-1)
    resolved = (8 * eps(dtype) * (p_eff + max(in_size)) < 0.5).unsqueeze(1).expand(out.shape)
    fa, fb = torch.isfinite(out), torch.isfinite(rout)
    assert torch.equal(fa[resolved], fb[resolved]), (
        f"{what}: non-finite outputs at {int((~fa).sum())} places, grid_sample at "
        f"{int((~fb).sum())}; first difference at "
        f"{tuple(torch.nonzero((fa != fb) & resolved)[0].tolist())}")
    fin = fa & fb
    tol = value_tol(pix, dtype, in_size, padding_mode, p_extra).expand(out.shape)
    assert_close(torch.where(fin, out, 0), torch.where(fin, rout, 0), tol, f"{what}: output")
    xf = x[torch.isfinite(x)].double()
    if mode in ("bilinear", "nearest") and xf.numel() and out.numel():
        lo, hi = min(xf.min().item(), 0.0), max(xf.max().item(), 0.0)
        o = out[fin].double()
        slack = 4 * eps(dtype) * max(abs(lo), abs(hi)) + out_ulp(dtype) * max(abs(lo), abs(hi))
        assert bool(((o >= lo - slack) & (o <= hi + slack)).all()), \
            f"{what}: output outside [min U, max U] = [{lo}, {hi}]: {o.min()}, {o.max()}"
    if gx is not None:
        assert_close(gx, rgx, grad_input_tol(pix, grad_out, dtype, in_size, amax(rgx),
                                             padding_mode, p_extra), f"{what}: grad_input")
    if gg is not None and check_grid_grad:
        bad = ~torch.isfinite(grid).all(-1, keepdim=True).expand(gg.shape)
        assert bool((gg[bad] == 0).all()), f"{what}: gradient at a NaN/Inf grid point"
        if bool(torch.isfinite(x).all()):
            assert bool(torch.isfinite(gg).all()), f"{what}: non-finite grad_grid"
        smooth = smooth_points(pix, dtype, in_size).unsqueeze(-1).expand(gg.shape)
        a, b = gg[smooth], rgg[smooth]
        # NaN / Inf pixels: non-finite where grid_sample's is (NaN vs Inf may differ)
        assert torch.equal(torch.isfinite(a), torch.isfinite(b)), \
            f"{what}: grad_grid non-finite at other smooth points than grid_sample's"
        p = effective_p(pix, padding_mode, in_size, p_extra).amax(-1, keepdim=True)
        tol = (192 * eps(dtype) * (p + max(in_size))
               + 2 * out_ulp(dtype)).expand(gg.shape)[smooth]
        fin = torch.isfinite(b)
        assert_close(a[fin], b[fin], tol[fin], f"{what}: grad_grid")


def theta_scale(theta: torch.Tensor, in_size) -> float:
    """Pixels of rounding a fused warp may add: a kernel that maps output pixels to input
    pixels as ``a j + b`` (folding theta with both normalisations) is exact for a theta
    perturbed by eps relative, i.e. off by ``eps * sum_j |theta_ij| * S`` pixels, however
    small p itself is (cancellation in ``a j + b``). Finite theta entries only."""
    t = theta.detach().double()
    t = torch.where(torch.isfinite(t), t, torch.zeros_like(t)).abs()
    return (t.sum(-1).max().item() if t.numel() else 0.0) * max(in_size)


def amax(t: torch.Tensor) -> float:
    """max |t| as a float, 0 for an empty tensor."""
    return t.detach().double().abs().max().item() if t.numel() else 0.0


def finite_mass_check(gx, grad_out, grid, what):
    """border / reflection: every finite grid point hands its whole gradient to the input,
    so per (b, c) sum(grad_input) == sum of grad_output over finite points."""
    keep = torch.isfinite(grid).all(-1).unsqueeze(1)
    want = torch.where(keep, grad_out, 0).double().flatten(2).sum(-1)
    got = gx.double().flatten(2).sum(-1)
    n = grad_out.shape[2:].numel() if grad_out.dim() > 2 else 1
    tol = 8 * n * eps(gx.dtype) * max(1.0, amax(grad_out)) \
        + n * out_ulp(gx.dtype) * 4
    assert bool(((got - want).abs() <= tol).all()), \
        f"{what}: gradient mass {got.tolist()} != {want.tolist()} ({tol=:.3g})"


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

seeds = st.integers(0, 2**31 - 1)
fractions = st.floats(0, 1, exclude_max=True)
pixel_specials = st.lists(st.tuples(fractions, st.sampled_from(SPECIAL_PIXELS)), max_size=2)
coord_specials = st.lists(st.tuples(fractions, st.integers(0, 2),
                                    st.sampled_from(SPECIAL_COORDS)), max_size=4)
