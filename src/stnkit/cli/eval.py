"""``stnkit eval RUN_DIR``: test error, per-class errors and confusion matrix (-> eval.json)."""

from __future__ import annotations

import argparse
import json
import os

from stnkit.cli import add_quiet, wrote

HELP = "evaluate a run's checkpoint on the test split (writes RUN_DIR/eval.json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stnkit.cli.train import positive_int

    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `stnkit train`")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="MNIST directory ('embedded': the subset in the package); "
                             "default: the run's own")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=positive_int, default=500, metavar="N")
    parser.add_argument("--test-size", type=positive_int, default=None, metavar="N",
                        help="evaluate on the first N test samples only")
    parser.add_argument("--json", action="store_true",
                        help="print the JSON instead of tables (and no 'wrote' line)")
    add_quiet(parser, progress=False)


def format_report(r: dict) -> str:
    lines = [f"{r['run_dir']}: {r['model']} on {r['data']}, step {r['step']}",
             (f"test error {r['test_error']:.2f}% ({sum(c['errors'] for c in r['per_class'])} of "
              f"{r['num_samples']}), loss {r['test_loss']:.4f}"), "",
             "class  count  errors  error %"]
    for c in r["per_class"]:
        err = "n/a" if c["error"] is None else f"{c['error']:.2f}"
        lines.append(f"{c['class']:>5}  {c['count']:>5}  {c['errors']:>6}  {err:>7}")
    m = r["confusion_matrix"]
    k = len(m)
    width = max(4, max(len(str(v)) for row in m for v in row) + 1)
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)",
              "true\\pred" + "".join(f"{j:>{width}}" for j in range(k))]
    for i, row in enumerate(m):
        lines.append(f"{i:>9}" + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from stnkit.train import evaluate

    result = evaluate(args.run_dir, data_dir=args.data_dir, device=args.device,
                      batch_size=args.batch_size, test_size=args.test_size)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_report(result))
        if not args.quiet:
            print()
        wrote(args, os.path.join(args.run_dir, "eval.json"),
              "test error, per-class errors, confusion matrix")
    return 0
