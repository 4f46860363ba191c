"""benchmarks/warp.py runs (tiny shapes, one round) and prints its tables."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch

from stnkit.ops.warp import BACKENDS

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
SCRIPT = BENCHMARKS / "warp.py"


F32_EPS = torch.finfo(torch.float32).eps
# every fused-kernel backend there is (cpp, triton): one that cannot run a case is skipped
# with its reason; "stnkit triton" always is, on these CPU tensors (CUDA only)
KERNELS = [f"stnkit {b}" for b in BACKENDS if b not in ("auto", "torch")]
METHODS = ["stnkit torch", "PyTorch eager", "OpenCV"] + KERNELS
SMOKE_SHAPES = [(4, 1, 8, 9), (2, 3, 16, 12), (1, 1, 4, 5, 6)]  # benchmarks/warp.py's
SMOKE_TPS_SHAPES = [(4, 1, 8, 9), (2, 3, 16, 12)]
QUANTITIES = ["fwd ms", "fwd+bwd ms", "fwd speed-up", "fwd+bwd speed-up"]
HEADER = ["shape", "method"] + [q + t for q in QUANTITIES for t in ("", " (net)")] + ["max diff"]
# "max diff" is max |output - baseline output| over inputs in [0, 1). Affine: a few multiply-adds
# of float32 apart from F.grid_sample, measured at most 7.2 eps for stnkit (8.6e-7); 32 eps
# leaves a 4x margin. OpenCV interpolates with fixed-point weights (1/32 pixel), so it only gets
# 1e-3. TPS: a fused kernel sums the spline's K + 3 = 19 float32 terms (|U| <= 8 ln 8 ~ 17) in
# another order than stnkit torch's matmul: a coordinate error of ~19 * 17 * eps ~ 4e-5 (the
# normalised coordinate, worst case), i.e. <= 4e-4 pixel on these <= 16-pixel sides, times an
# image slope <= 1 per pixel: 1e-3 bounds it; the torch row is the baseline itself.
DIFF_TOL = {"affine": dict.fromkeys(KERNELS, 32 * F32_EPS)
            | {"stnkit torch": 32 * F32_EPS, "PyTorch eager": 0.0, "OpenCV": 1e-3},
            "tps": dict.fromkeys(KERNELS, 1e-3) | {"stnkit torch": 0.0}}
BASELINE = {"affine": "PyTorch eager", "tps": "stnkit torch"}


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _ratio_ok(shown, a, b):
    """``shown`` ("1.23x") is b / a of the table's 3-significant-digit times (each rounded by
    at most 0.5 %, the ratio by 2 digits): agreement to 1.5 % + 0.01."""
    want = b / a
    return abs(float(shown.rstrip("x")) - want) <= 0.015 * want + 0.01


def _sections(stdout):
    """{"affine" | "tps": (header cells, rows' cells, {method: skip line})} of the output."""
    out, name = {}, None
    for line in stdout.splitlines():
        if line.startswith("## "):
            name = "tps" if "Thin-plate" in line else "affine"
            out[name] = (None, [], {})
        elif name is None:
            continue
        elif line.startswith("| shape"):
            out[name] = (_cells(line),) + out[name][1:]
        elif line.startswith("| ("):
            out[name][1].append(_cells(line))
        elif line.startswith("- skipped: "):
            out[name][2][line[len("- skipped: "):].split(" at ")[0]] = line
    return out


def test_benchmark_smoke():
    """The smoke run: both tables (affine against PyTorch, TPS against stnkit torch), each
    with the alone and in-a-network columns; every shape x method exactly once, in order, or
    skipped with a reason (only a fused-kernel backend may be: triton on CPU tensors always
    is); the speed-ups are the ratios of the times in both contexts, and every method agrees
    with the baseline (the script's own correctness column, checked against stated
    tolerances)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--threads", "1",
                        "--methods", *METHODS],
                       capture_output=True, text=True, timeout=600, check=False, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    sections = _sections(r.stdout)
    assert list(sections) == ["affine", "tps"], r.stdout
    for transform, shapes in (("affine", SMOKE_SHAPES), ("tps", SMOKE_TPS_SHAPES)):
        header, rows, skipped = sections[transform]
        assert header == HEADER, r.stdout
        methods = [m for m in METHODS if transform == "affine" or m.startswith("stnkit ")]
        assert "stnkit triton" in skipped, r.stdout  # CUDA tensors only, or not installed
        assert any(why in skipped["stnkit triton"] for why in ("CUDA", "cannot be imported"))
        assert set(skipped) <= set(KERNELS), skipped  # never torch, PyTorch or OpenCV
        # every shape x method that runs there (OpenCV has no volumes; a kernel may skip
        # some shapes only, e.g. cpp the volume: its skip line lists them), in order
        want = [(str(s), m) for s in shapes for m in methods
                if (m not in skipped or str(s) not in skipped[m])
                and (len(s) == 4 or m != "OpenCV")]
        assert [(c[0], c[1]) for c in rows] == want, r.stdout
        base = {c[0]: c for c in rows if c[1] == BASELINE[transform]}
        for c in rows:
            assert len(c) == len(HEADER), c
            cell = dict(zip(HEADER, c))
            for q in ("fwd", "fwd+bwd"):
                for t in ("", " (net)"):
                    ms, x = cell[f"{q} ms{t}"], cell[f"{q} speed-up{t}"]
                    if q == "fwd+bwd" and c[1] == "OpenCV":  # no backward
                        assert ms == "-" and x == "-", c
                        continue
                    ref = float(dict(zip(HEADER, base[c[0]]))[f"{q} ms{t}"])
                    assert float(ms) > 0 and _ratio_ok(x, float(ms), ref), (q + t, c)
            tol = DIFF_TOL[transform][c[1]]
            assert float(cell["max diff"]) <= tol, f"{c[1]} disagrees with the baseline: {c}"
        assert all(set(c[6:10]) == {"1.00x"} for c in base.values()), base
    for line in ("- CPU: ", "vector flags: ", "threads: torch 1", "allocator env: ",
                 "OpenMP env: ", "load average (1, 5, 15 min) at start: ", "(net), in a network"):
        assert line in r.stdout, line


def test_benchmark_columns_alone():
    """``--context alone`` keeps the table of earlier runs; the columns pair alone and (net)."""
    spec = importlib.util.spec_from_file_location("stnkit_benchmark_warp", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench._columns(("alone",), True) == [
        "shape", "method", "fwd ms", "fwd+bwd ms", "fwd speed-up", "fwd+bwd speed-up",
        "max diff", "peak extra mem (x input)"]
    assert bench._columns(bench.CONTEXTS, False) == HEADER
    assert bench.STNKIT_METHODS == [f"stnkit {b}" for b in BACKENDS if b != "auto"]
