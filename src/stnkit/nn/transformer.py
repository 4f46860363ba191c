"""Spatial transformer layers: localisation net -> theta -> sampling grid -> sampled output.

A :class:`SpatialTransformer` wraps :func:`stnkit.ops.warp` (grid generator + sampler). Its
localisation network maps the input to features (B, F); a :class:`ThetaRegressor` (the final
regression layer, added by the transformer itself) maps the features to the raw parameters
r (B, P) and then to theta, the matrix or points the grid generator uses.

Parameterisations (raw regression output r -> theta). The regression layer starts with zero
weights and the bias r0 below, so a fresh transformer is the identity and returns its input.
Convention of :mod:`stnkit.ops`: theta maps *output* coordinates (x, y) in [-1, 1] to *input*
coordinates, so t = (tx, ty) is where the output's centre reads from in the input and s < 1
zooms in.

=============  ===  ==========================  ===============================================
transform      P    identity bias r0            theta (what the grid generator uses)
=============  ===  ==========================  ===============================================
affine         6    (1, 0, 0, 0, 1, 0)          r.view(B, 2, 3)
projective     8    (1, 0, 0, 0, 1, 0, 0, 0)    [r, 1].view(B, 3, 3): the last entry is 1
tps            2K   the K control points        r.view(B, K, 2): where the control points map
                    (x, y), row-major           to in the input (source points)
attention      3    (s, tx, ty) = (1, 0, 0)     [[s, 0, tx], [0, s, ty]]
similarity     4    (a, b, tx, ty) = (1,0,0,0)  [[a, -b, tx], [b, a, ty]]
rotation       1    angle = 0                   [[cos, -sin, 0], [sin, cos, 0]]
translation    2    (tx, ty) = (0, 0)           [[1, 0, tx], [0, 1, ty]]
affine3d       12   identity 3x4, row-major     r.view(B, 3, 4) (volumes (B, C, D, H, W))
=============  ===  ==========================  ===============================================

The restricted families are restricted by construction, whatever the weights: attention has
no rotation, shear or anisotropy; similarity has no shear or anisotropy (its linear part is
``a * I + b * J`` with J the 90-degree rotation, a = s cos(angle), b = s sin(angle)); rotation
has unit scale and no translation; translation has the identity linear part. Rotation and
similarity follow :func:`stnkit.ops.transforms.rotation` (angle in radians; positive turns
the picture counter-clockwise as displayed, y down), so
``similarity(a, b, tx, ty) == transforms.similarity(atan2(b, a), hypot(a, b), tx, ty)``.
They are rotations in normalised coordinates: on an input with H != W that is a rotation of
the image stretched to a square (as for ``transforms.rotation``).

Why (a, b, tx, ty) for similarity rather than (angle, log-scale, tx, ty): theta is linear in
the raw outputs, exactly like the affine family, so gradients are as well conditioned as the
affine transformer's, there is no angle wrap-around and no exponential; the price is that
a = b = 0 (scale 0) is representable, which a trained network has no reason to approach.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from stnkit import ops
from stnkit.ops._precision import compute_dtype
from stnkit.ops.grids import tps_matrix
from stnkit.ops.warp import BACKENDS, MODES, PADDING_MODES
from stnkit._checks import (
    check_choice,
    check_floating,
    check_shape,
    check_size,
    check_tensor,
    fail,
    format_shape,
)

__all__ = [
    "TRANSFORMS",
    "ParallelSpatialTransformers",
    "SpatialTransformer",
    "ThetaRegressor",
    "tps_control_points",
]



def tps_control_points(grid: Sequence[int], *, dtype=None, device=None) -> Tensor:
    """The regular lattice of TPS control points over [-1, 1], row-major, as (x, y).

    Args:
        grid: (rows, cols), each >= 2.
    Returns:
        (rows * cols, 2): point k = (row i, col j) at x = -1 + 2 j / (cols - 1),
        y = -1 + 2 i / (rows - 1). ``tps_control_points((4, 4))`` is the paper's 16 points and
        the default ``dst_points`` of :func:`stnkit.ops.tps_grid`.
    """
    rows, cols = grid
    # In float64, then rounded once: the same values as ops.grids.tps_lattice in any dtype.
    ys = torch.linspace(-1.0, 1.0, rows, dtype=torch.float64)
    xs = torch.linspace(-1.0, 1.0, cols, dtype=torch.float64)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (rows, cols) each
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)  # (K, 2)
    return points.to(dtype=dtype or torch.get_default_dtype(), device=device)


# --- parameterisations: raw (B, P) -> theta -------------------------------------------------

def _affine(r: Tensor) -> Tensor:
    return r.view(-1, 2, 3)  # (B, 2, 3)


def _projective(r: Tensor) -> Tensor:
    one = torch.ones_like(r[:, :1])
    return torch.cat([r, one], dim=1).view(-1, 3, 3)  # (B, 3, 3)


def _tps(r: Tensor) -> Tensor:
    return r.view(r.shape[0], r.shape[1] // 2, 2)  # (B, K, 2); no -1: B may be 0


def _affine3d(r: Tensor) -> Tensor:
    return r.view(-1, 3, 4)  # (B, 3, 4)


def _matrix(a: Tensor, b: Tensor, c: Tensor, d: Tensor, e: Tensor, f: Tensor) -> Tensor:
    """[[a, b, c], [d, e, f]] from (B,) tensors -> (B, 2, 3)."""
    return torch.stack([a, b, c, d, e, f], dim=1).view(-1, 2, 3)


def _attention(r: Tensor) -> Tensor:
    s, tx, ty = r.unbind(1)
    zero = torch.zeros_like(s)
    return _matrix(s, zero, tx, zero, s, ty)


def _similarity(r: Tensor) -> Tensor:
    # a * I + b * J with J = rotation by +90 degrees in the ops convention: [[0, -1], [1, 0]].
    a, b, tx, ty = r.unbind(1)
    return _matrix(a, -b, tx, b, a, ty)


def _rotation(r: Tensor) -> Tensor:
    angle = r[:, 0]
    c, s = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(angle)
    return _matrix(c, -s, zero, s, c, zero)


def _translation(r: Tensor) -> Tensor:
    tx, ty = r.unbind(1)
    one, zero = torch.ones_like(tx), torch.zeros_like(tx)
    return _matrix(one, zero, tx, zero, one, ty)


@dataclass(frozen=True)
class _Family:
    """One row of the module docstring's table."""

    grid: str  # the stnkit.ops grid generator: "affine", "projective" or "tps"
    dims: int  # spatial dimensions of the input (2 or 3)
    to_theta: Callable[[Tensor], Tensor]
    identity: Callable[[tuple[int, int]], list[float]]  # tps_grid -> r0


TRANSFORMS: dict[str, _Family] = {
    "affine": _Family("affine", 2, _affine, lambda g: [1, 0, 0, 0, 1, 0]),
    "projective": _Family("projective", 2, _projective, lambda g: [1, 0, 0, 0, 1, 0, 0, 0]),
    "tps": _Family("tps", 2, _tps,
                   lambda g: tps_control_points(g, dtype=torch.float64).reshape(-1).tolist()),
    "attention": _Family("affine", 2, _attention, lambda g: [1, 0, 0]),
    "similarity": _Family("affine", 2, _similarity, lambda g: [1, 0, 0, 0]),
    "rotation": _Family("affine", 2, _rotation, lambda g: [0]),
    "translation": _Family("affine", 2, _translation, lambda g: [0, 0]),
    "affine3d": _Family("affine", 3, _affine3d, lambda g: [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]),
}
"""Transform families by name (the ``transform`` argument)."""


def _check_tps_grid(tps_grid: Any, fn: str) -> tuple[int, int]:
    grid = check_size(tps_grid, 2, name="tps_grid", fn=fn)
    if min(grid) < 2:
        fail(fn, "tps_grid", "to have at least 2 control points per side", repr(tuple(tps_grid)))
    return grid


class ThetaRegressor(nn.Module):
    """The final regression layer of a localisation network: features (B, F) -> theta.

    A linear layer with ``P`` outputs (see the module docstring's table) initialised to the
    identity transform (zero weights, identity bias), followed by the fixed map r -> theta.
    Under ``torch.autocast`` both run in the layer's own dtype (theta is coordinates: see
    ``stnkit.ops``, "Mixed precision"), so a float32 model gives a float32 theta.

    Args:
        in_features: F.
        transform: a family of :data:`TRANSFORMS`.
        tps_grid: (rows, cols) of TPS control points (``transform="tps"`` only).
    """

    def __init__(self, in_features: int, transform: str = "affine", *,
                 tps_grid: Sequence[int] = (4, 4)):
        super().__init__()
        fn = "ThetaRegressor"
        if isinstance(in_features, bool) or not isinstance(in_features, int):
            fail(fn, "in_features", "an int", repr(in_features), error=TypeError)
        if in_features <= 0:
            fail(fn, "in_features", "a positive int", repr(in_features))
        check_choice(transform, tuple(TRANSFORMS), name="transform", fn=fn)
        self.transform = transform
        self.tps_grid = _check_tps_grid(tps_grid, fn) if transform == "tps" else None
        family = TRANSFORMS[transform]
        identity = torch.tensor(family.identity(self.tps_grid), dtype=torch.float64)
        self.num_params = identity.numel()
        self.linear = nn.Linear(in_features, self.num_params)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.copy_(identity)
        self._to_theta = family.to_theta
        if transform == "tps":
            # Where the control points sit in the output (dst_points of ops.tps_grid).
            self.register_buffer("control_points", tps_control_points(self.tps_grid),
                                 persistent=False)  # (K, 2)

    def to_theta(self, raw: Tensor) -> Tensor:
        """Raw regression outputs (B, P) -> theta (see the module docstring's table)."""
        check_shape(raw, ("B", self.num_params), name="raw", fn="ThetaRegressor.to_theta")
        return self._to_theta(raw)

    def forward(self, features: Tensor) -> Tensor:
        # theta is coordinates: under torch.autocast the regression runs in the layer's own
        # dtype (a (B, F) x (F, P) product, negligible next to the localisation net), so
        # theta is not rounded to 16 bits (``stnkit.ops``, "Mixed precision")
        device = features.device.type
        if torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return self._to_theta(self.linear(features.to(self.linear.weight.dtype)))
        return self._to_theta(self.linear(features))

    def extra_repr(self) -> str:
        grid = f", tps_grid={self.tps_grid}" if self.tps_grid else ""
        return (f"transform={self.transform!r}, in_features={self.linear.in_features}, "
                f"params={self.num_params}{grid}")


def _infer_features(localization: nn.Module, input_size: tuple[int, ...] | None, fn: str) -> int:
    """F of a localisation net: its ``out_features``, or one dry run on ``input_size``."""
    width = getattr(localization, "out_features", None)
    if isinstance(width, int) and not isinstance(width, bool) and input_size is None:
        return width
    if input_size is None:
        fail(fn, "features", "(the width F of the localisation output) or input_size to infer "
             f"it, since {type(localization).__name__} has no int attribute out_features",
             "neither", error=TypeError)
    try:
        param = next(localization.parameters())
        dtype, device = param.dtype, param.device
    except StopIteration:
        dtype, device = torch.get_default_dtype(), torch.device("cpu")
    was_training = localization.training
    localization.eval()  # no batch-norm statistics updated by the dry run
    try:
        with torch.no_grad():
            out = localization(torch.zeros(2, *input_size, dtype=dtype, device=device))
    finally:
        localization.train(was_training)
    if not isinstance(out, Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        fail(fn, "localization output", "of shape (B, F)", got)
    return int(out.shape[1])


def _solve_tps_matrix(st: "SpatialTransformer", size: tuple) -> Tensor:
    """``st``'s TPS matrix (``ops.tps_matrix``) for an output ``size``, float64 on the CPU.

    Solving costs tens of ms and checks the control points with data-dependent ``if``s."""
    dst = None if st._tps_via_warp else st.regressor.control_points.detach().cpu()
    return tps_matrix(size, dst_points=dst, k=st.regressor.num_params // 2,
                      align_corners=st.align_corners, dtype=torch.float64, device="cpu")


@torch.compiler.assume_constant_result
def _solved_while_tracing(st: "SpatialTransformer", size: tuple, dtype: torch.dtype,
                          device: torch.device) -> Tensor:
    """Called eagerly by ``torch.compile`` while it traces; its result becomes a constant of
    the graph. It keeps nothing: a change to the transformer's cache would fail the guards."""
    return _solve_tps_matrix(st, size).to(dtype=dtype, device=device)


def _tps_matrix_for(st: "SpatialTransformer", size: tuple, dtype: torch.dtype,
                    device: torch.device) -> Tensor:
    """The TPS matrix of a forward pass in ``dtype`` on ``device``, outside every graph.

    The matrix depends only on the control points, size and ``align_corners``, never on the
    input. ``__init__`` solves it in float64 where the output size is known, and eager calls
    keep a copy per (size, dtype, device). Under ``torch.compile`` and ``torch.export`` only
    the cast of the float64 matrix is traced; a size first seen under ``torch.compile`` is
    solved eagerly during tracing, and under ``torch.export``, which cannot do that, it is a
    clear error. So a TPS model compiles and exports on its first call.
    """
    if torch.compiler.is_compiling():  # reads only _tps_base, which eager calls of a known
        if size in st._tps_base:       # size never change: no guard fails between them
            return st._tps_base[size].to(dtype=dtype, device=device)
        if torch.compiler.is_exporting():
            fail("SpatialTransformer", "output_size",
                 "to be known before torch.export traces a TPS transformer (pass output_size "
                 "or input_size, or call the module once eagerly)",
                 f"None, and no TPS matrix solved yet for an output of {size}")
        return _solved_while_tracing(st, size, dtype, device)
    key = (size, dtype, str(device))
    if key not in st._tps_matrices:
        if size not in st._tps_base:
            st._tps_base[size] = _solve_tps_matrix(st, size)
        st._tps_matrices[key] = st._tps_base[size].to(dtype=dtype, device=device)
    return st._tps_matrices[key]


class SpatialTransformer(nn.Module):
    """A spatial transformer: localisation net -> theta -> ``stnkit.ops.warp``.

    Args:
        localization: any module mapping the input (B, C, H, W) (or (B, C, D, H, W) for
            ``affine3d``) to features (B, F). The transformer adds the final regression layer
            (:class:`ThetaRegressor`, ``self.regressor``), initialised to the identity.
        transform: ``affine``, ``projective``, ``tps``, ``attention``, ``similarity``,
            ``rotation``, ``translation`` or ``affine3d`` (see the module docstring).
        output_size: (H_out, W_out) (``(D_out, H_out, W_out)`` for affine3d); None keeps the
            input's spatial size.
        tps_grid: (rows, cols) of TPS control points; (4, 4) is the paper's 16.
        mode, padding_mode, align_corners: as :func:`stnkit.ops.warp`.
        features: F. Default: ``localization.out_features`` (the ready localisation nets of
            :mod:`stnkit.nn.localization` have it), else one dry run on ``input_size``.
        input_size: (C, H, W) of the input; when given, F is inferred by a no-grad dry run
            of the localisation net in eval mode, and every input's shape is checked
            against it (leave it out for a localisation net that takes any size). Inputs
            must also be on the module's device and, outside ``torch.autocast``, have its
            dtype.
        warp_channels: warp only these input channels (the localisation still sees all of
            them), e.g. ``[0]``: the paper's MNIST-addition transformers. None: all.
        backend: :func:`stnkit.ops.warp`'s backend ("auto" picks the fastest kernel;
            "torch" is plain grid + sample, the easiest for ``torch.compile`` to trace).

    Shapes:
        input (B, C, H, W); output (B, C', H_out, W_out) with C' = C or len(warp_channels);
        theta as :meth:`theta`. A fresh transformer returns its input (identity theta).

    >>> import torch
    >>> from torch import nn
    >>> from stnkit.nn import SpatialTransformer
    >>> loc = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 32), nn.ReLU())
    >>> st = SpatialTransformer(loc, "attention", features=32, output_size=(14, 14))
    >>> st(torch.rand(4, 1, 28, 28)).shape
    torch.Size([4, 1, 14, 14])
    """

    def __init__(self, localization: nn.Module, transform: str = "affine", *,
                 output_size: Sequence[int] | None = None, tps_grid: Sequence[int] = (4, 4),
                 mode: str = "bilinear", padding_mode: str = "zeros",
                 align_corners: bool = False, features: int | None = None,
                 input_size: Sequence[int] | None = None,
                 warp_channels: Sequence[int] | None = None, backend: str = "auto"):
        super().__init__()
        fn = "SpatialTransformer"
        if not isinstance(localization, nn.Module):
            fail(fn, "localization", "to be an nn.Module", type(localization).__name__,
                 error=TypeError)
        check_choice(transform, tuple(TRANSFORMS), name="transform", fn=fn)
        family = TRANSFORMS[transform]
        check_choice(mode, MODES, name="mode", fn=fn)
        if mode == "bicubic" and family.dims == 3:
            fail(fn, "mode", "'bilinear' or 'nearest' for a 3-D transform", repr(mode))
        check_choice(padding_mode, PADDING_MODES, name="padding_mode", fn=fn)
        check_choice(backend, BACKENDS, name="backend", fn=fn)
        if not isinstance(align_corners, bool):
            fail(fn, "align_corners", "a bool", repr(align_corners), error=TypeError)
        if output_size is not None:
            output_size = check_size(output_size, family.dims, name="output_size", fn=fn)
        if input_size is not None:
            input_size = check_size(input_size, family.dims + 1, name="input_size", fn=fn)
        if warp_channels is not None:
            if isinstance(warp_channels, (str, bytes)) or not isinstance(warp_channels, Sequence):
                fail(fn, "warp_channels", "a sequence of channel indices", repr(warp_channels),
                     error=TypeError)
            chans = []
            for c in warp_channels:
                if isinstance(c, bool) or not isinstance(c, int):
                    fail(fn, "warp_channels", "to contain ints", repr(warp_channels),
                         error=TypeError)
                if c < 0 or (input_size is not None and c >= input_size[0]):
                    limit = f" below C={input_size[0]}" if input_size is not None else ""
                    fail(fn, "warp_channels", f"to contain channel indices >= 0{limit}",
                         repr(list(warp_channels)))
                chans.append(c)
            if not chans:
                fail(fn, "warp_channels", "to be non-empty", repr(list(warp_channels)))
            warp_channels = tuple(chans)
        if features is None:
            features = _infer_features(localization, input_size, fn)
        elif isinstance(features, bool) or not isinstance(features, int):
            fail(fn, "features", "an int", repr(features), error=TypeError)
        elif features <= 0:
            fail(fn, "features", "a positive int", repr(features))

        self.localization = localization
        self.regressor = ThetaRegressor(features, transform, tps_grid=tps_grid)
        self.transform = transform
        self.features = features
        self.output_size = output_size
        self.input_size = input_size
        self.tps_grid = self.regressor.tps_grid
        self.mode = mode
        self.padding_mode = padding_mode
        self.align_corners = align_corners
        self.warp_channels = warp_channels
        self.backend = backend
        self._grid = family.grid
        self._dims = family.dims
        # ops.warp's default TPS dst_points are our lattice when the grid is square (tested);
        # passing dst_points explicitly would keep warp off its fused kernels.
        self._tps_via_warp = self.tps_grid is not None and self.tps_grid[0] == self.tps_grid[1]
        self._tps_base: dict[tuple, Tensor] = {}  # size -> float64 CPU tps_matrix
        self._tps_matrices: dict[tuple, Tensor] = {}  # (size, dtype, device) -> its cast
        if self._grid == "tps":  # solved now where the size is known (_tps_matrix_for)
            size = output_size if output_size is not None else (
                input_size[1:] if input_size is not None else None)
            if size is not None:
                self._tps_base[tuple(size)] = _solve_tps_matrix(self, tuple(size))

    # -- checks ------------------------------------------------------------------------------
    def _check_input(self, x: Tensor, fn: str) -> None:
        spec = ("B", "C", "H", "W") if self._dims == 2 else ("B", "C", "D", "H", "W")
        check_shape(x, spec, name="input", fn=fn)
        check_floating(x, name="input", fn=fn)
        if self.input_size is not None and x.shape[1] != self.input_size[0]:
            fail(fn, "input", f"with {self.input_size[0]} channels (input_size="
                 f"{self.input_size})", f"{x.shape[1]} channels, shape {tuple(x.shape)}")
        if self.input_size is not None and tuple(x.shape[2:]) != self.input_size[1:]:
            fail(fn, "input", f"of shape (B, {', '.join(map(str, self.input_size))}) "
                 f"(input_size={self.input_size})", format_shape(x.shape))
        param = next(self.parameters(), None)  # the regressor's, at least
        if param is not None:
            if x.device != param.device:
                fail(fn, "input", f"on the module's device ({param.device})", x.device)
            if x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
                fail(fn, "input", f"to have the module's dtype ({param.dtype}; or run "
                     "under torch.autocast)", x.dtype, error=TypeError)
        if self.warp_channels is not None and max(self.warp_channels) >= x.shape[1]:
            fail(fn, "input", f"with more than {max(self.warp_channels)} channels "
                 f"(warp_channels={list(self.warp_channels)})", tuple(x.shape))

    def _theta(self, x: Tensor, fn: str) -> Tensor:
        features = self.localization(x)
        check_tensor(features, name="localization output", fn=fn)
        check_shape(features, (x.shape[0], self.features), name="localization output", fn=fn)
        return self.regressor(features)

    # -- public ------------------------------------------------------------------------------
    def theta(self, x: Tensor) -> Tensor:
        """The transform the grid generator uses for input x.

        Returns:
            (B, 2, 3) for affine and the restricted families, (B, 3, 3) projective,
            (B, K, 2) TPS source points, (B, 3, 4) affine3d.
        """
        self._check_input(x, "SpatialTransformer.theta")
        return self._theta(x, "SpatialTransformer.theta")

    def sampling_grid(self, theta: Tensor, size: Sequence[int]) -> Tensor:
        """The sampling grid of ``theta`` for an output of spatial ``size``.

        Returns:
            (B, H, W, 2) (or (B, D, H, W, 3) for affine3d) input coordinates in [-1, 1].
        """
        if self._grid == "tps":
            dst = self.regressor.control_points.to(device=theta.device)
            return ops.tps_grid(theta, size, dst_points=dst, align_corners=self.align_corners)
        if self._grid == "projective":
            return ops.projective_grid(theta, size, align_corners=self.align_corners)
        return ops.affine_grid(theta, size, align_corners=self.align_corners)

    def forward(self, x: Tensor, return_theta: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Warp x by the transform its localisation net predicts.

        Returns:
            the warped tensor (B, C', *output_size); with ``return_theta`` also theta
            (as :meth:`theta`), ``(output, theta)``.
        """
        fn = "SpatialTransformer"
        self._check_input(x, fn)
        theta = self._theta(x, fn)
        if self.warp_channels is not None:
            chans = self.warp_channels
            if chans == tuple(range(chans[0], chans[-1] + 1)):
                x = x[:, chans[0]:chans[-1] + 1]  # a view
            else:
                x = x[:, list(chans)]
        size = self.output_size if self.output_size is not None else tuple(x.shape[2:])
        dst = None
        if self._grid == "tps" and not self._tps_via_warp:
            dst = self.regressor.control_points.to(device=theta.device)
        if self._grid == "tps" and self.backend in ("auto", "torch"):  # what warp would run
            # The spline's matrix is solved once per size, dtype and device, not per call
            # (and its data-dependent checks stay out of torch.export / ONNX traces); the
            # grid in warp's compute dtype (``stnkit.ops``, "Mixed precision").
            work = compute_dtype(x, theta)
            matrix = _tps_matrix_for(self, tuple(size), work, theta.device)
            grid = ops.tps_grid(theta.to(work), size, dst_points=dst,
                                align_corners=self.align_corners, matrix=matrix)
            out = ops.sample(x, grid, mode=self.mode, padding_mode=self.padding_mode,
                             align_corners=self.align_corners)
            return (out, theta) if return_theta else out
        out = ops.warp(x, theta, transform=self._grid, size=size, mode=self.mode,
                       padding_mode=self.padding_mode, align_corners=self.align_corners,
                       backend=self.backend, dst_points=dst)
        return (out, theta) if return_theta else out

    def __prepare_scriptable__(self):
        # torch.jit.script calls this first (on every submodule): one clear error instead of
        # a failure deep in the checks' type hints or the kernels
        fail("SpatialTransformer", "a compiler", "other than torch.jit.script, which cannot "
             "compile stnkit's checks and kernels: use torch.compile or torch.export.export "
             "(torch.jit.trace works too)", "torch.jit.script", error=TypeError)

    def extra_repr(self) -> str:
        parts = [f"transform={self.transform!r}", f"params={self.regressor.num_params}",
                 f"features={self.features}", f"output_size={self.output_size}"]
        if self.tps_grid is not None:
            parts.append(f"tps_grid={self.tps_grid}")
        if self.warp_channels is not None:
            parts.append(f"warp_channels={list(self.warp_channels)}")
        parts += [f"mode={self.mode!r}", f"padding_mode={self.padding_mode!r}",
                  f"align_corners={self.align_corners}"]
        if self.backend != "auto":
            parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)


class ParallelSpatialTransformers(nn.Module):
    """Several spatial transformers on the same input (the paper's 2x / 4x ST-CNN on CUB).

    Args:
        transformers: a non-empty sequence of :class:`SpatialTransformer`.
        combine: ``"concat"``: outputs concatenated along channels (they must share
            their batch and spatial size); ``"list"``: the list of outputs.

    ``forward(x, return_theta=True)`` also returns the list of thetas, in order.
    For serial stacking use ``nn.Sequential(st1, st2)``.
    """

    def __init__(self, transformers: Sequence[SpatialTransformer], *, combine: str = "concat"):
        super().__init__()
        fn = "ParallelSpatialTransformers"
        if isinstance(transformers, nn.ModuleList):
            transformers = list(transformers)
        if isinstance(transformers, (nn.Module, str, bytes)) or not isinstance(transformers,
                                                                             Sequence):
            fail(fn, "transformers", "a sequence of SpatialTransformer",
                 type(transformers).__name__, error=TypeError)
        if len(transformers) == 0:
            fail(fn, "transformers", "at least one SpatialTransformer", "none")
        for i, t in enumerate(transformers):
            if not isinstance(t, SpatialTransformer):
                fail(fn, f"transformers[{i}]", "to be a SpatialTransformer", type(t).__name__,
                     error=TypeError)
        check_choice(combine, ("concat", "list"), name="combine", fn=fn)
        self.transformers = nn.ModuleList(transformers)
        self.combine = combine

    def forward(self, x: Tensor, return_theta: bool = False):
        outputs, thetas = [], []
        for t in self.transformers:
            out, theta = t(x, return_theta=True)
            outputs.append(out)
            thetas.append(theta)
        if self.combine == "concat":
            first = outputs[0].shape
            for i, o in enumerate(outputs[1:], start=1):
                if o.shape[0] != first[0] or o.shape[2:] != first[2:]:
                    fail("ParallelSpatialTransformers", f"output {i}",
                         f"to have batch and spatial size {(first[0], *first[2:])} like output "
                         "0 to concatenate them (set output_size)", tuple(o.shape))
            result: Tensor | list[Tensor] = torch.cat(outputs, dim=1)
        else:
            result = outputs
        return (result, thetas) if return_theta else result

    def extra_repr(self) -> str:
        return f"combine={self.combine!r}"
