"""Building, composing and inverting theta; conversion to and from OpenCV pixel matrices.

Convention: every theta here maps *output* coordinates to *input* coordinates, normalised to
[-1, 1] (x right, y down, as displayed), like ``torch.nn.functional.affine_grid``. The
builders are written in that grid space, i.e. they are the paper's parametrisation:

- ``scaling(s)``: the output samples the input at ``s * (x, y)``, so s < 1 zooms in;
- ``translation(tx, ty)``: the output samples the input at ``(x + tx, y + ty)``, so the
  content moves by (-tx, -ty);
- ``rotation(angle)``: angle in **radians**; a positive angle turns the image content
  **counter-clockwise as displayed** (y axis pointing down), like OpenCV's
  ``getRotationMatrix2D`` with a positive angle. The matrix is ``[[cos, -sin, 0],
  [sin, cos, 0]]``. Normalised coordinates stretch x and y by the image's width and height,
  so this is a true rotation only for square images: build non-square ones in pixels and
  convert them with ``from_pixel``.

``compose(a, b)`` is warping by a, then by b: ``a @ b`` in homogeneous coordinates (the first
warp is the left factor, because theta maps output to input). ``to_pixel`` / ``from_pixel``
convert to and from OpenCV's forward pixel matrices (input pixel -> output pixel, pixel
centres at integers, as ``cv2.warpAffine`` / ``cv2.warpPerspective`` take them).

Pixel matrices (OpenCV's convention, input -> output) are built by ``pixel_rotation`` (exactly
``cv2.getRotationMatrix2D``) and ``pixel_affine`` (shear, scale, rotation and translation
about the image centres: non-square images rotate truly), composed by ``compose_pixels``
(first, then second: ``second @ first``), and converted to theta by ``from_pixel``.
``check_invertible`` is the one invertibility test every function here uses.

Parameters are python numbers (batch of 1) or tensors of shape (B,) (0-d counts as (1,)); a
batch of 1 broadcasts against B. The result takes dtype and device from the tensor
arguments (the default dtype on the CPU when there are none) and is differentiable w.r.t.
them. Every builder returns (B, 2, 3).
"""

from __future__ import annotations

import torch
from torch import Tensor

from stnkit._checks import check_floating, check_size, check_tensor, fail, format_shape

__all__ = [
    "attention",
    "check_invertible",
    "compose",
    "compose_pixels",
    "from_pixel",
    "identity",
    "invert",
    "pixel_affine",
    "pixel_rotation",
    "rotation",
    "scaling",
    "shear",
    "similarity",
    "to_pixel",
    "translation",
]

_HALF = (torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _params(fn: str, **named) -> list[Tensor]:
    """Numbers / (B,) tensors -> 1-D tensors of one dtype and device, broadcast to (B,)."""
    tensors = {k: v for k, v in named.items() if isinstance(v, Tensor)}
    for name, v in named.items():
        if isinstance(v, Tensor):
            check_floating(v, name=name, fn=fn)
            if v.dim() > 1:
                fail(fn, name, "a number or a tensor of shape (B,)", format_shape(v.shape))
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            fail(fn, name, "a number or a tensor of shape (B,)", type(v).__name__,
                 error=TypeError)
    if tensors:
        first_name, first = next(iter(tensors.items()))
        dtype, device = first.dtype, first.device
        for name, v in tensors.items():
            if v.dtype != dtype:
                fail(fn, name, f"to have the same dtype as {first_name} ({dtype})", v.dtype,
                     error=TypeError)
            if v.device != device:
                fail(fn, name, f"to be on the same device as {first_name} ({device})",
                     v.device)
    else:
        dtype, device = torch.get_default_dtype(), torch.device("cpu")
    out = [v.reshape(-1) if isinstance(v, Tensor) else torch.tensor([float(v)], dtype=dtype,
                                                                     device=device)
           for v in named.values()]
    sizes = {t.shape[0] for t in out} - {1}
    if len(sizes) > 1:
        got = ", ".join(f"{k}: {t.shape[0]}" for k, t in zip(named, out))
        fail(fn, "parameters", "to share one batch size B (or 1)", got)
    b = sizes.pop() if sizes else 1
    return [t.expand(b) for t in out]


def _affine(a, b_, c, d, e, f) -> Tensor:
    """[[a, b, c], [d, e, f]] from (B,) tensors -> (B, 2, 3)."""
    return torch.stack([torch.stack([a, b_, c], -1), torch.stack([d, e, f], -1)], -2)


def _kind(theta: Tensor, fn: str, name: str = "theta") -> tuple[int, bool]:
    """(spatial dims n, projective?) for a (B, 2, 3), (B, 3, 4) or (B, 3, 3) theta."""
    check_tensor(theta, name=name, fn=fn)
    kinds = {(2, 3): (2, False), (3, 4): (3, False), (3, 3): (2, True)}
    if theta.dim() != 3 or tuple(theta.shape[1:]) not in kinds:
        fail(fn, name, "of shape (B, 2, 3), (B, 3, 3) or (B, 3, 4)", format_shape(theta.shape))
    check_floating(theta, name=name, fn=fn)
    return kinds[tuple(theta.shape[1:])]


def _homogeneous(theta: Tensor) -> Tensor:
    """(B, n, n+1) affine -> (B, n+1, n+1) with last row [0, ..., 0, 1]; square kept."""
    if theta.shape[1] == theta.shape[2]:
        return theta
    n = theta.shape[1]
    last = torch.zeros(theta.shape[0], 1, n + 1, dtype=theta.dtype, device=theta.device)
    last[:, 0, n] = 1
    return torch.cat([theta, last], dim=1)


def _check_invertible(m: Tensor, fn: str, name: str) -> None:
    """Raise ValueError if any matrix in the (B, n, n) batch is singular in its precision."""
    if m.shape[0] == 0:
        return
    with torch.no_grad():
        if not bool(torch.isfinite(m).all()):
            fail(fn, name, "to be finite", "NaN or Inf")
        cond = torch.linalg.cond(m.double())  # (B,)
        limit = 1.0 / torch.finfo(m.dtype).eps
        bad = torch.nonzero(~(cond <= limit)).reshape(-1)
        if bad.numel():
            i = int(bad[0])
            fail(fn, name, "to be invertible", f"a singular matrix at batch index {i} "
                 f"(condition number {float(cond[i]):.3g})")


def _inverse(theta: Tensor, projective: bool) -> Tensor:
    """Inverse of an invertible (B, n, n+1) affine or (B, 3, 3) projective theta."""
    if projective:
        return torch.linalg.inv(theta)
    a, t = theta[..., :-1], theta[..., -1:]  # (B, n, n), (B, n, 1)
    a_inv = torch.linalg.inv(a)
    return torch.cat([a_inv, -a_inv @ t], dim=-1)  # (B, n, n + 1)


def _in_work_dtype(theta: Tensor):
    """float16/bfloat16 -> float32 for linear algebra; returns (work tensor, dtype back)."""
    return (theta.float() if theta.dtype in _HALF else theta), theta.dtype


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------


def identity(batch: int = 1, *, dim: int = 2, dtype: torch.dtype | None = None,
             device: torch.device | str | None = None) -> Tensor:
    """Identity theta: (batch, 2, 3) for ``dim=2``, (batch, 3, 4) for ``dim=3``."""
    fn = "identity"
    if isinstance(batch, bool) or not isinstance(batch, int):
        fail(fn, "batch", "an int", repr(batch), error=TypeError)
    if not 0 <= batch < 2**31:
        fail(fn, "batch", "an int in [0, 2**31) (the ops' index limit)", batch)
    if dim not in (2, 3) or isinstance(dim, bool):
        fail(fn, "dim", "2 or 3", repr(dim))
    dtype = dtype or torch.get_default_dtype()
    if not dtype.is_floating_point:
        fail(fn, "dtype", "a floating dtype", dtype, error=TypeError)
    eye = torch.eye(dim, dim + 1, dtype=dtype, device=device)
    return eye.expand(batch, dim, dim + 1).clone()


def rotation(angle) -> Tensor:
    """Rotation by ``angle`` radians; positive turns the content counter-clockwise as shown.

    theta = [[cos a, -sin a, 0], [sin a, cos a, 0]]. A true rotation only for square images
    (see the module docstring).

    Args:
        angle: number or (B,).
    Returns:
        (B, 2, 3).
    """
    (a,) = _params("rotation", angle=angle)
    c, s, z = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    return _affine(c, -s, z, s, c, z)


def scaling(sx, sy=None) -> Tensor:
    """Scaling of the sampling grid: theta = [[sx, 0, 0], [0, sy, 0]] (s < 1 zooms in).

    Args:
        sx, sy: numbers or (B,); ``sy=None`` means ``sy = sx``.
    Returns:
        (B, 2, 3).
    """
    sx, sy = _params("scaling", sx=sx, sy=sx if sy is None else sy)
    z = torch.zeros_like(sx)
    return _affine(sx, z, z, z, sy, z)


def translation(tx, ty) -> Tensor:
    """Translation of the sampling grid: theta = [[1, 0, tx], [0, 1, ty]].

    The output samples the input at (x + tx, y + ty): the content moves by (-tx, -ty), in
    normalised units (1 = half the image width / height).

    Returns:
        (B, 2, 3).
    """
    tx, ty = _params("translation", tx=tx, ty=ty)
    z, o = torch.zeros_like(tx), torch.ones_like(tx)
    return _affine(o, z, tx, z, o, ty)


def shear(sx, sy) -> Tensor:
    """Shear of the sampling grid: theta = [[1, sx, 0], [sy, 1, 0]].

    Returns:
        (B, 2, 3).
    """
    sx, sy = _params("shear", sx=sx, sy=sy)
    z, o = torch.zeros_like(sx), torch.ones_like(sx)
    return _affine(o, sx, z, sy, o, z)


def attention(s, tx, ty) -> Tensor:
    """The paper's attention transform: theta = [[s, 0, tx], [0, s, ty]] (crop + zoom).

    Returns:
        (B, 2, 3).
    """
    s, tx, ty = _params("attention", s=s, tx=tx, ty=ty)
    z = torch.zeros_like(s)
    return _affine(s, z, tx, z, s, ty)


def similarity(angle, s, tx, ty) -> Tensor:
    """Rotation, isotropic scale and translation of the sampling grid.

    theta = [[s cos a, -s sin a, tx], [s sin a, s cos a, ty]], i.e. the input is sampled at
    ``s R(a) (x, y) + (tx, ty)``; ``similarity(a, 1, 0, 0) == rotation(a)`` and
    ``similarity(0, s, tx, ty) == attention(s, tx, ty)``.

    Returns:
        (B, 2, 3).
    """
    a, s, tx, ty = _params("similarity", angle=angle, s=s, tx=tx, ty=ty)
    c, sn = s * torch.cos(a), s * torch.sin(a)
    return _affine(c, -sn, tx, sn, c, ty)


# ---------------------------------------------------------------------------------------------
# Algebra
# ---------------------------------------------------------------------------------------------


def compose(a: Tensor, b: Tensor) -> Tensor:
    """The single theta equal to warping by ``a`` first, then by ``b``.

    ``warp(warp(x, a), b) == warp(x, compose(a, b))`` (up to resampling). Since
    ``warp(x, t)(p) = x(t p)``, the composite samples x at ``a (b p)``: in homogeneous
    coordinates ``compose(a, b) = a @ b`` (note the order: the *first* warp is the *left*
    factor). For projective thetas the identity holds where the intermediate homogeneous
    coordinates are positive.

    Args:
        a, b: (B, 2, 3) or (B, 3, 3) (2-D; mixed allowed), or both (B, 3, 4) (3-D). A batch
            of 1 broadcasts.
    Returns:
        (B, 2, 3) if both are affine 2-D, (B, 3, 4) for 3-D, (B, 3, 3) if either is projective.
    """
    return _product(a, b, fn="compose", names=("a", "b"), what="theta")


def _product(a: Tensor, b: Tensor, *, fn: str, names: tuple[str, str], what: str) -> Tensor:
    """``a @ b`` in homogeneous coordinates, for (B, 2, 3) / (B, 3, 3) / (B, 3, 4) matrices."""
    na, pa = _kind(a, fn, names[0])
    nb, pb = _kind(b, fn, names[1])
    if na != nb:
        fail(fn, names[1], f"a {na}-D {what} like {names[0]} {format_shape(a.shape)}",
             format_shape(b.shape))
    if a.dtype != b.dtype:
        fail(fn, names[1], f"to have the same dtype as {names[0]} ({a.dtype})", b.dtype,
             error=TypeError)
    if a.device != b.device:
        fail(fn, names[1], f"to be on the same device as {names[0]} ({a.device})", b.device)
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        fail(fn, names[1], f"to have batch size {a.shape[0]} (or 1) like {names[0]}",
             b.shape[0])
    out = torch.matmul(_homogeneous(a), _homogeneous(b))  # (B, n + 1, n + 1)
    return out if (pa or pb) else out[:, :na]


def check_invertible(matrix: Tensor, *, name: str = "matrix", fn: str = "check_invertible"
                     ) -> None:
    """Raise :class:`~stnkit.StnkitValueError` unless every matrix of the batch is invertible.

    The test every function of this module uses: finite, and condition number at most
    1 / eps of the dtype (float32 for float16/bfloat16). For an affine (B, 2, 3) or (B, 3, 4)
    matrix the linear part is tested (the translation never makes it singular).

    Args:
        matrix: (B, 2, 3) or (B, 3, 4) affine, or (B, 3, 3) projective; theta or pixels.
        name, fn: how the error names the argument and the caller.

    Example: ``check_invertible(torch.tensor([[[1.0, 2.0, 0.0], [2.0, 4.0, 0.0]]]))`` raises
    "check_invertible: expected matrix to be invertible, got a singular matrix at batch
    index 0 (condition number 2.52e+16)".
    """
    n, projective = _kind(matrix, fn, name)
    work, _ = _in_work_dtype(matrix)
    _check_invertible(work if projective else work[..., :n], fn, name)


def invert(theta: Tensor) -> Tensor:
    """Inverse transform: ``compose(theta, invert(theta))`` is the identity.

    Args:
        theta: (B, 2, 3), (B, 3, 4) (affine) or (B, 3, 3) (projective).
    Returns:
        the same shape. Raises ValueError for a singular (or numerically singular) matrix.
    """
    fn = "invert"
    n, projective = _kind(theta, fn)
    work, dtype = _in_work_dtype(theta)
    _check_invertible(work if projective else work[..., :n], fn, "theta")
    return _inverse(work, projective).to(dtype)


# ---------------------------------------------------------------------------------------------
# Pixel matrices
# ---------------------------------------------------------------------------------------------


def _axis_maps(size: tuple[int, ...], align_corners: bool, like: Tensor) -> tuple[Tensor, Tensor]:
    """(P, N): homogeneous normalised -> pixel and pixel -> normalised for one image size.

    Per axis of length L (x along W, y along H, z along D), pixel centres at integers:
    pixel = S u + (L - 1) / 2 with S = L / 2 (align_corners=False) or (L - 1) / 2 (True).
    """
    lengths = list(reversed(size))  # W, H[, D] in coordinate order x, y[, z]
    n = len(lengths)
    scale = [(ln if not align_corners else ln - 1) / 2 for ln in lengths]
    shift = [(ln - 1) / 2 for ln in lengths]
    p = torch.eye(n + 1, dtype=like.dtype, device=like.device)
    q = torch.eye(n + 1, dtype=like.dtype, device=like.device)
    for i in range(n):
        p[i, i], p[i, n] = scale[i], shift[i]
        q[i, i], q[i, n] = 1 / scale[i], -shift[i] / scale[i]
    return p, q


def _pixel_args(fn: str, theta: Tensor, name: str, in_size, out_size, align_corners):
    n, projective = _kind(theta, fn, name)
    in_size = check_size(in_size, n, name="in_size", fn=fn)
    out_size = check_size(out_size, n, name="out_size", fn=fn)
    if not isinstance(align_corners, bool):
        fail(fn, "align_corners", "a bool", repr(align_corners), error=TypeError)
    if align_corners:
        for arg, sz in (("in_size", in_size), ("out_size", out_size)):
            if min(sz) < 2:
                fail(fn, arg, "entries >= 2 when align_corners=True (a 1-pixel axis has no "
                     "pixel scale)", repr(sz))
    return n, projective, in_size, out_size


def to_pixel(theta: Tensor, in_size, out_size, *, align_corners: bool = False) -> Tensor:
    """OpenCV-style pixel matrix M of a normalised theta.

    M maps *input* pixel coordinates (x, y) to *output* pixel coordinates, pixel centres at
    integers: ``cv2.warpAffine(img, M, (W_out, H_out))`` (or ``cv2.warpPerspective`` for
    (3, 3)), without ``WARP_INVERSE_MAP``, gives the picture ``warp(img, theta,
    size=out_size, align_corners=align_corners)`` gives. Projective matrices are not
    rescaled (a homography is defined up to scale).

    Args:
        theta: (B, 2, 3) affine, (B, 3, 3) projective, or (B, 3, 4) 3-D affine (x, y, z).
        in_size, out_size: (H, W) (or (D, H, W)) of the input and output images.
    Returns:
        (B, 2, 3), (B, 3, 3) or (B, 3, 4). Raises ValueError if theta is singular.
    """
    fn = "to_pixel"
    n, projective, in_size, out_size = _pixel_args(fn, theta, "theta", in_size, out_size,
                                                   align_corners)
    work, dtype = _in_work_dtype(theta)
    p_in, _ = _axis_maps(in_size, align_corners, work)
    _, q_out = _axis_maps(out_size, align_corners, work)
    # output pixel -> output normalised -> input normalised -> input pixel
    inverse_map = p_in @ _homogeneous(work) @ q_out  # (B, n + 1, n + 1)
    if not projective:
        inverse_map = inverse_map[:, :n]
    _check_invertible(inverse_map if projective else inverse_map[..., :n], fn, "theta")
    return _inverse(inverse_map, projective).to(dtype)


def from_pixel(matrix: Tensor, in_size, out_size, *, align_corners: bool = False) -> Tensor:
    """Normalised theta of an OpenCV-style pixel matrix; the inverse of ``to_pixel``.

    Args:
        matrix: (B, 2, 3), (B, 3, 3) or (B, 3, 4), mapping input pixel coordinates to output
            pixel coordinates (OpenCV's forward convention, pixel centres at integers).
        in_size, out_size: (H, W) (or (D, H, W)) of the input and output images.
    Returns:
        theta of the same shape, output -> input, normalised. ValueError if M is singular.
    """
    fn = "from_pixel"
    n, projective, in_size, out_size = _pixel_args(fn, matrix, "matrix", in_size, out_size,
                                                   align_corners)
    work, dtype = _in_work_dtype(matrix)
    _check_invertible(work if projective else work[..., :n], fn, "matrix")
    _, q_in = _axis_maps(in_size, align_corners, work)
    p_out, _ = _axis_maps(out_size, align_corners, work)
    # output normalised -> output pixel -> input pixel -> input normalised
    theta = q_in @ _homogeneous(_inverse(work, projective)) @ p_out  # (B, n + 1, n + 1)
    return (theta if projective else theta[:, :n]).to(dtype)


def pixel_rotation(center, degrees, scale=1.0) -> Tensor:
    """``cv2.getRotationMatrix2D(center, degrees, scale)`` as a (B, 2, 3) pixel matrix.

    Rotation by ``degrees`` counter-clockwise as displayed (y down) and isotropic ``scale``
    about the pixel ``center = (cx, cy)``, input pixel -> output pixel (pixel centres at
    integers):

        [[a, b, (1 - a) cx - b cy], [-b, a, b cx + (1 - a) cy]],  a = s cos, b = s sin.

    Args:
        center: (cx, cy), two numbers or (B,) tensors.
        degrees, scale: numbers or (B,).
    Returns:
        (B, 2, 3); turn it into theta with :func:`from_pixel`.
    """
    if not isinstance(center, (tuple, list)) or len(center) != 2:
        fail("pixel_rotation", "center", "a pair (cx, cy)", repr(center), error=TypeError)
    deg, s, cx, cy = _params("pixel_rotation", degrees=degrees, scale=scale, cx=center[0],
                             cy=center[1])
    rad = deg * (torch.pi / 180)
    a, b = s * torch.cos(rad), s * torch.sin(rad)
    return _affine(a, b, (1 - a) * cx - b * cy, -b, a, b * cx + (1 - a) * cy)


def pixel_affine(in_size, out_size=None, *, degrees=0.0, scale=1.0, translate=(0.0, 0.0),
                 shear=(0.0, 0.0), dtype: torch.dtype | None = None) -> Tensor:
    """Shear, scale, rotate and translate about the image centres, as a (B, 2, 3) pixel matrix.

    Input pixel -> output pixel (OpenCV's convention, pixel centres at integers), in this
    order: first shear, then scale, then rotate, then translate; the input centre
    ``c_in = ((W_in - 1) / 2, (H_in - 1) / 2)`` lands on the output centre (plus translate):

        M = T(c_out + translate) . R(degrees) . S(scale) . Sh(shear) . T(-c_in)

    with R = [[cos, sin], [-sin, cos]] (counter-clockwise as displayed; with equal sizes and
    no shear this is exactly ``cv2.getRotationMatrix2D(c, degrees, scale)``), S = scale * I and
    Sh = [[1, sx], [sy, 1]] (x' = x + sx y, y' = y + sy x). It is a true rotation for any
    aspect ratio (unlike :func:`rotation`, which works in normalised coordinates).

    Args:
        in_size: (H_in, W_in); out_size: (H_out, W_out), default ``in_size``.
        degrees, scale: numbers or (B,); translate = (tx, ty) (pixels, right and down) and
            shear = (sx, sy): pairs of numbers or (B,) tensors.
        dtype: of the result when no argument is a tensor (default: the default dtype).
    Returns:
        (B, 2, 3); may be singular (sx * sy = 1): see :func:`check_invertible`.
    """
    fn = "pixel_affine"
    h_in, w_in = check_size(in_size, 2, name="in_size", fn=fn)
    h_out, w_out = check_size(in_size if out_size is None else out_size, 2, name="out_size",
                              fn=fn)
    for name, pair in (("translate", translate), ("shear", shear)):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            fail(fn, name, "a pair of numbers or (B,) tensors", repr(pair), error=TypeError)
    named = dict(degrees=degrees, scale=scale, tx=translate[0], ty=translate[1],
                 sx=shear[0], sy=shear[1])
    if dtype is not None and not any(isinstance(v, Tensor) for v in named.values()):
        named = {k: torch.tensor(float(v), dtype=dtype) if isinstance(v, (int, float))
                 and not isinstance(v, bool) else v for k, v in named.items()}
    deg, s, tx, ty, sx, sy = _params(fn, **named)
    rad = deg * (torch.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # A = s R Sh, R = [[cos, sin], [-sin, cos]], Sh = [[1, sx], [sy, 1]]
    a00, a01 = s * (cos + sin * sy), s * (cos * sx + sin)
    a10, a11 = s * (-sin + cos * sy), s * (-sin * sx + cos)
    cx_in, cy_in = (w_in - 1) / 2, (h_in - 1) / 2
    b0 = (w_out - 1) / 2 + tx - (a00 * cx_in + a01 * cy_in)
    b1 = (h_out - 1) / 2 + ty - (a10 * cx_in + a11 * cy_in)
    return _affine(a00, a01, b0, a10, a11, b1)


def compose_pixels(first: Tensor, second: Tensor) -> Tensor:
    """The single pixel matrix of applying ``first``, then ``second`` (OpenCV convention,
    input pixel -> output pixel): ``second @ first`` in homogeneous coordinates.

    ``cv2.warpAffine(cv2.warpAffine(img, first, ...), second, ...)`` equals (up to
    resampling) ``cv2.warpAffine(img, compose_pixels(first, second)[0], ...)``. Note the order
    is the reverse of :func:`compose`, whose thetas map output to input.

    Args:
        first, second: (B, 2, 3) or (B, 3, 3) (mixed allowed), or both (B, 3, 4). A batch of 1
            broadcasts.
    Returns:
        (B, 2, 3) if both are affine 2-D, (B, 3, 4) for 3-D, (B, 3, 3) if either is projective.
    """
    return _product(second, first, fn="compose_pixels", names=("second", "first"),
                    what="matrix")
