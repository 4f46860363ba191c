"""``stnkit train`` for torchrun, then a check that leaving the process group stopped gloo.

Gloo worker threads ("pt_gloo_runloop") still alive at interpreter exit can abort the process
(a worker that needs the GIL during finalisation calls std::terminate), at random, after a
successful run. ``Dist.teardown`` must leave none behind; this makes that visible every time
rather than one run in five.
"""

from __future__ import annotations

import sys
from pathlib import Path


def gloo_threads() -> int:
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():  # not Linux: nothing to check
        return 0
    return sum((t / "comm").read_text().strip() == "pt_gloo_runloop" for t in tasks.iterdir())


if __name__ == "__main__":
    from stnkit.cli import main

    rc = main(sys.argv[1:])
    left = gloo_threads()
    if left:
        print(f"{left} gloo worker thread(s) still running after stnkit train", file=sys.stderr)
        rc = rc or 3
    sys.exit(rc)
