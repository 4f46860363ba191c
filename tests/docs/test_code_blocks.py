"""Every code block of the README and the documentation pages that is meant to run, runs,
and prints what the page says it prints (convention: tests/docs/_markdown.py)."""

from __future__ import annotations

import re

import pytest

from tests.docs._markdown import DOCS, ROOT, Block, blocks, pages, run_page

PAGES = pages()


def test_the_pages_hold_runnable_blocks():
    counts = {p.name: len(blocks(p)) for p in PAGES}
    for name in ("index.md", "getting-started.md", "conventions.md", "mathematics.md"):
        assert counts.get(name, 0) >= 1, f"docs/{name} has no python/pycon block: {counts}"


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_code_runs_and_prints_what_it_says(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a block that writes a file writes it here
    monkeypatch.setenv("STNKIT_OFFLINE", "1")
    failures = run_page(path, include_python=path.name != "README.md")
    assert not failures, "\n".join(failures)


def test_a_wrong_printed_value_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\nx = 2\n```\n\n```pycon\n>>> x + 1\n4\n```\n", encoding="utf-8")
    failures = run_page(page)
    assert len(failures) == 1 and "1 of 1 examples failed" in failures[0], failures


def test_a_failing_python_block_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```python\nraise ValueError('no')\n```\n", encoding="utf-8")
    failures = run_page(page)
    assert failures and "page.md:4: ValueError: no" in failures[0], failures


def test_only_python_and_pycon_blocks_run(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\nexit 1\n```\n````python\nx = 1\n````\n```{code-block} python\n"
                    "raise SystemExit\n```\n", encoding="utf-8")
    assert [b.lang for b in blocks(page)] == ["python"]
    assert blocks(page)[0] == Block(page, 5, "python", "x = 1\n")


def test_docs_dir_is_where_the_pages_are():
    assert (DOCS / "conf.py").is_file()


def _shown_commands() -> list[tuple[str, str]]:
    """(where, "stnkit ...") of the commands the docs show: in the bash blocks of the pages
    and in the tutorials' ``stnkit ...`` literals."""
    from tests.test_readme import stnkit_commands

    out = []
    for page in PAGES[1:]:  # README.md: tests/test_readme.py checks its commands
        for line, command in stnkit_commands(page.read_text(encoding="utf-8")):
            out.append((f"{page.relative_to(ROOT)}:{line}", command))
    for script in sorted((DOCS / "tutorials").glob("*.py")):
        for command in re.findall(r"``(stnkit [^`]+)``", script.read_text(encoding="utf-8")):
            out.append((str(script.relative_to(ROOT)), command))
    return out


SHOWN = _shown_commands()


def test_the_docs_show_commands():
    assert len(SHOWN) >= 10, SHOWN


@pytest.mark.parametrize("where,command", SHOWN, ids=[f"{w} {c}" for w, c in SHOWN])
def test_shown_command_matches_the_parser(where, command):
    from tests.test_readme import command_problems

    problems = command_problems(command)
    assert not problems, f"{where}: {command!r}: {problems}"
