"""How often the projective (P) distortion yields degenerate digits: ours vs the paper's text.

The paper (Jaderberg et al. 2015, appendix A.1): "Projected (P) distortion was achieved by
scaling a digit image randomly between 0.75 and 1.0, and then perturbing the four corners of
the image with Gaussian noise (standard deviation of 5 pixels) then projecting to the
original size". This script measures, over N digits:

- ``stnkit`` P, R and E (``stnkit.data.distort``, seed 0), R and E for context;
- independent readings of that sentence, written here from scratch with OpenCV
  (``cv2.getPerspectiveTransform`` / ``cv2.warpPerspective``, their own random stream):
  which corners are perturbed (the scaled digit's, or the 28 x 28 image's after scaling the
  digit inside it) and in which direction the homography goes (A: the corners are moved to
  the noisy corners, the picture follows them; B: the noisy quadrilateral is cut out of the
  picture and projected onto the whole 28 x 28 output, "projected to the original size").

Each sample is also warped, by the same map, onto a canvas five times as large (the 28 x 28
output in its middle, nothing clipped) to measure, on the digit's ink:

- cut: the share of the ink mass that falls outside the 28 x 28 output;
- size: (det C_out / det C_in) ** (1/4), C the ink's second-moment matrix (the digit's
  linear size relative to MNIST's);
- squash: sqrt(l_min / l_max) of C_out over the same of C_in (1: aspect kept; 0.5: one
  direction squashed to half of the other);
- border: ink >= 128 on the outermost rows or columns of the 28 x 28 output.

A sample is degenerate if cut > 10 %, size < 0.6 (smaller than the smallest draw of the
scale, 0.75, by a fifth) or squash < 0.5. Everything is float64 numpy / OpenCV apart from the
generators, so the fractions do not depend on the CPU. Run from the repository root:

    python scripts/check_p_distortion.py --data-dir ../shared/data/mnist --n 10000 \\
        --figure docs/results/p-distortion.png
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from stnkit.data import distort, load_mnist
from stnkit.ops.grids import tps_grid, tps_lattice

D = 28  # digit and output size (P, R and E are all 28 x 28)
BIG = 5  # the unclipped canvas is BIG * D wide, the output window in its middle
CUT, SIZE, SQUASH = 0.10, 0.6, 0.5  # degenerate if cut > CUT, size < SIZE or squash < SQUASH
CORNERS = np.array([[0.0, 0.0], [D - 1, 0.0], [D - 1, D - 1], [0.0, D - 1]], np.float32)
EDGES = np.array([[-0.5, -0.5], [D - 0.5, -0.5], [D - 0.5, D - 0.5], [-0.5, D - 0.5]])


# --------------------------------------------------------------------------- independent P


def independent_p(digits: np.ndarray, corners: str, direction: str, seed: int):
    """The paper's sentence, literally, with OpenCV. Returns (outputs (N, 28, 28) uint8,
    homographies (N, 3, 3) digit pixel -> output pixel, folded (N,) bool).

    corners: "digit" (the corners of the scaled digit, pixel centres as OpenCV counts them),
    "digit edges" (the same at the pixel edges, as stnkit takes them) or "image" (the corners
    of the 28 x 28 image after scaling the digit inside it); direction: "A" (corners -> noisy
    corners) or "B" (noisy corners -> the output's corners: the noisy quadrilateral, cut out
    of the scaled picture, fills the 28 x 28 output; with "digit" corners this undoes the
    scale).
    """
    rng = np.random.default_rng(seed)
    c = (D - 1) / 2
    outs, mats, folded = [], [], []
    for d in digits:
        s = rng.uniform(0.75, 1.0)
        noise = rng.normal(0.0, 5.0, (4, 2))
        scale = np.array([[s, 0, c - s * c], [0, s, c - s * c], [0, 0, 1]])
        scaled = cv2.warpAffine(d, scale[:2], (D, D), flags=cv2.INTER_LINEAR)
        if corners.startswith("digit"):  # the corners of the scaled digit
            base = (c + s * ((CORNERS if corners == "digit" else EDGES) - c)).astype(np.float32)
        else:
            base = CORNERS
        moved = (base + noise).astype(np.float32)
        target = moved if direction == "A" else CORNERS  # B: onto the whole output
        h = cv2.getPerspectiveTransform(moved if direction == "B" else base, target)
        outs.append(cv2.warpPerspective(scaled, h, (D, D), flags=cv2.INTER_LINEAR))
        mats.append(h @ scale)
        quad = moved.astype(np.float64)
        e = np.roll(quad, -1, 0) - quad
        f = np.roll(e, -1, 0)
        folded.append(not ((e[:, 0] * f[:, 1] - e[:, 1] * f[:, 0]) > 0).all())
    return np.stack(outs), np.stack(mats), np.array(folded)


# --------------------------------------------------------------------------- measurement


def _first_draw_folded(scale: np.ndarray, idx: np.ndarray, seed: int, split: str) -> np.ndarray:
    """Whether stnkit's first corner draw of each P sample folded (it was then redrawn):
    replays the sample's random stream (scale, then the corner offsets)."""
    from stnkit.data import sample_rng

    frame = np.array([[-0.5, -0.5], [D - 0.5, -0.5], [D - 0.5, D - 0.5], [-0.5, D - 0.5]])
    c = (D - 1) / 2
    out = []
    for s, i in zip(scale, idx):
        r = sample_rng(seed, "P", split, int(i))
        r.random()
        quad = c + s * (frame - c) + r.normal(0.0, 5.0, (4, 2))
        e = np.roll(quad, -1, 0) - quad
        f = np.roll(e, -1, 0)
        out.append(not ((e[:, 0] * f[:, 1] - e[:, 1] * f[:, 0]) > 0).all())
    return np.array(out)


def _homography_grid(mats: np.ndarray) -> torch.Tensor:
    """Normalised input coordinates (B, S, S, 2) of the big canvas for digit -> output
    homographies; points behind the camera (or at infinity) go far outside."""
    s = BIG * D
    off = (BIG - 1) * D / 2
    ys, xs = np.meshgrid(np.arange(s) - off, np.arange(s) - off, indexing="ij")
    pts = np.stack([xs, ys, np.ones_like(xs)], -1)  # output pixel coordinates (S, S, 3)
    inv = np.linalg.inv(mats)
    centre = inv @ np.array([(D - 1) / 2, (D - 1) / 2, 1.0])  # (B, 3): visible, so w > 0
    inv = inv * np.sign(centre[:, 2])[:, None, None]
    uvw = np.einsum("bij,hwj->bhwi", inv, pts)
    w = uvw[..., 2:]
    ok = w > 1e-9
    xy = np.where(ok, uvw[..., :2] / np.where(ok, w, 1.0), -1e4)
    return torch.from_numpy((2 * xy + 1) / D - 1)  # pixel -> normalised, align_corners=False


def _tps_grid(src_points: np.ndarray) -> torch.Tensor:
    """Big-canvas grid of E's splines: the same spline, its control points at the middle
    (a TPS commutes with scaling its domain)."""
    lattice = tps_lattice(src_points.shape[1], dtype=torch.float64) / BIG
    return tps_grid(torch.from_numpy(src_points.astype(np.float64)), (BIG * D, BIG * D),
                    dst_points=lattice)


def _moments(img: np.ndarray):
    """Ink mass, centroid and 2x2 second-moment matrices of (B, H, W) images."""
    b, h, w = img.shape
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                         indexing="ij")
    m = img.sum((1, 2))
    m_safe = np.maximum(m, 1e-12)
    mx, my = (img * xs).sum((1, 2)) / m_safe, (img * ys).sum((1, 2)) / m_safe
    dx, dy = xs[None] - mx[:, None, None], ys[None] - my[:, None, None]
    cxx = (img * dx * dx).sum((1, 2)) / m_safe
    cyy = (img * dy * dy).sum((1, 2)) / m_safe
    cxy = (img * dx * dy).sum((1, 2)) / m_safe
    cov = np.stack([np.stack([cxx, cxy], -1), np.stack([cxy, cyy], -1)], -2)
    return m, cov


def measure(digits: np.ndarray, outputs: np.ndarray, grids) -> dict[str, np.ndarray]:
    """cut, size, squash, border (see the module docstring) per sample; ``grids(lo, hi)``
    gives the big-canvas grid of samples lo..hi-1."""
    x_all = digits.astype(np.float64) / 255
    _, cov_in = _moments(x_all)
    ev_in = np.linalg.eigvalsh(cov_in)  # ascending
    lo_w = (BIG - 1) * D // 2
    cut, cov_out = [], []
    for lo in range(0, len(digits), 500):
        hi = min(lo + 500, len(digits))
        x = torch.from_numpy(x_all[lo:hi])[:, None]
        big = F.grid_sample(x, grids(lo, hi).to(x.dtype), mode="bilinear",
                            padding_mode="zeros", align_corners=False)[:, 0].numpy()
        mass, cov = _moments(big)
        inside = big[:, lo_w:lo_w + D, lo_w:lo_w + D].sum((1, 2))
        cut.append(1 - inside / np.maximum(mass, 1e-12))
        cov_out.append(cov)
    ev_out = np.linalg.eigvalsh(np.concatenate(cov_out))
    ev_out = np.maximum(ev_out, 1e-12)
    size = (np.prod(ev_out, 1) / np.prod(ev_in, 1)) ** 0.25
    squash = np.sqrt(ev_out[:, 0] / ev_out[:, 1]) / np.sqrt(ev_in[:, 0] / ev_in[:, 1])
    edge = np.concatenate([outputs[:, 0, :], outputs[:, -1, :], outputs[:, :, 0],
                           outputs[:, :, -1]], 1)
    return {"cut": np.concatenate(cut), "size": size, "squash": squash,
            "border": (edge >= 128).any(1)}


def degenerate(m: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {"cut": m["cut"] > CUT, "shrunk": m["size"] < SIZE, "collapsed": m["squash"] < SQUASH}
    out["any"] = out["cut"] | out["shrunk"] | out["collapsed"]
    return out


# --------------------------------------------------------------------------- report


def figure(path: str, digits: np.ndarray, outputs: np.ndarray, m, deg, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("random", np.arange(len(outputs)), None),
            ("cut", np.flatnonzero(deg["cut"]), "cut"),
            ("shrunk", np.flatnonzero(deg["shrunk"]), "size"),
            ("collapsed", np.flatnonzero(deg["collapsed"]), "squash")]
    cols = 10
    fig, axes = plt.subplots(2 * len(rows), cols, figsize=(cols * 1.05, 2 * len(rows) * 1.2))
    for r, (name, pool, key) in enumerate(rows):
        pick = pool[:cols]  # the first ones in index order: typical, not the worst
        for c in range(cols):
            for k, img in enumerate((digits, outputs)):
                ax = axes[2 * r + k, c]
                ax.set_xticks([]), ax.set_yticks([])
                if c < len(pick):
                    ax.imshow(img[pick[c]], cmap="gray", vmin=0, vmax=255)
                    if k == 1:
                        label = f"#{pick[c]}" if key is None else f"{key} {m[key][pick[c]]:.2f}"
                        ax.set_xlabel(label, fontsize=7)
            axes[2 * r, 0].set_ylabel(f"{name}\nMNIST", fontsize=8)
            axes[2 * r + 1, 0].set_ylabel("P", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="embedded")
    ap.add_argument("--split", default="test", choices=["train", "test"])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figure", default=None, help="PNG of typical degenerate stnkit P samples")
    args = ap.parse_args(argv)
    images, labels = load_mnist(args.split, root=args.data_dir)
    n = min(args.n, len(images))
    x, y = images.numpy()[:n], labels.numpy()[:n]
    idx = np.arange(n)
    print("$ python scripts/check_p_distortion.py " + " ".join(sys.argv[1:] if argv is None
                                                                  else argv))
    print(f"{n} digits of the MNIST {args.split} split ({args.data_dir}), seed {args.seed}; "
          f"degenerate: cut > {CUT:.0%}, size < {SIZE}, squash < {SQUASH}\n")
    rows = []
    for variant in ("P", "R", "E"):
        out, _, p = distort(variant, x, y, idx, seed=args.seed, split=args.split)
        if variant == "E":
            grids = lambda lo, hi, p=p: _tps_grid(p["src_points"][lo:hi])  # noqa: E731
        else:
            mats = p["matrix"] if variant == "P" else np.concatenate(
                [p["matrix"], np.tile([[[0.0, 0, 1]]], (n, 1, 1))], 1)
            grids = lambda lo, hi, m=mats: _homography_grid(m[lo:hi])  # noqa: E731
        m = measure(x, out[:, 0], grids)
        fold = _first_draw_folded(p["scale"], idx, args.seed, args.split) if variant == "P" \
            else None
        rows.append((f"stnkit {variant}", m, fold))
        if variant == "P":
            ours = (out[:, 0], m)
    for corners, direction in (("digit", "A"), ("digit edges", "A"), ("digit", "B"),
                               ("image", "A"), ("image", "B")):
        out, mats, folded = independent_p(x, corners, direction, seed=args.seed + 1)
        m = measure(x, out, lambda lo, hi, m=mats: _homography_grid(m[lo:hi]))
        rows.append((f"independent P, {corners} corners, {direction}", m, folded))
    print("Independent readings: the first four columns over their unfolded draws (stnkit "
          "redraws folded ones), the fifth over all draws.\n")
    print("| generator | folded first draws | cut > 10 % | shrunk | collapsed | any | "
          "any, folded draws kept | border ink | median size | median squash |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, m, fold in rows:
        d = degenerate(m)
        keep = np.ones(n, bool) if fold is None or name == "stnkit P" else ~fold
        fr = " | ".join(f"{100 * d[k][keep].mean():.2f} %" for k in ("cut", "shrunk",
                                                                      "collapsed", "any"))
        if fold is None:
            folded, kept = "-", "-"
        elif name == "stnkit P":
            folded, kept = f"{100 * fold.mean():.2f} % (redrawn)", "-"
        else:
            folded, kept = f"{100 * fold.mean():.2f} %", f"{100 * d['any'].mean():.2f} %"
        print(f"| {name} | {folded} | {fr} | {kept} | {100 * m['border'].mean():.2f} % | "
              f"{np.median(m['size']):.3f} | {np.median(m['squash']):.3f} |")
    se = np.sqrt(0.05 * 0.95 / n)
    print(f"\nstandard error of a fraction near 5 %: {100 * se:.2f} points")
    if args.figure:
        out, m = ours
        figure(args.figure, x, out, m, degenerate(m),
               "stnkit P: random samples, then the first degenerate ones of each kind "
               "(top: MNIST digit, below: P)")
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
