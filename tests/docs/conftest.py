"""The documentation site, built once per test session (or given by $STNKIT_DOCS_HTML)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docs._markdown import DOCS
from tests.docs._site import BUILT_ENV, build

DOCS_PACKAGES = ("sphinx", "furo", "myst_parser", "sphinx_gallery")


def missing_docs_packages() -> list[str]:
    """The packages of the ``docs`` extra that are not installed (found without importing
    them: this suite turns their import-time warnings into errors)."""
    return [m for m in DOCS_PACKAGES if importlib.util.find_spec(m) is None]


def untracked(directory: Path) -> set[str] | None:
    """Untracked, not ignored files under ``directory`` (None outside a git checkout)."""
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "."],
                                cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
    except OSError:
        return None
    if status.returncode != 0:
        return None
    return {line[3:] for line in status.stdout.splitlines() if line.startswith("??")}


@dataclass
class Site:
    path: Path  # the HTML output directory
    process: subprocess.CompletedProcess | None  # None: built by the caller ($STNKIT_DOCS_HTML)
    left_behind: set[str] | None = None  # files the build added to the sources (None: unknown)

    def require_built(self) -> Path:
        if self.process is not None and self.process.returncode != 0:
            pytest.fail("the documentation build failed:\n" + self.process.stdout[-6000:])
        return self.path


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Site:
    given = os.environ.get(BUILT_ENV)
    if given:
        path = Path(given).resolve()
        if not (path / "index.html").is_file():
            pytest.fail(f"${BUILT_ENV}={given}: no index.html there")
        return Site(path, None)
    missing = missing_docs_packages()
    if missing:
        pytest.skip(f"the docs extra is not installed (missing {', '.join(missing)}): "
                    "pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("docs") / "html"
    before = untracked(DOCS)
    process = build(out, quick=True)
    after = untracked(DOCS)
    return Site(out, process, None if before is None or after is None else after - before)
