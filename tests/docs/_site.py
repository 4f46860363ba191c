"""The built documentation site as the tests see it: where it is, how to build it, and its
HTML read with the standard library's parser (no extra dependency)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from tests.docs._markdown import DOCS, ROOT

#: The modules whose public names the API reference must document (issue 17), and their pages.
API_PAGES = {
    "stnkit.ops": "api/ops.html",
    "stnkit.ops.transforms": "api/ops-transforms.html",
    "stnkit.ops.reference": "api/ops-reference.html",
    "stnkit.nn": "api/nn.html",
    "stnkit.models": "api/models.html",
    "stnkit.data": "api/data.html",
    "stnkit.train": "api/train.html",
    "stnkit.viz": "api/viz.html",
    "stnkit.export": "api/export.html",
}

#: The build command of the README and CI, with the output directory left to the caller.
BUILD = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS)]

#: Environment variable naming an already built site (``docs/_build/html``) to check instead
#: of building one (CI builds it once with the command above, then runs these tests on it).
BUILT_ENV = "STNKIT_DOCS_HTML"


def build(out: Path, *, quick: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Build the site into ``out`` with warnings as errors; tutorials at their smallest
    budget when ``quick``. Returns the finished process (stdout and stderr merged)."""
    env = dict(os.environ, MPLBACKEND="Agg", STNKIT_OFFLINE="1")
    if quick:
        env["STNKIT_DOCS_QUICK"] = "1"
    # -d: keep the doctrees out of the output, -E: read every page afresh
    cmd = BUILD + [str(out), "-E", "-d", str(out.parent / "doctrees")]
    return subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


@dataclass
class Page:
    """The parts of one HTML page the checks need."""

    path: Path
    ids: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)  # href of every <a>
    images: list[str] = field(default_factory=list)  # src of every <img>
    unresolved: list[str] = field(default_factory=list)  # cross-references that found nothing


class _Collector(HTMLParser):
    def __init__(self, page: Page):
        super().__init__(convert_charrefs=True)
        self.page = page
        self.anchor_depth = 0
        self.xref_depth = 0  # inside a <code class="xref"> outside any link
        self.xref_text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.page.ids.add(a["id"])
        if tag == "a":
            self.anchor_depth += 1
            if a.get("name"):
                self.page.ids.add(a["name"])
            if a.get("href") is not None:
                self.page.links.append(a["href"])
        elif tag == "img" and a.get("src") is not None:
            self.page.images.append(a["src"])
        elif tag == "code" and "xref" in (a.get("class") or "").split() \
                and self.anchor_depth == 0:
            self.xref_depth += 1
            self.xref_text = []

    def handle_endtag(self, tag):
        if tag == "a":
            self.anchor_depth = max(0, self.anchor_depth - 1)
        elif tag == "code" and self.xref_depth:
            self.xref_depth -= 1
            self.page.unresolved.append("".join(self.xref_text).strip())

    def handle_data(self, data):
        if self.xref_depth:
            self.xref_text.append(data)


def read_page(path: Path) -> Page:
    page = Page(path)
    collector = _Collector(page)
    collector.feed(path.read_text(encoding="utf-8"))
    collector.close()
    return page


def html_pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)
