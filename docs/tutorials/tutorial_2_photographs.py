"""
Warp photographs like OpenCV
============================

stnkit's warps are the spatial transformer's forward pass without a network: give it a
transform, it resamples the image. This tutorial rotates, shears, applies a homography and
a thin-plate spline to a photograph, with the transforms written in **pixels**, the way
OpenCV takes them (``cv2.warpAffine``, ``cv2.warpPerspective``), and converted to stnkit's
normalised ``theta`` by :func:`stnkit.ops.transforms.from_pixel`. The results equal
OpenCV's to within one grey level (stnkit's tests compare them).

The photograph is the one that ships with matplotlib (Grace Hopper, 600 x 512).
"""

# %%
# Read the picture
# ----------------
#
# :func:`stnkit.viz.read_image` reads any file Pillow opens as a float tensor ``(C, H, W)``
# in [0, 1]; stnkit's ops take batches ``(B, C, H, W)``.

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.cbook import get_sample_data

from stnkit import ops
from stnkit.ops import transforms as T
from stnkit.viz import read_image

with get_sample_data("grace_hopper.jpg") as f:
    photo = read_image(f.name)[None]  # (1, 3, 600, 512)
H, W = photo.shape[2:]
print(photo.shape, photo.dtype)


def show(images, titles):
    fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.9))
    for ax, image, title in zip(axes, images, titles):
        ax.imshow(image[0].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()


# %%
# Rotation about the centre
# -------------------------
#
# :func:`~stnkit.ops.transforms.pixel_rotation` is ``cv2.getRotationMatrix2D``: a
# forward pixel matrix (input pixel -> output pixel, pixel centres at integers), positive
# angles counter-clockwise as displayed. ``from_pixel`` turns it into the theta that
# :func:`stnkit.ops.warp` takes (output -> input, normalised), for the input and output
# sizes, so a non-square picture turns truly.
#
# .. code-block:: python
#
#     # the same in OpenCV
#     M = cv2.getRotationMatrix2D(((W - 1) / 2, (H - 1) / 2), 30, 1.0)
#     out = cv2.warpAffine(img, M, (W, H))

centre = ((W - 1) / 2, (H - 1) / 2)
M_rot = T.pixel_rotation(centre, 30.0)           # (1, 2, 3), OpenCV's matrix
theta_rot = T.from_pixel(M_rot, (H, W), (H, W))  # stnkit's theta
rotated = ops.warp(photo, theta_rot)
print("M =", M_rot[0].tolist())

# A rotation with a scale and a shift, about the centre, into a square output:
M_aff = T.pixel_affine((H, W), (400, 400), degrees=-20.0, scale=0.6, translate=(30.0, 0.0))
square = ops.warp(photo, T.from_pixel(M_aff, (H, W), (400, 400)), size=(400, 400))

# %%
# Shear
# -----
#
# ``pixel_affine(..., shear=(sx, sy))`` shears about the centre (x' = x + sx y). What
# lies outside the input is read by ``padding_mode``: zeros (the default; OpenCV's
# ``BORDER_CONSTANT``), border (``BORDER_REPLICATE``) or reflection (``BORDER_REFLECT``
# with ``align_corners=False``); the pictures of :doc:`/conventions` compare them.

M_shear = T.pixel_affine((H, W), shear=(0.35, 0.0))
theta_shear = T.from_pixel(M_shear, (H, W), (H, W))
sheared = ops.warp(photo, theta_shear)

show([photo, rotated, square, sheared],
     ["input", "rotate 30 deg", "rotate -20, scale 0.6, 400x400", "shear (0.35, 0)"])

# %%
# A homography
# ------------
#
# A perspective warp is a 3 x 3 matrix. Here we find the homography that sends the
# picture's four corners to four chosen points (as ``cv2.getPerspectiveTransform`` does)
# by solving the usual 8 x 8 linear system, then warp with ``transform="projective"``.


def perspective_transform(src, dst):
    """The 3 x 3 H with H @ (x, y, 1) ~ (u, v, 1) for four point pairs (pixels)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    h = torch.linalg.solve(torch.tensor(rows, dtype=torch.float64),
                           torch.tensor(rhs, dtype=torch.float64))
    return torch.cat([h, torch.ones(1, dtype=torch.float64)]).view(3, 3)


corners = [(-0.5, -0.5), (W - 0.5, -0.5), (W - 0.5, H - 0.5), (-0.5, H - 0.5)]
targets = [(60, 90), (W - 40, 20), (W - 10, H - 30), (30, H - 120)]
M_persp = perspective_transform(corners, targets)[None].float()  # (1, 3, 3)
theta_persp = T.from_pixel(M_persp, (H, W), (H, W))
tilted = ops.warp(photo, theta_persp, transform="projective")

# %%
# A thin-plate spline
# -------------------
#
# The TPS family is given by control points: ``K`` points sit on a regular lattice of the
# output, and theta says where each reads the input (``(B, K, 2)``, normalised). The
# identity is the lattice itself; moving points bends the picture smoothly.

lattice = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 4), torch.linspace(-1, 1, 4),
                                     indexing="xy"), dim=-1).reshape(1, 16, 2)  # (x, y)
src = lattice.clone()
src[0, 5] += torch.tensor([0.25, 0.15])    # an inner point reads further right and down
src[0, 10] += torch.tensor([-0.2, -0.25])  # another one up and left
bent = ops.warp(photo, src, transform="tps")
print("the lattice is the identity:", torch.allclose(ops.warp(photo, lattice, transform="tps"),
                                                     photo, atol=1e-4))

fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.9))
for ax, image, title in zip(axes, [tilted, bent, photo],
                            ["homography (corners moved)", "TPS (two points moved)",
                             "TPS control points"]):
    ax.imshow(image[0].permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
ax = axes[2]
px, py = ((src[0] + 1) * torch.tensor([W, H]) / 2 - 0.5).numpy().T  # normalised -> pixel
qx, qy = ((lattice[0] + 1) * torch.tensor([W, H]) / 2 - 0.5).numpy().T  # (align_corners=False)
ax.plot(qx, qy, "o", color="white", ms=5, mec="black")
for i in range(16):
    if not torch.equal(src[0, i], lattice[0, i]):
        ax.annotate("", (px[i], py[i]), (qx[i], qy[i]),
                    arrowprops=dict(arrowstyle="->", color="#d62728", lw=2))
fig.tight_layout()

# %%
# The arrows show where the two moved output points read the input: the output pulls the
# picture along them. The corners of a TPS lattice stay where they are unless moved, so
# the frame of the picture holds still while its inside bends.
#
# Back to OpenCV
# --------------
#
# :func:`~stnkit.ops.transforms.to_pixel` is the inverse of ``from_pixel``, so any theta,
# for instance one a spatial transformer predicted, can be handed to OpenCV:

print(torch.allclose(T.to_pixel(theta_rot, (H, W), (H, W)), M_rot, atol=1e-4))
print("theta of the 30 degree rotation:", [round(v, 4) for v in theta_rot[0].flatten().tolist()])
print("its normalised entries differ from cos/sin by the aspect ratio:",
      round(math.sin(math.radians(30)) * H / W, 4), round(math.sin(math.radians(30)) * W / H, 4))

# %%
# The same on the command line: ``stnkit warp photo.jpg -o out.png --rotate 30`` (see
# :doc:`/cli`), and the conventions behind all of it: :doc:`/conventions`.
