"""benchmarks/warp.py and warp_profile.py run (tiny shapes, one round) and print their tables."""

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
SCRIPT = BENCHMARKS / "warp.py"


def test_benchmark_smoke():
    r = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--threads", "1",
                        "--methods", "stnkit numba", "stnkit torch", "PyTorch eager", "OpenCV"],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| (")]
    # 2 2-D shapes x 4 methods + the 3-D shape x 3 methods (no OpenCV)
    assert len(rows) == 11, r.stdout
    numba_rows = [line for line in rows if "stnkit numba" in line]
    for line in numba_rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[2]) > 0 and float(cells[3]) > 0, line  # fwd, fwd+bwd ms
        assert float(cells[6]) < 1e-4, line  # agrees with PyTorch
    assert "allocator env" in r.stdout and "threads: torch 1" in r.stdout


def test_profile_smoke():
    r = subprocess.run([sys.executable, str(BENCHMARKS / "warp_profile.py"), "--rounds", "1",
                        "--shapes", "4,1,8,9", "2,3,16,12", "1,1,4,5,6"],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| (")]
    assert len(rows) == 3, r.stdout
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        floor, fwd, ratio = float(cells[1]), float(cells[2]), float(cells[3].rstrip("x"))
        assert floor > 0 and fwd > 0 and abs(ratio - fwd / floor) < 0.06 * ratio + 0.05, line
        assert float(cells[7]) > 0, line  # PyTorch
    assert "gather floor" in r.stdout and "threads: torch 1" in r.stdout
