"""The ``stnkit`` command. This package is the only code that reads ``sys.argv``.

Each subcommand lives in its own module here and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Building the parser imports no torch,
NumPy or :mod:`stnkit.ops` (``stnkit --help`` and flag errors are instant): a command module
imports its heavy dependencies inside ``run``.

Errors:

- bad flags exit 2 with the subcommand's usage, as argparse does;
- a :class:`stnkit.StnkitError` (an error stnkit raises on purpose: bad value, bad file,
  missing optional dependency; :class:`CommandError` is one) prints one line,
  ``stnkit <command>: error: <message>`` (``stnkit data show: error: ...``), exit status 1;
- so does an ``OSError`` whose errno says what the operating system refused about a file
  (:data:`USER_ERRNOS`: no such file, permission denied, is a directory, disk full,
  read-only file system, ...): the user named that file or can fix the machine. An OSError
  without such an errno (Pillow's "cannot write mode P as JPEG", a socket error deep in a
  library) is not shortened;
- anything else is a bug and keeps its traceback. ``STNKIT_DEBUG=1`` shows the traceback of
  the one-line errors too.

Output convention of every command that writes files: one line per file written on stdout,
``wrote PATH (what it holds)``, after the file is complete; ``-q/--quiet`` silences these
lines and the progress bars (results a command exists to print, such as test errors, still
print).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence

from stnkit._errors import StnkitError

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
    "export": "stnkit.cli.export",
}

# errnos of OSErrors a user can act on (the file they named, their disk): one line.
USER_ERRNOS = frozenset({
    errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EEXIST,
    errno.ENOSPC, errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP, errno.EDQUOT,
})


class CommandError(StnkitError):
    """An error the user can fix, found by the command line; printed as one line, exit 1."""


def add_quiet(parser: argparse.ArgumentParser, *, progress: bool = True) -> None:
    """``-q/--quiet`` (``--no-progress`` is an alias): no progress bars, no "wrote" lines."""
    what = "no progress bars and no 'wrote ...' lines" if progress else "no 'wrote ...' lines"
    parser.add_argument("-q", "--quiet", "--no-progress", dest="quiet", action="store_true",
                        help=what)


def wrote(args: argparse.Namespace, path: str | os.PathLike, what: str) -> None:
    """Print ``wrote PATH (what)`` unless ``args.quiet``: the one convention for written files."""
    if not getattr(args, "quiet", False):
        print(f"wrote {os.fspath(path)} ({what})", flush=True)


def build_parser() -> argparse.ArgumentParser:
    from stnkit import __version__

    parser = argparse.ArgumentParser(
        prog="stnkit",
        description="Spatial Transformer Networks: warps, models, training and pictures.",
    )
    parser.add_argument("--version", action="version", version=f"stnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)  # a broken command is a bug: no skipping
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def _one_line(e: BaseException, prog: str) -> str | None:
    """The message of an error a user can fix, or None for a bug."""
    if isinstance(e, StnkitError):
        message = str(e)
        prefix = f"{prog}: "  # CLI code may name itself as ``fn``: no stutter
        return message[len(prefix):] if message.startswith(prefix) else message
    if isinstance(e, OSError) and e.errno in USER_ERRNOS:
        return f"{os.fspath(e.filename)}: {e.strerror}" if e.filename is not None else \
            str(e.strerror)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # name the subcommand's usage, not the top-level one
        (getattr(args, "_parser", None) or parser).error(
            "unrecognized arguments: " + " ".join(extra))
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    prog = args._parser.prog  # "stnkit data show", as in the usage errors
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (StnkitError, OSError) as e:
        message = _one_line(e, prog)
        if message is None or os.environ.get("STNKIT_DEBUG"):
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
