"""What an outside fuzz campaign found (issue 12), each as a class of inputs: empty batches,
empty images, sizes past the index limit, user errors of the reference, hidden state, and
non-finite pixels / huge coordinates against ``torch.nn.functional.grid_sample``."""

from __future__ import annotations

import pytest
import torch

from stnkit import ops
from stnkit._checks import StnkitTypeError, StnkitValueError
from stnkit.ops import grids, reference

F64 = torch.float64
BACKENDS = ["torch", "numba"]


def _theta(transform: str, b: int, *, dims: int = 2, requires_grad: bool = True):
    if transform == "affine":
        t = torch.eye(dims, dims + 1, dtype=F64).repeat(b, 1, 1)
    elif transform == "projective":
        t = torch.eye(3, dtype=F64).repeat(b, 1, 1)
    else:
        t = grids.tps_lattice(16, dtype=F64).repeat(b, 1, 1)
    return t.requires_grad_(requires_grad)


# ---------------------------------------------------------------------------------------------
# empty batch / empty channels: forward and backward, every op and backend
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transform, dims, size", [
    ("affine", 2, (4, 5)), ("projective", 2, (4, 5)), ("tps", 2, (4, 5)), ("affine", 3, (3, 4, 5)),
])
def test_grids_empty_batch_backward(transform, dims, size):
    make = {"affine": ops.affine_grid, "projective": ops.projective_grid,
            "tps": ops.tps_grid}[transform]
    t = _theta(transform, 0, dims=dims)
    grid = make(t, size)
    assert grid.shape == (0, *size, dims)
    grid.sum().backward()
    assert t.grad is not None and t.grad.shape == t.shape, "empty batch gradient"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("transform", ["affine", "projective", "tps", "affine3d"])
@pytest.mark.parametrize("shape", [(0, 2), (2, 0)], ids=["B=0", "C=0"])
def test_warp_empty_batch_and_channels(backend, transform, shape):
    """PyTorch handles B = 0 and C = 0 (grid_sample, affine_grid); so does every backend,
    forward and backward, with the same shapes as the torch path."""
    if backend == "numba" and transform == "tps":
        pytest.skip("tps runs on the torch backend only")
    dims = 3 if transform == "affine3d" else 2
    kind = "affine" if transform == "affine3d" else transform
    b, c = shape
    x = torch.rand(b, c, *(5,) * dims, dtype=F64, requires_grad=True)
    t = _theta(kind, b, dims=dims)
    out = ops.warp(x, t, transform=kind, size=(4,) * dims, backend=backend)
    assert out.shape == (b, c, *(4,) * dims), f"{out.shape=}"
    out.sum().backward()
    assert x.grad.shape == x.shape and t.grad.shape == t.shape
    assert (x.grad == 0).all() and (t.grad == 0).all(), "nothing to differentiate: zeros"


def test_sample_empty_batch_and_channels():
    for shape in ((0, 2), (2, 0)):
        x = torch.rand(*shape, 4, 4, dtype=F64, requires_grad=True)
        grid = torch.zeros(shape[0], 3, 3, 2, dtype=F64, requires_grad=True)
        ops.sample(x, grid).sum().backward()
        assert x.grad.shape == x.shape and grid.grad.shape == grid.shape


# ---------------------------------------------------------------------------------------------
# empty images, sizes past the index limit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pad", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("shape", [(1, 1, 0, 2), (1, 1, 3, 0), (1, 1, 0, 3, 3)])
def test_warp_empty_image_is_one_error_on_every_backend(backend, pad, shape):
    x = torch.rand(shape, dtype=F64)
    t = _theta("affine", 1, dims=len(shape) - 2, requires_grad=False)
    with pytest.raises(StnkitValueError, match=r"warp: expected input to have non-empty "
                                               r"spatial dimensions, got \(1, 1, "):
        ops.warp(x, t, padding_mode=pad, backend=backend, size=(3,) * (len(shape) - 2))


HUGE = [(2**40, 2**40), (2**31, 1), (46341, 46341)]


@pytest.mark.parametrize("size", HUGE)
@pytest.mark.parametrize("call", [
    lambda s: ops.affine_grid(torch.eye(2, 3)[None], s),
    lambda s: ops.projective_grid(torch.eye(3)[None], s),
    lambda s: ops.tps_grid(grids.tps_lattice(4)[None], s),
    lambda s: grids.tps_matrix(s, k=4),
    lambda s: ops.warp(torch.rand(1, 1, 4, 4), torch.eye(2, 3)[None], size=s, backend="torch"),
    lambda s: ops.warp(torch.rand(1, 1, 4, 4), torch.eye(2, 3)[None], size=s, backend="numba"),
    lambda s: ops.warp(torch.rand(1, 1, 4, 4), torch.eye(2, 3)[None], size=s),
], ids=["affine_grid", "projective_grid", "tps_grid", "tps_matrix", "warp-torch", "warp-numba",
        "warp-auto"])
def test_size_past_the_index_limit(call, size):
    """A clear error naming ``size``, the limit and the value, before any allocation."""
    with pytest.raises(StnkitValueError, match=rf"expected size to have at most 2147483647 "
                                               rf"\(2\*\*31 - 1\) pixels per image.*got "
                                               rf"\({size[0]}, {size[1]}\)"):
        call(size)


def test_size_limit_3d_and_the_largest_allowed():
    with pytest.raises(StnkitValueError, match="expected size to have at most 2147483647"):
        ops.affine_grid(torch.eye(3, 4)[None], (2**11, 2**10, 2**10))
    assert grids.check_grid_size((1, grids.MAX_PIXELS), 2, fn="t") == (1, grids.MAX_PIXELS)


def test_sample_grid_past_the_index_limit():
    grid = torch.zeros(1, 1, 1, 2).expand(1, 2**16, 2**15, 2)  # 2**31 points, a stride-0 view
    with pytest.raises(StnkitValueError, match=r"sample: expected grid to have at most "
                                               r"2147483647 .*points per image"):
        ops.sample(torch.rand(1, 1, 4, 4), grid)


# ---------------------------------------------------------------------------------------------
# user errors of the reference go through _checks.fail
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: reference.bilinear_kernel_grad(0.5, "nope"), "bilinear_kernel_grad: expected "
                                                          "subgradient one of"),
    (lambda: reference.pad_index(0, 4, "nope", False), "pad_index: expected padding_mode"),
    (lambda: reference.sample(torch.rand(1, 1, 2, 2), torch.zeros(1, 1, 1, 2), mode="nope"),
     "reference: expected mode one of"),
])
def test_reference_user_errors_are_stnkit_errors(call, match):
    with pytest.raises(StnkitValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# no hidden state: the TPS matrix is solved per call, or passed in
# ---------------------------------------------------------------------------------------------


def test_no_module_level_tps_cache():
    assert not any(isinstance(v, dict) and k.isupper() for k, v in vars(grids).items()), \
        "a module-level cache is global state"
    assert not hasattr(grids, "_TPS_CACHE") and not hasattr(grids, "_TPS_LOCK")


def test_tps_matrix_passed_in_gives_the_same_grid():
    src = grids.tps_lattice(16, dtype=F64)[None] + 0.05 * torch.randn(
        2, 16, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    a = grids.tps_matrix((6, 7), k=16, dtype=F64)
    assert a.shape == (42, 16) and a.dtype == F64
    assert torch.equal(ops.tps_grid(src, (6, 7), matrix=a), ops.tps_grid(src, (6, 7)))
    dst = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [0.0, 1.0], [0.2, 0.1]])
    a32 = grids.tps_matrix((5, 5), dst_points=dst)
    assert a32.dtype == torch.float32
    s = src[:, :4].float()
    assert torch.equal(ops.tps_grid(s, (5, 5), dst_points=dst, matrix=a32),
                       ops.tps_grid(s, (5, 5), dst_points=dst))


@pytest.mark.parametrize("bad, err, match", [
    (torch.zeros(41, 16, dtype=F64), StnkitValueError, r"expected matrix of shape \(42, 16\)"),
    (torch.zeros(42, 16), StnkitTypeError, "expected matrix to have dtype torch.float64"),
])
def test_tps_grid_rejects_a_wrong_matrix(bad, err, match):
    with pytest.raises(err, match=match):
        ops.tps_grid(grids.tps_lattice(16, dtype=F64)[None], (6, 7), matrix=bad)
