"""Cases shared by the kernel backends' tests (cpp_cpu, triton_gpu): random thetas that
keep every sample point away from knots, their pixel coordinates, and the comparison."""

from __future__ import annotations

import torch

from stnkit.ops import affine_grid, projective_grid
from tests._helpers import assert_close as close  # the kernel tests' name for it

F64, F32 = torch.float64, torch.float32
TOL = {F64: 1e-10, F32: 1e-4}
MARGIN = {F64: 1e-4, F32: 1e-3}
PADS = ["zeros", "border", "reflection"]
MODES = ["bilinear", "nearest"]
KINDS = ["affine", "projective", "affine3d"]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def raw_theta(kind, batch, seed, strength):
    """Identity plus N(0, strength) noise; projective with a mild perspective (w > 0)."""
    g = gen(seed)
    if kind in ("affine", "affine3d"):
        nd = 2 if kind == "affine" else 3
        return torch.eye(nd, nd + 1, dtype=F64) + strength * torch.randn(
            batch, nd, nd + 1, generator=g, dtype=F64)
    h = torch.eye(3, dtype=F64) + strength * torch.randn(batch, 3, 3, generator=g, dtype=F64)
    h[:, 2, :2] *= 0.5  # mild perspective: w > 0 everywhere
    return h


def pixels(kind, theta, in_size, out_size, align):
    """(B, P, nd) raw input pixel coordinates of every output point, float64."""
    theta = theta.double().cpu()
    grid_fn = projective_grid if kind == "projective" else affine_grid
    nd = len(in_size)
    grid = grid_fn(theta, out_size, align_corners=align).reshape(theta.shape[0], -1, nd)
    sizes = torch.tensor(list(reversed(in_size)), dtype=F64)  # (W, H[, D])
    return (grid + 1) / 2 * (sizes - 1) if align else ((grid + 1) * sizes - 1) / 2


def theta_away_from_knots(kind, batch, in_size, out_size, align, dtype, seed=0,
                          strength=0.25):
    """A theta whose sample points all stay MARGIN away from integers and half-integers."""
    for s in range(seed, seed + 500):
        theta = raw_theta(kind, batch, s, strength)
        pix = pixels(kind, theta, in_size, out_size, align)
        if align:  # a size-1 axis with align_corners maps everything onto its pixel: skip it
            keep = [d for d in range(len(in_size)) if in_size[-1 - d] > 1]
            pix = pix[..., keep]
        pix = pix[torch.isfinite(pix)]
        if pix.numel() == 0:
            return theta.to(dtype)
        dist = ((2 * pix) - (2 * pix).round()).abs().min().item() / 2
        if dist > MARGIN[dtype]:
            return theta.to(dtype)
    raise AssertionError("no suitable theta found")


def transform_of(kind):
    return "projective" if kind == "projective" else "affine"


def behind_camera():
    """(x, h, size): homographies with w <= 0 over part of the output (left of x = -0.59 for
    the first), checked to have both kinds of points."""
    x = torch.randn(2, 2, 9, 10, dtype=F64, generator=gen(4))
    h = torch.eye(3, dtype=F64).repeat(2, 1, 1)
    h[:, 2, 0] = torch.tensor([1.7, -1.3], dtype=F64)  # w = 1.7 x + 1 <= 0 left of x = -0.59
    h[:, 0, 1] = 0.13
    h[:, 1, 2] = 0.07
    size = (8, 13)
    w = pixels("projective", h, (9, 10), size, False)
    assert torch.isnan(w).any() and torch.isfinite(w).any(), "test needs both kinds of points"
    return x, h, size


def check_huge_finite_coordinates(run, device="cpu"):
    """1e30 away: zeros -> 0, border -> the border pixel, reflection -> somewhere inside.

    ``run(x, theta, kind, size, mode, pad, align)`` is the backend under test."""
    x = torch.rand(1, 2, 6, 7, dtype=F64, generator=gen(5)).to(device)
    theta = torch.tensor([[[1.0, 0.0, 1e30], [0.0, 1.0, -1e30]]], dtype=F64).to(device)
    for pad in PADS:
        out = run(x, theta, "affine", (4, 5), "bilinear", pad, False)
        assert torch.isfinite(out).all(), pad
        if pad == "zeros":
            assert (out == 0).all()
        elif pad == "border":  # x -> right border, y -> top border
            assert torch.equal(out, x[:, :, :1, -1:].expand_as(out))
        else:
            assert (out >= x.amin()).all() and (out <= x.amax()).all()
    t3 = torch.zeros(1, 3, 4, dtype=F64)
    t3[0, :, 3] = torch.tensor([1e30, -1e30, 1e30])
    x3 = torch.rand(1, 1, 3, 4, 5, dtype=F64, generator=gen(6)).to(device)
    out = run(x3, t3.to(device), "affine3d", (2, 2, 2), "bilinear", "border", False)
    assert torch.equal(out, x3[:, :, -1:, :1, -1:].expand_as(out))  # z last, y first, x last


def check_infinite_output_gradient(run, ref, kind, shape, size, device="cpu"):
    """An Inf in grad_output reaches only the taps its pixel really reads, as in the
    reference: no 0 * Inf = NaN on the zero-weight taps of points near the border.

    ``run`` / ``ref(x, theta, kind, size, mode, pad, align)``: the backend under test and
    the reference."""
    x = torch.randn(shape, dtype=F64, generator=gen(7))
    theta = theta_away_from_knots(kind, shape[0], shape[2:], size, False, F64, 7)
    g = torch.randn(shape[0], shape[1], *size, dtype=F64, generator=gen(8))
    g[..., 0, :] = float("inf")  # the first and last output rows sample near the border
    g[..., -1, :] = float("-inf")
    grads = []
    for fn in (run, ref):
        xi = x.clone().to(device).requires_grad_()
        fn(xi, theta.to(device), kind, size, "bilinear", "zeros", False).backward(g.to(device))
        grads.append(xi.grad.cpu())
    assert grads[1].isinf().any(), "the check must put Inf into grad_input"
    assert torch.equal(grads[0].isnan(), grads[1].isnan()), "NaN in grad_input"
    assert torch.equal(grads[0].isinf(), grads[1].isinf()), "Inf in grad_input"
    finite = torch.isfinite(grads[1])
    close(grads[0][finite], grads[1][finite], TOL[F64], "finite grad_input")


def check_against(res, ref, mode, tol):
    """(output, grad input, grad theta) of a backend against the reference's; nearest passes
    no gradient to theta in either."""
    close(res[0], ref[0], tol, "output")
    close(res[1], ref[1], tol, "grad input")
    if mode == "nearest":
        assert (res[2] == 0).all() and (ref[2] == 0).all()
    else:
        close(res[2], ref[2], tol, "grad theta")


def check_partial(grads, ref, need, tol=1e-10):
    """(grad input, grad theta) when only one of them was asked for (``need``): that one
    matches the reference's, the other is None."""
    if need[0]:
        close(grads[0], ref[0], tol, "grad input")
        assert grads[1] is None
    else:
        assert grads[0] is None
        close(grads[1], ref[1], tol, "grad theta")
