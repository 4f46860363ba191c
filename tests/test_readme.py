"""The README is the front door: its Python examples run as written, its test command is the
one CI runs, and its command lines match the real parsers."""

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2, f"found {len(BLOCKS)} python blocks in README.md"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index):
    # Blocks build on each other (the first imports torch), as a reader would run them.
    namespace: dict = {}
    for block in BLOCKS[: index + 1]:
        exec(compile(block, f"README.md block {index}", "exec"), namespace)


def _fenced_blocks(text: str, langs=("bash", "sh")) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every fenced block in one of ``langs``."""
    blocks, current, start, lang = [], None, 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if current is None:
                current, start, lang = [], number + 1, line[3:].strip()
            else:
                if lang in langs:
                    blocks.append((start, current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def readme_test_command(text: str) -> str:
    """The command of the README's "## Run the tests" section (its first bash block)."""
    section = text.split("## Run the tests", 1)[1].split("\n## ", 1)[0]
    blocks = _fenced_blocks(section)
    assert blocks, "no bash block under '## Run the tests'"
    lines = [line for line in blocks[0][1] if line.strip()]
    assert len(lines) == 1, f"expected one command line, got {lines}"
    return lines[0].strip()


def ci_test_command(ci: str) -> str:
    """The line of .ci/run between "# --- the README's test command" and "# ---"."""
    block = re.search(r"^# --- the README's test command.*?\n(.*?)\n# ---$", ci, flags=re.S | re.M)
    assert block, ".ci/run lost its README-command markers"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line between the markers, got {lines}"
    return lines[0].strip()


def test_ci_runs_the_readme_test_command():
    text = README.read_text(encoding="utf-8")
    command = readme_test_command(text)
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert ci_test_command(ci) == command, f"README {command!r} != .ci/run {ci_test_command(ci)!r}"
    assert "torch==2.13.0" in command


def test_the_command_comparison_can_fail():
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    changed = ci.replace("python -m pytest\n", "python -m pytest -x\n", 1)
    assert changed != ci
    assert ci_test_command(changed) != readme_test_command(README.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ the command lines it shows


def stnkit_commands(text: str) -> list[tuple[int, str]]:
    """(line number, "stnkit ...") of every `stnkit` command in the README's bash blocks;
    continued lines (trailing backslash, or an indented "[" of a synopsis) are joined and
    comments dropped."""
    out = []
    for start, lines in _fenced_blocks(text):
        joined: list[tuple[int, str]] = []
        for i, line in enumerate(lines):
            line = re.sub(r"\s+#.*$", "", line).rstrip()
            if joined and (joined[-1][1].endswith("\\") or re.match(r"\s+\[", line)):
                joined[-1] = (joined[-1][0], joined[-1][1].rstrip("\\") + " " + line.strip())
            else:
                joined.append((start + i, line))
        for number, line in joined:
            m = re.search(r"(?:^|&&\s*|-m\s+)(stnkit\s.*|stnkit$)", line)
            if m:
                out.append((number, m.group(1).strip()))
    return out


def _options(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _subparsers(parser) -> dict:
    import argparse

    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return a.choices
    return {}


def command_problems(line: str) -> list[str]:
    """What in one README command line does not match the real parser ([] if nothing).

    A synopsis (with [optional] parts, A|B alternatives or "...") must name existing
    subcommands and flags; a concrete command must parse as it stands.
    """
    import contextlib
    import io

    from stnkit.cli import build_parser

    parser = build_parser()
    words = line.split()[1:]
    if not words:
        return ["no subcommand"]
    synopsis = any(c in line for c in "[]|") or "..." in line
    if not synopsis:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                parser.parse_args(shlex.split(line)[1:])
        except SystemExit:
            return [err.getvalue().strip().splitlines()[-1]]
        return []
    problems = []
    commands = _subparsers(parser)
    names = words[0].split("|")
    for name in names:
        if name not in commands:
            problems.append(f"no subcommand {name!r}")
    subs = [commands[n] for n in names if n in commands]
    actions = _subparsers(subs[0]) if len(subs) == 1 else {}
    if actions and len(words) > 1:  # `data show|download`: the actions must exist
        for action in words[1].split("|"):
            if action not in actions:
                problems.append(f"no action {words[0]} {action!r}")
        subs = [actions[a] for a in words[1].split("|") if a in actions]
    known = set().union(*(_options(p) for p in subs)) if subs else set()
    for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", " ".join(words[1:])):
        if flag not in known:
            problems.append(f"{words[0]}: no flag {flag}")
    return problems


README_COMMANDS = stnkit_commands(README.read_text(encoding="utf-8"))


def test_readme_shows_commands():
    assert len(README_COMMANDS) >= 15, README_COMMANDS


@pytest.mark.parametrize("number,line", README_COMMANDS, ids=[str(n) for n, _ in README_COMMANDS])
def test_readme_command_matches_the_parser(number, line):
    problems = command_problems(line)
    assert not problems, f"README.md line {number}: {line!r}: {problems}"


def test_readme_synopsis_names_every_command():
    from stnkit.cli import COMMANDS

    shown = {name for _, line in README_COMMANDS for name in line.split()[1].split("|")
             if len(line.split()) > 1}
    assert set(COMMANDS) <= shown, f"not in README.md: {sorted(set(COMMANDS) - shown)}"


@pytest.mark.parametrize("line,problem", [
    ("stnkit warp IMAGE -o OUT [--no-such-flag N]", "warp: no flag --no-such-flag"),
    ("stnkit data show|fetch", "no action data 'fetch'"),
    ("stnkit teleport [-o DIR]", "no subcommand 'teleport'"),
    ("stnkit train --model cnn --data RTS --out r --iterations zero",
     "argument --iterations: expected a positive integer"),
])
def test_the_command_check_can_fail(line, problem):
    assert any(problem in p for p in command_problems(line)), command_problems(line)
