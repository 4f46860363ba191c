"""``stnkit train``: train a model on a distorted-MNIST variant, or continue a run.

    stnkit train --model st-cnn-aff --data RTS --out runs/rts [--schedule cpu] [...]
    stnkit train --resume runs/rts [--iterations N]
    stnkit train --model cnn --data R --out runs/r-bf16 --precision bf16   # AMX CPUs, GPUs
    torchrun --nproc_per_node=2 -m stnkit train --model cnn --data RTS --out runs/ddp ...

Every TrainConfig field has a flag; precedence: defaults < --schedule preset < --config
file < flags.
"""

from __future__ import annotations

import argparse
import math
import sys

from stnkit.cli import add_quiet

HELP = "train a model on a distorted-MNIST variant (or continue a run with --resume)"

_CHOICES = {"schedule": ("paper", "cpu", "fresh"), "optimizer": ("sgd", "adam", "adamw"),
            "device": ("auto", "cpu", "cuda"), "precision": ("fp32", "bf16", "fp16"),
            "lr_schedule": ("step", "cosine")}
_METAVARS = {"model": "NAME", "data": "VARIANT", "out": "RUN_DIR", "data_dir": "DIR"}


def _int_at_least(text: str, low: int, expected: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return v


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def _fields():
    # the config module is light (no torch): importing it here keeps `stnkit --help` fast
    from stnkit.train.config import config_fields

    return config_fields()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its last checkpoint (only "
                             "--iterations may be given with it)")
    parser.add_argument("--config", metavar="FILE",
                        help="YAML/TOML/JSON file of settings (keys: the long flags' names)")
    positive = {"iterations", "batch_size", "checkpoint_every", "eval_every", "log_every",
                "snapshot_count", "train_size", "test_size", "num_threads", "validation_size"}
    for f in _fields():
        flag = "--" + f.name.replace("_", "-")
        kind = f.metadata["kind"].removeprefix("optional ")
        help_text = f.metadata["help"]
        if f.name == "dry_run":
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        elif kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        elif kind == "int":
            parser.add_argument(flag, type=positive_int if f.name in positive else nonnegative_int,
                                default=None, metavar="N", help=help_text)
        elif kind == "float":
            parser.add_argument(flag, type=finite_float, default=None, metavar="X", help=help_text)
        else:
            flags = ("-o", flag) if f.name == "out" else (flag,)  # -o/--out as in every command
            parser.add_argument(*flags, default=None, choices=_CHOICES.get(f.name),
                                metavar=_METAVARS.get(f.name), help=help_text)
    add_quiet(parser)


def _summary(result: dict) -> str:
    def pct(x):
        return "n/a" if x is None else f"{x:.2f}%"

    held = ("validation error", result["validation_error"]) if "validation_error" in result \
        else ("test error", result["test_error"])
    return (f"{result['model']} on {result['data']}: step {result['step']}, train error "
            f"{pct(result['train_error'])}, {held[0]} {pct(held[1])} "
            f"({result['time']:.1f} s) -> {result['run_dir']}")


def run(args: argparse.Namespace) -> int:
    from stnkit.cli import CommandError
    from stnkit.train import TrainingDiverged, TrainingInterrupted, resolve_config, resume, train
    from stnkit.train.distributed import launch_rank

    names = [f.name for f in _fields()]
    explicit = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    parser = args._parser
    try:
        if args.resume is not None:
            extra = sorted(set(explicit) - {"iterations"}) + (["config"] if args.config else [])
            if extra:
                parser.error("--resume takes only --iterations (the run's settings are in its "
                             "checkpoint); got " + ", ".join("--" + e.replace("_", "-") for e in extra))
            result = resume(args.resume, iterations=explicit.get("iterations"),
                            progress=not args.quiet)
        else:
            cfg = resolve_config(file=args.config, overrides=explicit)
            missing = [n for n in ("model", "data", "out") if not getattr(cfg, n)]
            if missing:
                parser.error("the following arguments are required (as flags or in --config): "
                             + ", ".join("--" + m for m in missing))
            result = train(cfg, progress=not args.quiet)
    except TrainingInterrupted as e:
        print(f"stnkit train: {e}", file=sys.stderr)
        return 130
    except TrainingDiverged as e:
        raise CommandError(str(e)) from None
    if launch_rank() == 0:  # under torchrun, one summary
        print(_summary(result))
    return 0
