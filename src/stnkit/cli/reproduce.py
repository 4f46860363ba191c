"""``stnkit reproduce table1|cluttered|addition --out DIR``: the paper's tables, resumably."""

from __future__ import annotations

import argparse
import sys

from stnkit.cli import add_quiet

HELP = "reproduce the paper's Table 1 / cluttered / addition experiments (resumable)"

EXPERIMENTS = ("table1", "cluttered", "addition")


def _names(text: str) -> list[str]:
    names = [t.strip() for t in text.replace(" ", ",").split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of names, got {text!r}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stnkit.cli.train import positive_int

    parser.add_argument("experiment", choices=EXPERIMENTS)
    parser.add_argument("-o", "--out", required=True, metavar="DIR", help="reproduction directory")
    parser.add_argument("--variants", type=_names, default=None, metavar="V1,V2",
                        help="subset of variants (table1: R,RTS,P,E; cluttered: T,TC; addition)")
    parser.add_argument("--models", type=_names, default=None, metavar="M1,M2",
                        help="subset of models (default: the paper's for the experiment)")
    parser.add_argument("--seeds", type=positive_int, default=3, metavar="N",
                        help="seeds per cell (0..N-1; default 3)")
    parser.add_argument("--schedule", choices=("paper", "cpu", "fresh"), default="paper")
    parser.add_argument("--iterations", type=positive_int, default=None, metavar="N",
                        help="override the schedule's number of iterations")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="MNIST directory, or 'embedded' for the subset in the package")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="autocast dtype of every cell (default: fp32; see `stnkit train "
                             "--help`)")
    parser.add_argument("--dry-run", action="store_true",
                        help="a few iterations per cell (smoke test)")
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from stnkit.train import EXPERIMENTS as SPECS
    from stnkit.train import TrainingDiverged, TrainingInterrupted, reproduce
    from stnkit.train.distributed import launch_rank

    spec = SPECS[args.experiment]
    for flag, given, allowed in (("--variants", args.variants, spec["variants"]),):
        bad = [g for g in (given or []) if g not in allowed]
        if bad:
            args._parser.error(f"argument {flag}: invalid choice {bad[0]!r} for {args.experiment} "
                               f"(choose from {', '.join(allowed)})")
    if args.models:
        from stnkit.models import list_models

        known = list_models()
        bad = [m for m in args.models if m not in known]
        if bad:
            args._parser.error(f"argument --models: unknown model {bad[0]!r} "
                               f"(see `stnkit models`)")
    overrides = {"dry_run": True} if args.dry_run else {}
    overrides["precision"] = args.precision
    try:
        reproduce(args.experiment, args.out, variants=args.variants, models=args.models,
                  seeds=args.seeds, schedule=args.schedule, data_dir=args.data_dir,
                  iterations=args.iterations, device=args.device, overrides=overrides,
                  progress=not args.quiet, log=lambda s: print(s, flush=True))
    except TrainingInterrupted as e:
        print(f"stnkit reproduce: {e}; rerun the same command to continue", file=sys.stderr)
        return 130
    except TrainingDiverged as e:
        from stnkit.cli import CommandError

        raise CommandError(str(e)) from None
    if launch_rank() == 0:  # under torchrun, one table
        with open(f"{args.out}/results.md") as f:
            print("\n" + f.read(), end="")
    return 0
