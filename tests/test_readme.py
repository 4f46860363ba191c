"""The README is the front door: its Python examples must run as written."""

import re
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


def test_ci_runs_the_readme_test_command():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Run the tests", 1)[1]
    command = re.search(r"```bash\n(.*?)\n```", section, flags=re.S).group(1).strip()
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert command in ci.splitlines(), f"README test command {command!r} is not a line of .ci/run"
    assert "torch==2.13.0" in command
