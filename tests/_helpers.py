"""Helpers shared by the whole test suite."""

from __future__ import annotations

import torch


def assert_close(actual, expected, tol, what: str, *,
                 equal_nan: bool = False) -> None:
    """Same shape, same dtype and ``max |actual - expected| <= tol * max(1, max |expected|)``.

    Takes tensors or NumPy arrays (the ops.reference oracle returns those).

    The scale is relative for large values and absolute below 1 (gradients of these tests
    reach ~30, values ~1). Compared on the CPU in float64. Non-finite entries fail, unless
    ``equal_nan``: then both must have NaN at the same places and the same +-Inf at the same
    places, and the finite rest is compared. ``tol`` is a float, or a tensor that broadcasts
    against the values (a tolerance per element). Every failure names ``what``.
    """
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)  # NumPy oracles too
    assert actual.shape == expected.shape, \
        f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    a = actual.detach().cpu().to(torch.float64)
    b = expected.detach().cpu().to(torch.float64)
    tol = torch.as_tensor(tol, dtype=torch.float64).expand(b.shape)
    if equal_nan:
        nan_a, nan_b = torch.isnan(a), torch.isnan(b)
        assert torch.equal(nan_a, nan_b), (
            f"{what}: NaN at {int(nan_a.sum())} places, expected {int(nan_b.sum())}; first "
            f"difference at {tuple(torch.nonzero(nan_a != nan_b)[0].tolist())}")
        inf_a, inf_b = torch.isinf(a), torch.isinf(b)
        assert torch.equal(inf_a, inf_b) and torch.equal(a[inf_a], b[inf_b]), \
            f"{what}: +-Inf at {int(inf_a.sum())} places, expected {int(inf_b.sum())}"
        finite = torch.isfinite(b)
        a, b, tol = a[finite], b[finite], tol[finite]
    else:
        assert bool(torch.isfinite(a).all()), f"{what}: {int((~torch.isfinite(a)).sum())} " \
            "non-finite values"
        assert bool(torch.isfinite(b).all()), f"{what}: {int((~torch.isfinite(b)).sum())} " \
            "non-finite expected values"
    if b.numel() == 0:
        return
    scale = max(1.0, b.abs().max().item())
    a, b, tol = a.reshape(-1), b.reshape(-1), tol.reshape(-1)
    excess = (a - b).abs() - tol * scale
    i = int(excess.argmax())
    assert excess[i] <= 0, (
        f"{what}: error {abs(a[i] - b[i]).item():.3g} > {tol[i].item() * scale:.3g} (tol "
        f"{tol[i].item():.3g} x scale {scale:.3g}) at flat index {i}: got {a[i].item():.6g}, "
        f"expected {b[i].item():.6g}")
