"""The ``stnkit`` command. This package is the only code that reads ``sys.argv``.

Each subcommand lives in its own module here and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Errors a user can fix are raised as
:class:`CommandError` (or ``ValueError``/``TypeError``/``OSError`` from the library) and
printed as one line, ``stnkit <command>: error: <message>``, with exit status 1; bad flags
exit 2 with the usage, as argparse does. ``STNKIT_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# name -> module; the order is the order ``stnkit --help`` lists them.
COMMANDS: dict[str, str] = {
    "demo": "stnkit.cli.demo",
    "train": "stnkit.cli.train",
    "eval": "stnkit.cli.eval",
    "reproduce": "stnkit.cli.reproduce",
    "show": "stnkit.cli.show",
    "warp": "stnkit.cli.warp",
    "models": "stnkit.cli.models",
    "data": "stnkit.cli.data",
}


class CommandError(Exception):
    """An error the user can fix; printed as one line, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    from stnkit import __version__

    parser = argparse.ArgumentParser(
        prog="stnkit",
        description="Spatial Transformer Networks: warps, models, training and pictures.",
    )
    parser.add_argument("--version", action="version", version=f"stnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue  # a command not built yet
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"stnkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except (CommandError, ValueError, TypeError, OSError) as e:
        if os.environ.get("STNKIT_DEBUG"):
            raise
        print(f"stnkit {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
