"""``stnkit export RUN_DIR -o model.onnx``: a trained run to ONNX, checked with onnxruntime.

The run's last checkpoint is exported (:func:`stnkit.export.onnx_bytes`, batch dimension
symbolic), then the test split is evaluated twice, by torch and by onnxruntime, and both
test errors are printed. If they differ by more than ``--tolerance`` percentage points the
command refuses (exit 1, one line) and writes nothing; otherwise it writes the file
atomically.
"""

from __future__ import annotations

import argparse

from stnkit.cli import CommandError, add_quiet, wrote

HELP = "export a run's checkpoint to ONNX, checked against its test error in onnxruntime"

TOLERANCE = 0.1  # percentage points of test error


def _tolerance(text: str) -> float:
    from stnkit.cli.train import finite_float

    return finite_float(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stnkit.cli.train import positive_int

    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `stnkit train`")
    parser.add_argument("-o", "--out", "--output", dest="out", metavar="FILE", required=True,
                        help="the ONNX file to write (e.g. model.onnx)")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="MNIST directory ('embedded': the subset in the package); "
                             "default: the run's own")
    parser.add_argument("--test-size", type=positive_int, default=None, metavar="N",
                        help="check on the first N test samples only (default: all)")
    parser.add_argument("--batch-size", type=positive_int, default=500, metavar="N")
    parser.add_argument("--tolerance", type=_tolerance, default=TOLERANCE, metavar="PCT",
                        help="largest accepted difference between the torch and onnxruntime "
                             f"test errors, in percentage points (default {TOLERANCE})")
    parser.add_argument("--opset", type=positive_int, default=None, metavar="N",
                        help="ONNX opset (default and minimum: 20)")
    add_quiet(parser, progress=False)


def _errors(logits, labels) -> int:
    return int((logits.argmax(1) != labels).sum())


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from stnkit import export
    from stnkit._io import atomic_write_bytes
    from stnkit.train import checkpoint as ckpt
    from stnkit.train import load_model
    from stnkit.train._data import load_split
    from stnkit.train.loop import load_run_config

    cfg = load_run_config(args.run_dir, fn="export")
    step = int(ckpt.read_record(args.run_dir, fn="export")["step"])
    model = load_model(args.run_dir, device="cpu")
    data = load_split(cfg.data, "test", seed=cfg.data_seed,
                      data_dir=args.data_dir if args.data_dir is not None else cfg.data_dir,
                      limit=args.test_size)
    n = len(data)
    if n == 0:
        raise CommandError(f"{cfg.data}: the test split is empty: nothing to check against")
    x0, _ = data.first(min(2, n))
    opset = export.OPSET if args.opset is None else args.opset
    start = time.perf_counter()
    blob = export.onnx_bytes(model, x0, opset=opset)
    seconds = time.perf_counter() - start
    session = export.onnx_session(blob)

    errors_torch = errors_onnx = 0
    max_diff = 0.0
    with torch.no_grad():
        for s in range(0, n, args.batch_size):
            x, y = data.batch(torch.arange(s, min(s + args.batch_size, n)), torch.device("cpu"))
            want = model(x)
            got = export.run_onnx(session, x)
            errors_torch += _errors(want, y)
            errors_onnx += _errors(got, y)
            diff = float((got - want).abs().max()) if len(y) else 0.0
            max_diff = max(max_diff, diff if diff == diff else float("inf"))  # NaN: inf
    err_torch, err_onnx = 100.0 * errors_torch / n, 100.0 * errors_onnx / n
    print(f"{args.run_dir}: {cfg.model} on {cfg.data}, step {step}; exported in "
          f"{seconds:.1f} s (opset {opset})")
    print(f"test error on {n} samples: torch {err_torch:.2f}%, onnxruntime {err_onnx:.2f}% "
          f"(max |logit difference| {max_diff:.3g})")
    if abs(err_onnx - err_torch) > args.tolerance:
        raise CommandError(
            f"onnxruntime's test error {err_onnx:.2f}% differs from torch's {err_torch:.2f}% "
            f"by more than --tolerance {args.tolerance:g} percentage points (max |logit "
            f"difference| {max_diff:.3g}); {args.out} not written")
    atomic_write_bytes(args.out, blob)
    c, h, w = data.image_size
    wrote(args, args.out, f"ONNX opset {opset}: input (batch, {c}, {h}, {w}) float32 in "
                             f"[0, 1] -> logits (batch, {data.num_classes})")
    return 0
