"""``stnkit models``: list the model zoo with parameter counts."""

from __future__ import annotations

import argparse

from stnkit._errors import StnkitValueError

HELP = "list every model of the zoo with its parameter count"

_EPILOG = """\
Default input sizes: 1,28,28 (the paper's R, P and E distorted MNIST, and the tutorial)
for every model but the MNIST-addition ones (*-x2): 2,42,42. Use --input-size 1,42,42 for
RTS and 1,60,60 for cluttered MNIST; parameter counts depend on the input size, as the
widths are fitted to the paper's common budget (~400k parameters).
"""


def _input_size(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected C,H,W (three positive ints), got {text!r}")
    return parts  # type: ignore[return-value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stnkit.cli.train import positive_int

    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--input-size", type=_input_size, default=None, metavar="C,H,W",
                        help="build every model for this input size (default: each model's own)")
    parser.add_argument("--num-classes", type=positive_int, default=None, metavar="N",
                        help="number of classes (default: each model's own, 10 or 19)")


def _widths(model) -> str:
    """The classifier's fitted widths, e.g. ``fc (349, 349)`` or ``conv (57, 118)``."""
    head = getattr(model, "classifier", None)
    if hasattr(head, "hidden"):
        return f"fc {head.hidden}"
    if hasattr(head, "channels"):
        return f"conv {head.channels}"
    return "fixed"


def run(args: argparse.Namespace) -> int:
    from stnkit.models import create_model, list_models, model_spec
    from stnkit.nn import localization_parameters

    rows = []
    for name in list_models():
        spec = model_spec(name)
        size = args.input_size or spec.default_input_size
        classes = args.num_classes or spec.default_num_classes
        try:
            model = create_model(name, input_size=size, num_classes=classes)
        except StnkitValueError as e:  # this model cannot take that input size
            rows.append((name, "x".join(map(str, size)), str(classes), "-", "-", "-",
                         f"n/a: {e}"))
            continue
        total = sum(p.numel() for p in model.parameters())
        loc = sum(p.numel() for p in localization_parameters(model))
        rows.append((name, "x".join(map(str, size)), str(classes), f"{total:,}", f"{loc:,}",
                     _widths(model), spec.description))
    header = ("model", "input", "classes", "parameters", "localisation", "classifier",
              "description")
    n = len(header) - 1
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(n)]
    right = (False, False, True, True, True, False)

    def fmt(row) -> str:
        cells = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row[:n], widths, right)]
        return "  ".join(cells + [row[n]]).rstrip()

    print(fmt(header))
    for row in rows:
        print(fmt(row))
    return 0
