"""A headless browser renders the start page and a tutorial page, and they show their
figures: every image of the page has loaded with a non-zero natural size (read from the
browser's DOM), and the screenshot is not blank.

Needs Debian's chromium (``apt-get install chromium``); skipped where it is absent.
``STNKIT_DOCS_SCREENSHOTS=DIR`` keeps the screenshots in DIR.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# page -> screenshot height (tall enough to reach the page's figures)
PAGES = {"index": 1600, "auto_tutorials/tutorial_1_your_classifier": 6000}

# Run once the page has loaded (images included): write each image's natural size and its
# place on the page into the DOM, which --dump-dom then prints.
_PROBE = """<script>window.addEventListener("load", function () {
  for (const img of document.images) {
    const r = img.getBoundingClientRect();
    img.setAttribute("data-natural", img.naturalWidth + "x" + img.naturalHeight);
    img.setAttribute("data-rect", [r.left, r.top + window.scrollY, r.width, r.height]
                     .map(Math.round).join(","));
  }
  document.body.setAttribute("data-probed", "yes");
});</script>"""


@dataclass
class Image:
    src: str
    natural: tuple[int, int]  # (width, height) of the loaded file; 0 if it did not load
    rect: tuple[int, int, int, int]  # (left, top, width, height) on the page, CSS pixels


def chromium(*args: str, profile: Path, height: int) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
           "--force-device-scale-factor=1", f"--window-size=1280,{height}",
           "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=180)


def images(page: Path, profile: Path, height: int) -> list[Image]:
    """Every <img> of ``page`` as chromium loaded and laid it out."""
    probe = page.with_name(f"_probe-{uuid.uuid4().hex}.html")  # beside it: same relative URLs
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"),
                     encoding="utf-8")
    try:
        dom = chromium("--dump-dom", probe.as_uri(), profile=profile, height=height).stdout
    finally:
        probe.unlink()
    assert 'data-probed="yes"' in dom, f"the probe did not run on {page.name}: {dom[-500:]}"
    out = []
    for tag in re.findall(r"<img\b[^>]*>", dom):
        src = re.search(r'src="([^"]*)"', tag)
        size = re.search(r'data-natural="(\d+)x(\d+)"', tag)
        rect = re.search(r'data-rect="(-?\d+),(-?\d+),(\d+),(\d+)"', tag)
        assert size and rect, f"image without a probed size: {tag}"
        out.append(Image(src.group(1) if src else "", (int(size[1]), int(size[2])),
                         tuple(int(v) for v in rect.groups())))
    return out


def ink(png: Path, box: tuple[int, int, int, int] | None = None) -> tuple[float, float]:
    """(fraction of pixels that are not near-white, standard deviation of the grey levels)
    of a screenshot, or of its region ``box`` = (left, top, width, height)."""
    import numpy as np
    from PIL import Image as PILImage

    with PILImage.open(png) as im:
        grey = np.asarray(im.convert("L"), dtype=np.float64)
    if box is not None:
        left, top, width, height = box
        grey = grey[max(top, 0):top + height, max(left, 0):left + width]
    return (float((grey < 235).mean()), float(grey.std())) if grey.size else (0.0, 0.0)


@pytest.fixture(scope="module")
def browser():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@pytest.mark.parametrize("name", list(PAGES))
def test_page_renders_with_its_figures(site, browser, name, tmp_path):
    page = site.require_built() / f"{name}.html"
    profile, height = tmp_path / "profile", PAGES[name]
    found = images(page, profile, height)
    figures = [im for im in found if "_images/" in im.src]
    assert figures, f"{name}: no figure images among {[im.src for im in found]}"
    broken = [im.src for im in found if 0 in im.natural]
    assert not broken, f"{name}: images that did not load: {broken}"

    png = tmp_path / (name.replace("/", "_") + ".png")
    shot = chromium(f"--screenshot={png}", page.as_uri(), profile=profile, height=height)
    assert png.is_file(), f"no screenshot: {shot.stderr[-2000:]}"
    keep = os.environ.get("STNKIT_DOCS_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / png.name)
    page_ink, page_spread = ink(png)
    assert page_ink > 0.01 and page_spread > 10, \
        f"{name}: the screenshot is blank ({page_ink=:.3f}, {page_spread=:.1f})"
    # the figures are drawn where the page lays them out (those within the screenshot)
    shown = [im for im in figures if im.rect[1] + im.rect[3] <= height and im.rect[2] > 50]
    assert shown, f"{name}: no figure within the first {height} px: {figures}"
    for im in shown:
        fig_ink, fig_spread = ink(png, im.rect)
        assert fig_ink > 0.05 and fig_spread > 20, \
            f"{name}: figure {im.src} at {im.rect} looks blank ({fig_ink=:.3f}, {fig_spread=:.1f})"


def test_the_blank_check_can_fail(tmp_path):
    from PIL import Image as PILImage

    png = tmp_path / "half.png"
    im = PILImage.new("RGB", (200, 100), "white")
    im.paste((0, 0, 0), (100, 0, 200, 100))  # right half black
    im.save(png)
    assert ink(png, (0, 0, 100, 100)) == (0.0, 0.0)
    assert ink(png, (100, 0, 100, 100))[0] == 1.0
    assert ink(png)[0] == 0.5


def test_the_mathematics_is_typeset(site, browser, tmp_path):
    # MathJax ships with the site (sphinx-mathjax-offline): the formulas render offline.
    page = site.require_built() / "mathematics.html"
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile", height=1600).stdout
    typeset = dom.count("<mjx-container")
    raw = re.findall(r"\\\(|\\\[", re.sub(r"<script.*?</script>", "", dom, flags=re.S))
    assert typeset > 50 and not raw, f"{typeset} formulas typeset, {len(raw)} left as TeX"
