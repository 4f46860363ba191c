"""Every public name (``__all__``) of the documented modules has a docstring and appears in
the API reference; the CLI reference names every command and flag."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import re
from functools import lru_cache
from pathlib import Path

import pytest

import stnkit
from tests.docs._markdown import DOCS
from tests.docs._site import API_PAGES, read_page

# Public constants without a docstring yet (a string literal after the assignment, as for
# stnkit.data.EMBEDDED). They fail strictly: document one, then remove it from this list.
UNDOCUMENTED: set[str] = set()  # public names allowed to lack a docstring: none


def public_names() -> list[tuple[str, str]]:
    return [(module, name) for module in API_PAGES
            for name in importlib.import_module(module).__all__]


@lru_cache(maxsize=None)
def _constant_docs() -> dict[str, list[tuple[str, str]]]:
    """name -> [(module, docstring)] of every module-level assignment in stnkit followed by
    a string literal (read with ``ast``, independently of Sphinx)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for info in pkgutil.walk_packages(stnkit.__path__, "stnkit."):
        if info.name.endswith("__main__"):
            continue
        spec = importlib.util.find_spec(info.name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        body = tree.body
        for stmt, after in zip(body, body[1:]):
            targets = [stmt.target] if isinstance(stmt, ast.AnnAssign) else \
                stmt.targets if isinstance(stmt, ast.Assign) else []
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) \
                    and isinstance(after.value.value, str):
                for t in targets:
                    if isinstance(t, ast.Name):
                        out.setdefault(t.id, []).append((info.name, after.value.value.strip()))
    return out


def docstring(module: str, name: str) -> str:
    """What the reference shows for ``module.name`` ("" when nothing)."""
    obj = getattr(importlib.import_module(module), name)
    if inspect.ismodule(obj) or inspect.isroutine(obj):
        return (inspect.getdoc(obj) or "").strip()
    if inspect.isclass(obj):
        doc = (obj.__dict__.get("__doc__") or "").strip()
        return "" if doc.startswith(obj.__name__ + "(") else doc  # a dataclass's generated one
    for where, doc in _constant_docs().get(name, []):
        if vars(importlib.import_module(where)).get(name) is obj:
            return doc
    return ""


PUBLIC = public_names()


def test_the_modules_of_the_issue_are_documented():
    for module in ("stnkit.ops", "stnkit.ops.transforms", "stnkit.nn", "stnkit.models",
                   "stnkit.data", "stnkit.train", "stnkit.viz"):
        assert module in API_PAGES
    assert len(PUBLIC) > 120, len(PUBLIC)


@pytest.mark.parametrize("module,name", [
    pytest.param(m, n, marks=pytest.mark.xfail(strict=True, reason="no docstring yet"))
    if f"{m}.{n}" in UNDOCUMENTED else (m, n) for m, n in PUBLIC
], ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_public_name_has_a_docstring(module, name):
    assert docstring(module, name), f"{module}.{name} has no docstring"


def test_the_docstring_check_can_fail():
    assert docstring("stnkit.data", "EMBEDDED").startswith("``root`` value")
    assert docstring("stnkit.data", "DATA_ENV").startswith("Environment variable")
    assert docstring("stnkit.train.config", "OPTIMIZERS") == ""  # a str's own doc does not count
    assert docstring("stnkit.train", "TrainConfig")


def test_every_module_has_its_page():
    directives = {}
    for md in (DOCS / "api").glob("*.md"):
        for module in re.findall(r"^\.\. stnkit-api:: (\S+)$", md.read_text(encoding="utf-8"),
                                 flags=re.M):
            directives[module] = f"api/{md.stem}.html"
    assert directives == API_PAGES
    toctree = (DOCS / "api" / "index.md").read_text(encoding="utf-8")
    for page in API_PAGES.values():
        assert f"\n{page[4:-5]}\n" in toctree, f"{page} is not in docs/api/index.md's toctree"


@pytest.mark.slow
def test_every_public_name_is_in_the_built_reference(site):
    root = site.require_built()
    missing = []
    for module, page in API_PAGES.items():
        ids = read_page(root / page).ids
        if f"module-{module}" not in ids:
            missing.append(f"{page}: no module-{module}")
        for name in importlib.import_module(module).__all__:
            obj = getattr(importlib.import_module(module), name)
            target = f"module-{obj.__name__}" if inspect.ismodule(obj) else f"{module}.{name}"
            where = root / API_PAGES.get(obj.__name__, page) if inspect.ismodule(obj) \
                else root / page
            if target not in (ids if where == root / page else read_page(where).ids):
                missing.append(f"{page}: no {target}")
    assert not missing, "\n".join(missing)


@pytest.mark.slow
def test_every_command_and_flag_is_in_the_cli_reference(site):
    import argparse

    from stnkit.cli import build_parser

    html = (site.require_built() / "cli.html").read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", "", html)
    missing = []

    def walk(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    if sub.prog not in text:
                        missing.append(sub.prog)
                    walk(sub)
            for option in action.option_strings:
                if option not in text:
                    missing.append(f"{parser.prog} {option}")

    walk(build_parser())
    assert not missing, missing
