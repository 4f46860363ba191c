"""The site builds with warnings as errors, its tutorials run and show their figures, and
every internal link and image of the built HTML resolves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.docs._markdown import DOCS
from tests.docs._site import html_pages, read_page

TUTORIALS = sorted(p.stem for p in (DOCS / "tutorials").glob("tutorial_*.py"))

# Hand-written pages: every cross-reference in them must find its target. (Docstrings may
# name private helpers, which the reference does not document; those stay plain text.)
HAND_WRITTEN = ("index", "getting-started", "conventions", "mathematics", "library", "data",
                "training", "speed", "cli", "results", "development", "contributing-docs",
                "api/index") + tuple(f"auto_tutorials/{t}" for t in TUTORIALS)


@pytest.mark.slow
def test_site_builds_without_warnings(site):
    if site.process is None:
        pytest.skip("site built by the caller (with -W: the build command is this test)")
    out = site.process.stdout
    assert site.process.returncode == 0, out[-6000:]
    warnings = [line for line in out.splitlines() if "WARNING" in line or "ERROR" in line]
    assert not warnings, "\n".join(warnings)
    assert "build succeeded" in out, out[-2000:]


def test_there_are_five_tutorials():
    assert len(TUTORIALS) == 5, TUTORIALS


@pytest.mark.slow
@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_ran_and_shows_its_output(site, name):
    path = site.require_built() / "auto_tutorials" / f"{name}.html"
    assert path.is_file(), f"{path} was not built"
    text = path.read_text(encoding="utf-8")
    page = read_page(path)
    figures = [src for src in page.images if "sphx_glr_" in src]
    assert "sphx-glr-script-out" in text, f"{name}: no printed output on the page"
    warned = re.findall(r"\w+Warning: [^<\n]*", text)
    assert not warned, f"{name}: its output holds warnings: {warned}"
    if name != "tutorial_5_compile_export":  # the only tutorial that draws nothing
        assert figures, f"{name}: no figures on the page (images: {page.images})"


def _target(page: Path, ref: str, site: Path) -> tuple[Path | None, str]:
    """(file, fragment) an internal href or src points to; (None, "") for external ones."""
    parts = urlsplit(ref)
    if parts.scheme or parts.netloc or ref.startswith(("mailto:", "javascript:", "data:")):
        return None, ""
    path = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
    if path.is_dir():
        path = path / "index.html"
    return path, unquote(parts.fragment)


@pytest.mark.slow
def test_internal_links_and_images_resolve(site):
    root = site.require_built()
    pages = {p.resolve(): read_page(p) for p in html_pages(root)}
    assert len(pages) > 20, sorted(pages)
    broken = []
    for path, page in pages.items():
        where = path.relative_to(root)
        for ref in page.links + page.images:
            target, fragment = _target(path, ref, root)
            if target is None:
                continue
            if not target.is_file() or target.stat().st_size == 0:
                broken.append(f"{where}: {ref} -> missing {target}")
            elif fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else read_page(target).ids
                if fragment not in ids:
                    broken.append(f"{where}: {ref} -> no id {fragment!r} in {target.name}")
    assert not broken, "\n".join(broken[:50])


@pytest.mark.slow
@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_cross_references_of_the_pages_resolve(site, name):
    page = read_page(site.require_built() / f"{name}.html")
    assert not page.unresolved, f"{name}: references to nothing: {page.unresolved}"


def test_an_unresolved_reference_is_seen(tmp_path):
    (tmp_path / "p.html").write_text(
        '<a class="reference internal" href="x.html#a"><code class="xref py py-func">ok()'
        '</code></a> <code class="xref py py-func docutils literal"><span class="pre">'
        'stnkit.ops.nothing()</span></code>', encoding="utf-8")
    assert read_page(tmp_path / "p.html").unresolved == ["stnkit.ops.nothing()"]


def test_the_link_check_can_fail(tmp_path):
    (tmp_path / "a.html").write_text('<a href="b.html#x">b</a><img src="c.png">'
                                     '<a href="https://example.org/">ext</a>', encoding="utf-8")
    (tmp_path / "b.html").write_text('<p id="y">no x</p>', encoding="utf-8")
    page = read_page(tmp_path / "a.html")
    targets = [_target(tmp_path / "a.html", ref, tmp_path) for ref in page.links + page.images]
    assert targets[0] == (tmp_path / "b.html", "x")
    assert "x" not in read_page(tmp_path / "b.html").ids
    assert targets[1] == (None, "") and not targets[2][0].exists()


def test_every_results_table_has_a_page():
    included = set()
    for md in (DOCS / "reproductions").glob("*.md"):
        included |= set(re.findall(r"\{include\} \.\./results/(\S+\.md)",
                                   md.read_text(encoding="utf-8")))
    tables = {p.name for p in (DOCS / "results").glob("*.md")}
    tracked = subprocess.run(["git", "ls-files", "docs/results"], cwd=DOCS.parent, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if tracked.returncode == 0:  # a table still being written (untracked) needs no page yet
        tables &= {Path(p).name for p in tracked.stdout.split()}
    assert tables <= included, f"no page in docs/reproductions/ includes {sorted(tables - included)}"


@pytest.mark.slow
def test_the_build_writes_nothing_into_the_sources(site):
    site.require_built()
    if site.left_behind is None:
        pytest.skip("site built by the caller, or not a git checkout")
    assert not site.left_behind, \
        f"files the build left in docs/ (ignore or move them): {sorted(site.left_behind)}"


@pytest.mark.slow
def test_the_results_pages_include_the_tables(site):
    root = site.require_built()
    for md in sorted((DOCS / "reproductions").glob("*.md")):
        source = md.read_text(encoding="utf-8")
        included = re.search(r"\{include\} \.\./results/(\S+\.md)", source)
        assert included, f"{md.name} includes no table of docs/results"
        table = (DOCS / "results" / included.group(1)).read_text(encoding="utf-8")
        heading = table.splitlines()[0].lstrip("# ").replace("`", "").strip()
        html = (root / "reproductions" / f"{md.stem}.html").read_text(encoding="utf-8")
        text = re.sub(r"<[^>]+>", "", html)
        assert heading.split(":")[0].split("(")[0].strip() in text, (md.name, heading)
        assert re.search(r"```|[Cc]ommand", source + table), \
            f"{md.name}: neither the page nor the table shows its command"
