"""How closely stnkit.ops.sample agrees with torch.nn.functional.grid_sample.

For every mode x padding x align_corners, 2-D and 3-D, float64 and float32: the largest
|ours - PyTorch| over the output, grad_input and grad_grid, on random grids spanning
[-1.2, 1.2] (so the padding is exercised). The tests assert the same comparisons; this
prints the figures.

    python scripts/agreement.py
"""

import itertools

import torch
import torch.nn.functional as F

from stnkit.ops import sample


def main() -> None:
    torch.manual_seed(0)
    print("| dtype | dim | output | grad_input | grad_grid (abs) | grad_grid (rel) |")
    print("|---|---|---|---|---|---|")
    for dtype, dim in itertools.product([torch.float64, torch.float32], [2, 3]):
        worst = [0.0, 0.0, 0.0, 0.0]
        modes = ["bilinear", "nearest", "bicubic"] if dim == 2 else ["bilinear", "nearest"]
        for mode, pad, ac in itertools.product(modes, ["zeros", "border", "reflection"],
                                               [False, True]):
            shape = (2, 3, 9, 11) if dim == 2 else (2, 2, 5, 6, 7)
            x = torch.randn(shape, dtype=dtype, requires_grad=True)
            g = (torch.rand(2, *([7] * dim), dim, dtype=dtype) * 2.4 - 1.2).requires_grad_()
            ours = sample(x, g, mode=mode, padding_mode=pad, align_corners=ac)
            ref = F.grid_sample(x, g, mode=mode, padding_mode=pad, align_corners=ac)
            go = torch.randn_like(ours)
            gx, gg = torch.autograd.grad(ours, (x, g), go)
            rx, rg = torch.autograd.grad(ref, (x, g), go)
            gg_abs = (gg - rg).abs().max().item()
            errs = [(ours - ref).abs().max().item(), (gx - rx).abs().max().item(), gg_abs,
                    gg_abs / max(rg.abs().max().item(), 1e-30) if rg.abs().max() > 0 else 0.0]
            worst = [max(a, b) for a, b in zip(worst, errs)]
        print(f"| {str(dtype).removeprefix('torch.')} | {dim}-D | "
              + " | ".join(f"{w:.1e}" for w in worst) + " |")


if __name__ == "__main__":
    main()
