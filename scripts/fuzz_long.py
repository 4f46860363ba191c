"""Long run of the fuzz suite (tests/fuzz): thousands of random examples per property.

    nice -n 19 python scripts/fuzz_long.py                  # 2000 examples per property
    nice -n 19 python scripts/fuzz_long.py --examples 300 -k warp --seed 1

Runs ``pytest tests/fuzz`` with ``STNKIT_FUZZ_PROFILE=long`` (random, not derandomised; the
hypothesis database under .hypothesis/ keeps failing examples for the next run) and
hypothesis' per-property statistics (examples passed / failed / invalid, time), then prints
one summary line per property. A property stops at its first failure and shrinks it to a
minimal example, which pytest prints. Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=2000, help="examples per property "
                   "(properties marked costlier run a multiple of it)")
    p.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    p.add_argument("-k", default=None, help="pytest -k expression (a subset of properties)")
    args = p.parse_args(argv)
    env = dict(os.environ, STNKIT_FUZZ_PROFILE="long", STNKIT_FUZZ_EXAMPLES=str(args.examples))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/fuzz",
           "--hypothesis-show-statistics"]
    if args.seed is not None:
        cmd.append(f"--hypothesis-seed={args.seed}")
    if args.k:
        cmd += ["-k", args.k]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    # "tests/fuzz/x.py::test_y:" then "  - during generate phase (...): - N passing examples,
    # M failing examples, K invalid examples"
    print("\n| property | passing | failing | invalid |\n|---|---|---|---|")
    name = None
    for line in r.stdout.splitlines():
        m = re.match(r"^(tests/fuzz/\S+::\S+):$", line.strip())
        if m:
            name = m.group(1).split("::")[1]
        m = re.search(r"generate phase.*?(\d+) passing examples?, (\d+) failing examples?, "
                      r"(\d+) invalid examples?", line)
        if m and name:
            print(f"| {name} | {m.group(1)} | {m.group(2)} | {m.group(3)} |")
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
