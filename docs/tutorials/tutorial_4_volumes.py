"""
3-D volumes: affine warps and their gradients
=============================================

Everything stnkit does in 2-D it does in 3-D for affine transforms: volumes are
``(B, C, D, H, W)``, points ``(x, y, z)`` with x along W, y along H and z along D, theta is
``(B, 3, 4)``, and :func:`stnkit.ops.warp` runs fused kernels (C++ on the CPU, Triton on
CUDA) whose backward gives the gradient with respect to theta directly. This tutorial
warps a synthetic volume, then uses those gradients to register a moved copy back onto
the original by gradient descent, the way a 3-D spatial transformer (``"affine3d"``)
learns.
"""

# %%
# A volume
# --------
#
# A 48^3 volume holding a ball, a bar and a small cube, so that rotations are easy to see
# in the three central slices.

import os

import matplotlib.pyplot as plt
import torch

from stnkit import ops

QUICK = os.environ.get("STNKIT_DOCS_QUICK") == "1"
STEPS = 30 if QUICK else 150
torch.manual_seed(0)

N = 48
axis = torch.linspace(-1, 1, N)
z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")  # each (D, H, W)
volume = ((x - 0.2) ** 2 + (y + 0.1) ** 2 + z ** 2 < 0.35 ** 2).float()        # a ball
volume += ((x.abs() < 0.7) & ((y - 0.5).abs() < 0.08) & (z.abs() < 0.15)).float()  # a bar
volume += (((x + 0.5).abs() < 0.12) & ((y + 0.5).abs() < 0.12)
           & ((z - 0.4).abs() < 0.12)).float()                                    # a cube
volume = volume.clamp(max=1)[None, None]  # (B, C, D, H, W) = (1, 1, 48, 48, 48)


def slices(v):
    """The central slices: (H, W) at mid-depth, (D, W) at mid-height, (D, H) at mid-width."""
    v = v[0, 0].detach().numpy()
    c = N // 2
    return [v[c], v[:, c], v[:, :, c]]


def show(volumes, titles):
    fig, axes = plt.subplots(len(volumes), 3, figsize=(6.6, 2.3 * len(volumes)),
                             squeeze=False)
    for row, (v, title) in enumerate(zip(volumes, titles)):
        for col, (s, plane) in enumerate(zip(slices(v), ("z = 0: (y, x)", "y = 0: (z, x)",
                                                         "x = 0: (z, y)"))):
            ax = axes[row, col]
            ax.imshow(s, cmap="magma", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(plane, fontsize=8)
        axes[row, 0].set_ylabel(title, fontsize=8)
    fig.tight_layout()


# %%
# An affine warp of the volume
# ----------------------------
#
# theta maps output coordinates to input coordinates (see :doc:`/conventions`), here a
# rotation about the z axis followed by one about the x axis, built as 3 x 3 matrices and
# a translation. ``ops.warp`` picks the 3-D path from the 5-D input.


def rotation3d(about_z: float, about_x: float, shift=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """(1, 3, 4) theta: rotate about z, then about x (radians), then shift (x, y, z)."""
    cz, sz = torch.cos(torch.tensor(about_z)), torch.sin(torch.tensor(about_z))
    cx, sx = torch.cos(torch.tensor(about_x)), torch.sin(torch.tensor(about_x))
    rz = torch.tensor([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    return torch.cat([rx @ rz, torch.tensor(shift)[:, None]], dim=1)[None]


true_theta = rotation3d(0.5, 0.3, shift=(0.1, -0.05, 0.0))
moved = ops.warp(volume, true_theta)                      # (1, 1, 48, 48, 48)
half = ops.warp(volume, true_theta, size=(24, 24, 24))    # any output size
print(moved.shape, half.shape)
show([volume, moved], ["volume", "warped"])

# %%
# Gradients with respect to theta
# -------------------------------
#
# ``warp`` is differentiable in the volume and in theta. Registration is the smallest
# demonstration: start from the identity and move theta, by gradient descent on the
# squared difference, until the warped ``moved`` volume matches the original. (The
# volume is blurred first: a smoother image gives the optimiser a wider basin.) A 3-D
# spatial transformer does the same inside a network, with a localisation net predicting
# theta (``SpatialTransformer(..., "affine3d", output_size=(D, H, W))``).


def blur(v, passes=2):
    for _ in range(passes):
        v = torch.nn.functional.avg_pool3d(v, 5, stride=1, padding=2)
    return v


target, source = blur(volume), blur(moved)
theta = torch.eye(3, 4)[None].requires_grad_(True)
optimizer = torch.optim.Adam([theta], lr=0.02)
losses = []
for step in range(STEPS):
    loss = ((ops.warp(source, theta) - target) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()  # d loss / d theta: 12 sums per volume, computed by the fused kernel
    optimizer.step()
    losses.append(loss.item())
print(f"loss {losses[0]:.5f} -> {losses[-1]:.5f} in {STEPS} steps")

# %%
# Warping by ``true_theta`` and then by the found theta gives back the volume where the
# registration succeeded, so the single theta of the two warps in a row,
# :func:`stnkit.ops.transforms.compose` ``(true_theta, found)``, should be (close to) the
# identity matrix.

from stnkit.ops import transforms as T  # noqa: E402

composite = T.compose(true_theta, theta.detach())
print("compose(true, found) =\n", composite[0].round(decimals=2) + 0.0)  # + 0.0: no -0.

fig, ax = plt.subplots(figsize=(5, 2.6))
ax.semilogy(losses)
ax.set_xlabel("step")
ax.set_ylabel("mean squared difference")
fig.tight_layout()
show([target, ops.warp(source, theta.detach())], ["target (blurred)", "registered"])

# %%
# The gradient is exact: ``torch.autograd.gradcheck`` compares it with finite
# differences in float64 (at a non-integer sampling point; bilinear interpolation has
# kinks at integer coordinates, see :doc:`/mathematics`).

small = torch.rand(1, 2, 4, 5, 6, dtype=torch.float64)
t0 = (torch.eye(3, 4, dtype=torch.float64) * 0.9 + 0.013)[None].requires_grad_(True)
print("gradcheck:", torch.autograd.gradcheck(lambda t: ops.warp(small, t, size=(3, 4, 5)), t0))
