"""The `stnkit` command itself: instant help (no torch), each subcommand's own usage, one
spelling per flag, the "wrote PATH (what)" convention, and which errors become one line."""

from __future__ import annotations

import argparse
import errno
import json
import os
import subprocess
import sys
import time

import pytest

from stnkit._checks import StnkitFileError, StnkitValueError, fail
from stnkit.cli import COMMANDS, CommandError, build_parser, main

HEAVY = ("torch", "numpy", "stnkit.ops")


def _subparsers(parser: argparse.ArgumentParser, prefix=("stnkit",)):
    """(name path, parser) of every subcommand, nested ones (`data show`) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subparsers(sub, (*prefix, name))


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


# ----------------------------------------------------------------------------- no torch for help


_PROBE = """
import sys
from stnkit.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("HEAVY", sorted(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["train", "--bogus"],
                                  ["warp", "--help"], ["data", "show", "--help"],
                                  ["eval", "--help"], ["reproduce", "--help"], ["demo", "-n"]])
def test_help_and_flag_errors_import_no_torch(args):
    """A subprocess, so that nothing this test session imported counts."""
    res = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args],
                         capture_output=True, text=True, timeout=120)
    last = res.stdout.strip().splitlines()[-1]
    assert last == "HEAVY []", f"{args}: {last}\n{res.stderr[-2000:]}"


def test_build_parser_imports_no_torch():
    code = ("import sys; from stnkit.cli import build_parser; build_parser(); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


def test_help_is_fast():
    """Generous bound (a loaded 2-core machine): it took ~2 s when it imported torch."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    times = []
    for _ in range(3):
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "stnkit", "--help"], capture_output=True,
                             text=True, timeout=120, env=env)
        times.append(time.perf_counter() - t)
        assert res.returncode == 0 and "usage: stnkit" in res.stdout
    # the interpreter alone: the part of the time that is not ours
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], timeout=120)
    base = time.perf_counter() - t
    assert min(times) < base + 1.0, f"{times=} {base=}"


# ----------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("args,usage", [
    (["train", "--bogus"], "usage: stnkit train "),
    (["warp", "x.png", "-o", "y.png", "--bogus"], "usage: stnkit warp "),
    (["data", "show", "R", "-o", "g.png", "--bogus"], "usage: stnkit data show "),
    (["models", "--bogus", "1"], "usage: stnkit models "),
    (["--bogus"], "usage: stnkit [-h]"),
])
def test_unknown_flag_prints_the_subcommand_usage(capsys, args, usage):
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(usage), err
    assert "error: unrecognized arguments: --bogus" in err, err


# ----------------------------------------------------------------------------- one spelling


def test_every_command_spells_quiet_and_output_the_same_way():
    """-q/--quiet everywhere (--no-progress, demo's old spelling, an alias); -o/--out for every
    output (--output, the old spelling of warp and data show, an alias)."""
    seen_quiet = []
    for path, parser in _subparsers(build_parser()):
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            continue  # `data` itself: its actions have the flags
        options = _options(parser)
        name = " ".join(path)
        for alias in ("--quiet", "--no-progress", "-q"):
            if alias in options:
                action = options[alias]
                assert action.option_strings == ["-q", "--quiet", "--no-progress"], name
                assert action.dest == "quiet", name
                seen_quiet.append(name)
        for alias in ("--out", "--output", "-o"):
            if alias in options:
                assert options[alias].option_strings[:2] == ["-o", "--out"], name
                assert options[alias].dest == "out", name
        assert "--count" not in options or options["--count"].option_strings[:2] == \
            ["-n", "--num-samples"], name
    writers = {"stnkit demo", "stnkit train", "stnkit eval", "stnkit reproduce", "stnkit show",
               "stnkit warp", "stnkit data show", "stnkit data download",
               "stnkit data generate"}
    assert writers <= set(seen_quiet), writers - set(seen_quiet)


def test_the_old_spellings_still_work():
    parser = build_parser()
    a = parser.parse_args(["demo", "--no-progress"])
    b = parser.parse_args(["warp", "in.png", "--output", "o.png"])
    c = parser.parse_args(["data", "show", "R", "--output", "g.png", "--count", "9"])
    assert a.quiet is True and b.out == "o.png" and (c.out, c.count) == ("g.png", 9)


# ----------------------------------------------------------------------------- errors


def _with_run(monkeypatch, body):
    """`stnkit models` whose run() is ``body``."""
    import stnkit.cli.models

    monkeypatch.setattr(stnkit.cli.models, "run", lambda args: body())


@pytest.mark.parametrize("error,line", [
    (lambda: fail("warp", "size", "positive", -1), "stnkit models: error: warp: expected size "
                                                   "positive, got -1"),
    (lambda: (_ for _ in ()).throw(StnkitFileError("read_x: f.bin: truncated")),
     "stnkit models: error: read_x: f.bin: truncated"),
    (lambda: (_ for _ in ()).throw(CommandError("stnkit models: expected --x 1, got 2")),
     "stnkit models: error: expected --x 1, got 2"),  # no "stnkit models:" twice
    (lambda: open("/definitely/not/here.txt"),
     "stnkit models: error: /definitely/not/here.txt: No such file or directory"),
    (lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")),
     "stnkit models: error: No space left on device"),
])
def test_errors_raised_on_purpose_are_one_line(monkeypatch, capsys, error, line):
    _with_run(monkeypatch, error)
    monkeypatch.delenv("STNKIT_DEBUG", raising=False)
    assert main(["models"]) == 1
    assert capsys.readouterr().err == line + "\n"


@pytest.mark.parametrize("bug", [
    ValueError("a library bug: shapes do not match"),  # not a StnkitError
    TypeError("unsupported operand type(s)"),
    OSError("cannot write mode P as JPEG"),  # no errno: not the OS refusing a file
    KeyError("x"),
])
def test_bugs_keep_their_traceback(monkeypatch, bug):
    def body():
        raise bug

    _with_run(monkeypatch, body)
    with pytest.raises(type(bug)) as e:
        main(["models"])
    assert e.value is bug


def test_debug_shows_the_traceback_of_one_line_errors(monkeypatch):
    _with_run(monkeypatch, lambda: fail("f", "x", "y", "z"))
    monkeypatch.setenv("STNKIT_DEBUG", "1")
    with pytest.raises(StnkitValueError):
        main(["models"])


def test_a_command_module_that_does_not_import_is_not_skipped(monkeypatch):
    monkeypatch.setitem(COMMANDS, "ghost", "stnkit.cli.ghost_that_does_not_exist")
    with pytest.raises(ModuleNotFoundError, match="ghost_that_does_not_exist"):
        build_parser()


# ----------------------------------------------------------------------------- eval's output


def test_eval_prints_what_it_wrote_and_quiet_silences_it(monkeypatch, capsys, tmp_path):
    import stnkit.train

    result = {"run_dir": str(tmp_path), "model": "fcn", "data": "mnist", "step": 4,
              "test_error": 12.5, "test_loss": 0.5, "num_samples": 8,
              "per_class": [{"class": 0, "count": 8, "errors": 1, "error": 12.5}],
              "confusion_matrix": [[7]]}
    monkeypatch.setattr(stnkit.train, "evaluate", lambda *a, **k: result)
    assert main(["eval", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.endswith(f"\nwrote {tmp_path / 'eval.json'} (test error, per-class errors, "
                        "confusion matrix)\n"), out
    assert main(["eval", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "\nwrote " not in out and "test error 12.50%" in out
    assert main(["eval", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == result  # nothing but the JSON


def test_a_nested_command_names_itself_in_its_one_line_errors(monkeypatch, capsys):
    import stnkit.cli.data

    monkeypatch.setattr(stnkit.cli.data, "_info", lambda args: fail("info", "x", "y", "z"))
    assert main(["data", "info"]) == 1
    assert capsys.readouterr().err == "stnkit data info: error: info: expected x y, got z\n"
