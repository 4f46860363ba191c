"""Long run of the fuzz suite (tests/fuzz): thousands of random examples per property.

    nice -n 19 python scripts/fuzz_long.py                  # 2000 examples per property
    nice -n 19 python scripts/fuzz_long.py --examples 300 -k warp --seed 1

Runs ``pytest`` on each file of tests/fuzz in turn (one process each, so a run cut short
keeps the counts of the files it finished) with ``STNKIT_FUZZ_PROFILE=long``: random, not
derandomised; the hypothesis database under .hypothesis/ keeps failing examples for the next
run. Prints hypothesis' per-property statistics, then one summary line per property
(examples passing / failing / invalid). A property stops at its first failure and shrinks
it to a minimal example, which pytest prints. Exit status: the first failing file's.
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
    env = dict(os.environ, STNKIT_FUZZ_PROFILE="long", STNKIT_FUZZ_EXAMPLES=str(args.examples),
               PYTHONUNBUFFERED="1")
    files = sorted((str(f.relative_to(REPO)) for f in (REPO / "tests" / "fuzz").glob("test_*.py")),
                   key=lambda f: ("warp" not in f, "sample" not in f, f))  # ops first
    lines, rc = [], 0
    for path in files:  # one process per file: a run cut short keeps the finished files' counts
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path,
               "--hypothesis-show-statistics"]
        if args.seed is not None:
            cmd.append(f"--hypothesis-seed={args.seed}")
        if args.k:
            cmd += ["-k", args.k]
        with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as proc:
            for line in proc.stdout:  # streamed, so a run cut short still shows its failures
                sys.stdout.write(line)
                sys.stdout.flush()
                lines.append(line.rstrip("\n"))
        rc = rc or (proc.returncode if proc.returncode != 5 else 0)  # 5: nothing selected
    # hypothesis' statistics: "tests/fuzz/x.py::test_y:", "  - during generate phase (...):",
    # "    - N passing examples, M failing examples, K invalid examples"
    print("\n| property | passing | failing | invalid |\n|---|---|---|---|")
    name, generating = None, False
    for line in lines:
        m = re.match(r"^(tests/fuzz/\S+::\S+):$", line.strip())
        if m:
            name, generating = m.group(1).split("::")[1], False
        if "during generate phase" in line:
            generating = True
        m = re.search(r"(\d+) passing examples?, (\d+) failing examples?, "
                      r"(\d+) invalid examples?", line)
        if m and name and generating:
            print(f"| {name} | {m.group(1)} | {m.group(2)} | {m.group(3)} |")
            generating = False
    return rc


if __name__ == "__main__":
    sys.exit(main())
