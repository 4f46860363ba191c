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
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# page -> screenshot height (tall enough to reach the page's figures)
PAGES = {"index": 1600, "auto_tutorials/tutorial_1_your_classifier": 7000}

# Run once the page has loaded (images included): write each image's natural size into
# the DOM, which --dump-dom then prints.
_PROBE = """<script>window.addEventListener("load", function () {
  for (const img of document.images) {
    img.setAttribute("data-natural", img.naturalWidth + "x" + img.naturalHeight);
  }
  document.body.setAttribute("data-probed", "yes");
});</script>"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
           "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=180)


def image_sizes(page: Path, profile: Path) -> list[tuple[str, int, int]]:
    """(src, natural width, natural height) of every <img> of ``page``, as loaded by chromium."""
    probe = page.with_name(f"_probe-{uuid.uuid4().hex}.html")  # beside it: same relative URLs
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"),
                     encoding="utf-8")
    try:
        dom = chromium("--dump-dom", probe.as_uri(), profile=profile).stdout
    finally:
        probe.unlink()
    assert 'data-probed="yes"' in dom, f"the probe did not run on {page.name}: {dom[-500:]}"
    out = []
    for tag in re.findall(r"<img\b[^>]*>", dom):
        src = re.search(r'src="([^"]*)"', tag)
        size = re.search(r'data-natural="(\d+)x(\d+)"', tag)
        assert size, f"image without a probed size: {tag}"
        out.append((src.group(1) if src else "", int(size.group(1)), int(size.group(2))))
    return out


def blankness(png: Path) -> tuple[float, float]:
    """(fraction of pixels that are not near-white, standard deviation of the grey levels)."""
    import numpy as np
    from PIL import Image

    with Image.open(png) as im:
        grey = np.asarray(im.convert("L"), dtype=np.float64)
    return float((grey < 235).mean()), float(grey.std())


@pytest.fixture(scope="module")
def browser():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@pytest.mark.parametrize("name", list(PAGES))
def test_page_renders_with_its_figures(site, browser, name, tmp_path):
    page = site.require_built() / f"{name}.html"
    profile = tmp_path / "profile"
    sizes = image_sizes(page, profile)
    figures = [s for s in sizes if "_images/" in s[0] or "demo-samples" in s[0]]
    assert figures, f"{name}: no figure images among {sizes}"
    broken = [s for s in sizes if s[1] == 0 or s[2] == 0]
    assert not broken, f"{name}: images that did not load: {broken}"

    png = tmp_path / (name.replace("/", "_") + ".png")
    shot = chromium(f"--screenshot={png}", f"--window-size=1280,{PAGES[name]}", page.as_uri(),
                    profile=profile)
    assert png.is_file(), f"no screenshot: {shot.stderr[-2000:]}"
    inked, spread = blankness(png)
    keep = os.environ.get("STNKIT_DOCS_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / png.name)
    # a page of text on white has ~5-10 % ink; figures add dark areas and spread
    assert inked > 0.05 and spread > 30, f"{name}: the screenshot looks blank ({inked=:.3f}, " \
                                         f"{spread=:.1f})"


def test_the_blank_check_can_fail(tmp_path):
    from PIL import Image

    Image.new("RGB", (200, 100), "white").save(tmp_path / "blank.png")
    inked, spread = blankness(tmp_path / "blank.png")
    assert inked == 0 and spread == 0
