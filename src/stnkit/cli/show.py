"""``stnkit show``: pictures of a training run or of a reproduction of the paper's tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stnkit._errors import fail_file
from stnkit.cli import add_quiet, wrote
from stnkit.cli.train import positive_int

HELP = "draw the pictures of a run directory (samples, curves, evolution) or a reproduction"

_EPILOG = """\
a run directory (from `stnkit train`) gives:
  samples.png     fixed test samples: the input, the input with the outline of the region the
                  transformer reads, and the transformer's output (final weights)
  curves.png      loss, train/test error and learning rate against the step
  evolution.gif   the transformer's output on the same samples at step 0 and every evaluation
  evolution.png   the same as a strip, a few evaluations
a reproduction directory (from `stnkit reproduce`, it has results.csv) gives:
  results.png     our test errors (mean +- std over seeds) next to the paper's, per cell
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("directory", metavar="RUN_DIR",
                        help="a run directory, or a reproduction directory (with results.csv)")
    parser.add_argument("-o", "--out", metavar="OUT_DIR",
                        help="where to write the pictures (created; default: RUN_DIR/figures)")
    parser.add_argument("-n", "--num-samples", metavar="N", type=positive_int, default=8,
                        help="samples (columns) in the sample and evolution pictures (default: 8)")
    add_quiet(parser, progress=False)


# what each picture of ``render_run`` / ``render_reproduction`` holds, for the "wrote" lines
WHAT = {
    "curves": "loss, errors and learning rate against the step",
    "samples": "inputs, the region the transformer reads, its output",
    "evolution_gif": "the transformer's output during training, animated",
    "evolution_png": "the transformer's output during training, a strip",
    "results": "our test errors next to the paper's",
}


def run(args: argparse.Namespace) -> int:
    from stnkit.viz._deps import require_viz

    require_viz()
    from stnkit.viz.run import is_reproduction_dir, is_run_dir, render_reproduction, render_run

    fn = "stnkit show"
    directory = Path(args.directory)
    if not directory.is_dir():
        fail_file(fn, repr(str(directory)), "is not a directory")
    out = Path(args.out) if args.out else directory / "figures"
    if out.exists() and not out.is_dir():
        fail_file(fn, f"--out: {str(out)!r}", "exists and is not a directory")
    if is_reproduction_dir(directory):
        written = render_reproduction(directory, out)
    elif is_run_dir(directory):
        written = render_run(directory, out, num_samples=args.num_samples,
                             note=lambda message: print(f"note: {message}", file=sys.stderr))
        if "evolution_gif" not in written:
            print("no transformer snapshots in this run (a model without a spatial transformer, "
                  "or no evaluation yet): no evolution pictures")
    else:
        fail_file(fn, repr(str(directory)), "is neither a run directory (config.json, "
                  "checkpoint.json) nor a reproduction directory (results.csv)")
    for name, path in written.items():
        wrote(args, path, WHAT.get(name, name))
    return 0
