"""benchmarks/warp.py runs (tiny shapes, one round) and prints its table."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "warp.py"


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
