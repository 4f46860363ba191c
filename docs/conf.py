"""Sphinx configuration of the stnkit documentation.

Build (warnings are errors; the tutorials are executed):

    python -m pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html

``STNKIT_DOCS_QUICK=1`` runs the tutorials at their smallest budget (what the tests use);
``-D plot_gallery=0`` skips running them (the gallery pages then show code only).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import stnkit  # noqa: E402  (after the path set-up)

# Headless, deterministic figures; tutorials use the package's embedded MNIST, never the net.
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("STNKIT_OFFLINE", "1")

project = "stnkit"
author = "stnkit developers"
copyright = "stnkit developers, MIT licence"
release = version = stnkit.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax served from _static: the maths renders offline too
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "matplotlib.sphinxext.plot_directive",
    "stnkit_docs",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "results/*.md",  # tables written by the benchmarks; included by the results pages
    "tutorials/GALLERY_HEADER.rst",
    "auto_tutorials/*.ipynb",
    "auto_tutorials/*.py",
    "auto_tutorials/*.zip",
    "auto_tutorials/*.json",
    "**/*.md5",
]
templates_path: list[str] = []
smartquotes = False  # "--flag" and 'quotes' stay as typed: this is a technical reference

# -- MyST (Markdown pages)
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# -- API from docstrings (Google style)
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
autodoc_mock_imports: list[str] = []
autosummary_generate = False  # the stnkit-api directive writes the pages' content itself
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = [("Shapes", "params_style"), ("Convention", "notes_style")]
add_module_names = False
python_use_unqualified_type_names = True

# -- pictures drawn at build time by docs/_figures/*.py (matplotlib's plot directive)
plot_pre_code = "import numpy as np\nfrom matplotlib import pyplot as plt\nUNDER_PLOT_DIRECTIVE = True"
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"savefig.bbox": "tight", "figure.dpi": 110}

# -- tutorials: plain Python scripts, executed and rendered by sphinx-gallery
sphinx_gallery_conf = {
    "examples_dirs": "tutorials",
    "gallery_dirs": "auto_tutorials",
    "filename_pattern": r"/tutorial_",  # every tutorial runs
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "capture_repr": ("_repr_html_",),
    "abort_on_example_error": True,
    # Run every tutorial on every build: its outputs depend on the budget (STNKIT_DOCS_QUICK)
    # and on the library, not only on the script, so sphinx-gallery's reuse of outputs of an
    # unchanged script (kept in docs/auto_tutorials) could show stale results.
    "run_stale_examples": True,
    "show_signature": False,
    "write_computation_times": False,
    "reset_modules": ("matplotlib",),
    "min_reported_time": 0,
}

# -- HTML
html_theme = "furo"
html_title = f"stnkit {release}"
html_static_path: list[str] = []
html_theme_options = {"navigation_with_keys": True}
html_show_sourcelink = False
