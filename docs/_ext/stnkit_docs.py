"""Sphinx directives that generate stnkit's reference pages from the code itself.

- ``stnkit-api MODULE``: the API reference of one public module, from its ``__all__``: a
  summary table, then every function, class, exception, constant and submodule with its
  docstring (autodoc). Nothing is listed by hand, so a new public name appears by itself.
- ``stnkit-cli``: the command-line reference, walked from ``stnkit.cli.build_parser()``: for
  every subcommand (and ``data``'s actions) its description, usage, flags by group and
  epilog. The parsers are the single source; nothing is written twice.

Both are used from the Markdown pages through MyST (```` ```{stnkit-api} stnkit.ops ````).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
import textwrap
from functools import lru_cache

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

#: The modules whose public names (``__all__``) the API reference documents, in page order.
PUBLIC_MODULES = (
    "stnkit.ops",
    "stnkit.ops.transforms",
    "stnkit.ops.reference",
    "stnkit.nn",
    "stnkit.models",
    "stnkit.data",
    "stnkit.train",
    "stnkit.viz",
    "stnkit.export",
)

KINDS = ("Modules", "Functions", "Classes", "Exceptions", "Constants")


# ------------------------------------------------------------------------------ docstrings

# Inline literals, roles, interpreted text and hyperlink references: left as they are.
_MARKUP = re.compile(r"(``.+?``|:[\w:.-]+:`[^`]*`|`[^`]*`_{0,2})")
# A '*' that opens emphasis or strong emphasis: not after a word character or a backslash,
# followed by a non-space character.
_STAR_OPEN = re.compile(r"(?<![\w\\*])(\*\*?)(?=[^\s*])")


def _plain(text: str) -> str:
    """Escape, in one line of plain docstring text, what reStructuredText would otherwise
    read as markup the author did not mean: ``|x|`` (absolute values; stnkit uses no
    substitutions) and a ``*`` that opens no emphasis (``*size``, ``**kwargs``)."""
    text = text.replace("|", "\\|")
    out, pos = [], 0
    for m in _STAR_OPEN.finditer(text):
        stars = m.group(1)
        rest = text[m.end():]
        closes = re.search(r"(?<=\S)" + re.escape(stars) + r"(?![\w*])", rest)
        if closes is None:  # no end-string: an unpacking star or a product, not emphasis
            out.append(text[pos:m.start()] + "\\*" * len(stars))
            pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def plain_text_safe(lines: list[str]) -> list[str]:
    """``lines`` of a docstring with :func:`_plain` applied outside literal blocks, doctest
    blocks, tables and inline markup.

    stnkit's docstrings are written to read well as text in ``help()``: formulas such as
    ``k(d) = max(0, 1 - |d|)`` and shapes such as ``(B, C, *size)`` are meant literally.
    """
    out: list[str] = []
    literal_indent: int | None = None  # inside a ``::`` literal block: its parent's indent
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None:
            if not stripped or indent > literal_indent:
                out.append(line)
                continue
            literal_indent = None
        if stripped.startswith((">>>", "...")) or re.match(r"^[=+|-][=+| -]*$", stripped) \
                or stripped.startswith("|"):
            out.append(line)
        else:
            parts = _MARKUP.split(line)
            out.append("".join(p if i % 2 else _plain(p) for i, p in enumerate(parts)))
        if stripped.endswith("::"):
            literal_indent = indent
    return out


def _process_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    lines[:] = plain_text_safe(lines)


# ------------------------------------------------------------------------------ the API


def kind_of(obj) -> str:
    if inspect.ismodule(obj):
        return "Modules"
    if inspect.isclass(obj):
        return "Exceptions" if issubclass(obj, BaseException) else "Classes"
    if callable(obj):
        return "Functions"
    return "Constants"


@lru_cache(maxsize=None)
def _attribute_docs() -> dict[str, list[tuple[str, str]]]:
    """name -> [(module, doc)] of every documented module-level attribute in stnkit
    (``#:`` comments and string literals after an assignment, as autodoc reads them)."""
    from sphinx.pycode import ModuleAnalyzer

    import stnkit

    out: dict[str, list[tuple[str, str]]] = {}
    names = ["stnkit"] + [m.name for m in pkgutil.walk_packages(stnkit.__path__, "stnkit.")
                          if not m.name.endswith("__main__")]  # reading it would run it
    for name in names:
        try:
            docs = ModuleAnalyzer.for_module(name).find_attr_docs()
        except Exception:  # a module without source (none today): nothing to read
            continue
        for (scope, attr), lines in docs.items():
            if scope == "":
                out.setdefault(attr, []).append((name, "\n".join(lines).strip()))
    return out


def constant_doc(module: str, name: str) -> str:
    """The doc comment of the constant ``module.name``, read from the module that defines it
    (a re-exported constant keeps the comment of its definition), or ""."""
    value = getattr(importlib.import_module(module), name)
    for where, doc in _attribute_docs().get(name, []):
        mod = importlib.import_module(where)
        if name in vars(mod) and vars(mod)[name] is value and doc:
            return doc
    return ""


def object_doc(module: str, name: str) -> str:
    """The docstring a reader of ``module.name``'s reference sees ("" if none)."""
    obj = getattr(importlib.import_module(module), name)
    if kind_of(obj) == "Constants":
        return constant_doc(module, name)
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__") or ""
        if doc.startswith(obj.__name__ + "("):  # a dataclass's generated signature
            return ""
        return doc.strip()
    return (inspect.getdoc(obj) or "").strip()


def public_names(module: str) -> dict[str, list[str]]:
    """kind -> sorted names of ``module.__all__``."""
    mod = importlib.import_module(module)
    out: dict[str, list[str]] = {k: [] for k in KINDS}
    for name in mod.__all__:
        out[kind_of(getattr(mod, name))].append(name)
    return {k: sorted(v, key=str.lower) for k, v in out.items() if v}


def _short_repr(value, width: int = 70) -> str:
    text = repr(value)
    if isinstance(value, (dict, tuple, list)) or "mappingproxy" in text:
        text = f"{type(value).__name__} of {len(value)} items"
    return text if len(text) <= width else text[: width - 3] + "..."


def api_rst(module: str) -> list[tuple[str | None, list[str]]]:
    """The reStructuredText of ``module``'s reference page body, as (section title or None
    for the introduction, lines) pairs."""
    mod = importlib.import_module(module)
    intro = [f".. automodule:: {module}", "   :no-members:", "", f".. currentmodule:: {module}",
             ""]
    groups = public_names(module)
    intro += [".. autosummary::", "   :nosignatures:", ""]
    # (constants are left out of the table: autosummary would show their type's docstring)
    intro += [f"   {name}" for kind in KINDS for name in groups.get(kind, [])
              if kind not in ("Modules", "Constants")]
    out: list[tuple[str | None, list[str]]] = [(None, intro + [""])]
    for kind, names in groups.items():
        lines = [f".. currentmodule:: {module}", ""]
        for name in names:
            obj = getattr(mod, name)
            if kind == "Modules":
                summary = (inspect.getdoc(obj) or "").split("\n\n")[0].replace("\n", " ")
                lines += [f"- :mod:`{obj.__name__}`: {summary}", ""]
            elif kind == "Functions":
                lines += [f".. autofunction:: {name}", ""]
            elif kind == "Classes":
                lines += [f".. autoclass:: {name}", "   :members:", "   :show-inheritance:", ""]
            elif kind == "Exceptions":
                lines += [f".. autoexception:: {name}", "   :show-inheritance:", ""]
            else:
                value = _short_repr(obj).replace("\n", " ")
                lines += [f".. py:data:: {name}", f"   :type: {type(obj).__name__}",
                          f"   :value: {value}", ""]
                doc = constant_doc(module, name)
                if doc:
                    lines += textwrap.indent(doc, "   ").splitlines() + [""]
        out.append((kind, lines))
    return out


class ApiDirective(SphinxDirective):
    """``.. stnkit-api:: MODULE``: the reference of one public module (see the module doc).

    Each kind of name gets its own section (built here, not parsed from a title, so that the
    sections of different modules' pages do not clash as labels)."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        module = self.arguments[0]
        self.env.note_dependency(importlib.import_module(module).__file__)
        out: list[nodes.Node] = []
        for title, lines in api_rst(module):
            content = StringList(lines, source=f"<stnkit-api {module}>")
            if title is None:
                holder = nodes.container()
                self.state.nested_parse(content, 0, holder)
                out += holder.children
                continue
            section = nodes.section(ids=[f"api-{module.replace('.', '-')}-{title.lower()}"])
            section += nodes.title(title, title)
            self.state.nested_parse(content, 0, section)
            out.append(section)
        return out


# ------------------------------------------------------------------------------ the CLI


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    return parser.formatter_class(prog=parser.prog, width=88)


def _usage(parser: argparse.ArgumentParser) -> str:
    f = _formatter(parser)
    f.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return f.format_help().strip()


def _invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return _formatter(parser)._format_action_invocation(action)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    return _formatter(parser)._expand_help(action)


def commands() -> list[tuple[str, argparse.ArgumentParser]]:
    """(``stnkit name [action]``, parser) of every subcommand, depth first, in help order."""
    from stnkit.cli import build_parser

    out = []

    def walk(parser):
        for sub in _subparsers(parser).values():
            out.append((sub.prog, sub))
            walk(sub)

    root = build_parser()
    out.append((root.prog, root))
    walk(root)
    return out


def _literal(text: str) -> list[str]:
    return [".. code-block:: text", ""] + textwrap.indent(text, "   ").splitlines() + [""]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("`", "\\`").replace("|", "\\|")


def cli_rst() -> list[str]:
    lines: list[str] = []
    for prog, parser in commands():
        depth = prog.count(" ")
        title = f"``{prog}``"
        lines += [title, "=-~"[min(depth, 2)] * len(title), ""]
        if parser.description:
            lines += [_escape(parser.description), ""]
        lines += _literal(_usage(parser))
        for group in parser._action_groups:
            actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS
                       and not isinstance(a, argparse._SubParsersAction)]
            if not actions:
                continue
            lines += [f".. rubric:: {group.title}", ""]
            for action in actions:
                lines += [f"``{_invocation(parser, action)}``"]
                text = _help(parser, action)
                if action.choices is not None and not action.option_strings and \
                        "one of" not in text:
                    text = (text + " " if text else "") + "(" + ", ".join(
                        map(str, action.choices)) + ")"
                lines += ["   " + _escape(text or "(no help)"), ""]
        subs = _subparsers(parser)
        if subs:
            lines += [".. rubric:: subcommands", ""]
            for name, sub in subs.items():
                lines += [f"- ``{sub.prog}``: {_escape(sub.description or '')}"]
            lines.append("")
        if parser.epilog:
            lines += _literal(parser.epilog.rstrip())
    return lines


class CliDirective(SphinxDirective):
    """``.. stnkit-cli::``: the reference of every ``stnkit`` command, from the parsers."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        import stnkit.cli

        for name in stnkit.cli.COMMANDS.values():
            self.env.note_dependency(importlib.import_module(name).__file__)
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, StringList(cli_rst(), source="<stnkit-cli>"), node)
        return node.children


def setup(app):
    app.add_directive("stnkit-api", ApiDirective)
    app.add_directive("stnkit-cli", CliDirective)
    app.connect("autodoc-process-docstring", _process_docstring)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
