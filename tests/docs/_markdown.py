"""The code blocks of the Markdown pages (README.md and docs/**/*.md) and how they are run.

Convention (also written in docs/contributing-docs.md):

- a fenced block tagged ``python`` is executed;
- a fenced block tagged ``pycon`` is a doctest: its ``>>>`` lines run and what they print
  must match the lines below them (ELLIPSIS and NORMALIZE_WHITESPACE apply);
- every other tag (``bash``, ``text``, ``{code-block} python``, ...) is shown, not run.

The runnable blocks of one page run in order in one namespace, as a reader would type them.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # first line of the block's content, 1-based
    lang: str  # "python" or "pycon"
    source: str

    @property
    def where(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path.name
        return f"{path}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The ``python`` and ``pycon`` blocks of one Markdown file, in order."""
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group("fence"), m.group("info").strip()
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][len(m.group("indent")):])
            j += 1
        if lang in ("python", "pycon"):
            out.append(Block(path, i + 2, lang, "\n".join(body) + "\n"))
        i = j + 1
    return out


def pages() -> list[Path]:
    """README.md and every hand-written Markdown page of the site (not the benchmark tables
    of docs/results, which hold no code, nor build outputs)."""
    skip = ("_build", "auto_tutorials", "results")
    found = [p for p in sorted(DOCS.rglob("*.md"))
             if not any(part in skip for part in p.relative_to(DOCS).parts)]
    return [ROOT / "README.md"] + found


def run_page(path: Path, *, include_python: bool = True) -> list[str]:
    """Run the blocks of one page; returns the failures (empty if every block passed).

    ``include_python=False`` runs only the doctests (``pycon``); used for README.md, whose
    ``python`` blocks tests/test_readme.py already executes.
    """
    namespace: dict = {"__name__": "__docs__"}
    failures: list[str] = []
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    cwd = os.getcwd()
    for block in blocks(path):
        if block.lang == "python":
            if not include_python:
                continue
            try:
                code = compile(block.source, block.where, "exec")
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(code, namespace)
            except Exception as e:  # noqa: BLE001 (reported with its place)
                failures.append(f"{block.where}: {type(e).__name__}: {e}")
                break  # later blocks depend on this one
        else:
            test = parser.get_doctest(block.source, namespace, block.where, str(block.path),
                                      block.line - 1)
            report = io.StringIO()
            result = runner.run(test, out=report.write, clear_globs=False)
            namespace.update(test.globs)  # DocTest runs in a copy: keep what it defined
            if result.failed:
                failures.append(f"{block.where}: {result.failed} of {result.attempted} "
                                f"examples failed\n{report.getvalue()}")
    os.chdir(cwd)
    return failures
