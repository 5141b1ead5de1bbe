"""Sphinx configuration: Markdown pages (MyST), numpydoc docstrings through autodoc, the alabaster theme."""

import sys
from pathlib import Path

# Document the checkout the site is built from, whether or not it is the installed fastbp.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastbp  # noqa: E402

project = "fastbp"
author = "the fastbp developers"
version = release = fastbp.__version__

extensions = ["myst_parser", "numpydoc", "sphinx.ext.autodoc", "sphinxarg.ext"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]

# Links to a section of another page, as [text](page.md#section-title).
myst_heading_anchors = 3

# The docstrings give the types; signatures stay readable without them.
autodoc_typehints = "none"
autodoc_member_order = "bysource"
# Defaults as written in the source: ``np.float64`` rather than ``<class 'numpy.float64'>``.
autodoc_preserve_defaults = True
# Members are listed by the API page's directives, not by numpydoc's summary tables.
numpydoc_show_class_members = False

html_theme = "alabaster"
html_theme_options = {"description": "Small neural networks trained by backpropagation, compiled."}
