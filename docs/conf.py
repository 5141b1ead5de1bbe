"""Sphinx configuration: Markdown pages (MyST), numpydoc docstrings through autodoc, the alabaster theme."""

import sys
from pathlib import Path

# Document the checkout the site is built from, whether or not it is the installed fastbp.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastbp  # noqa: E402
from fastbp._concepts import ACTIVATIONS, INITS, LAYER_KINDS, LOSSES, OPTIMIZER_OPTIONS, OPTIMIZERS, OUTPUTS  # noqa: E402

#: The tables of choices, written from fastbp._concepts at every build (the training page includes them).
GENERATED = Path(__file__).resolve().parent / "_generated"


def choices_page() -> str:
    """Markdown tables of every named choice, with what each does, from the lists that define them."""

    def table(title, header, rows):
        lines = [f"### {title}", "", f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
        return "\n".join([*lines, *(f"| {' | '.join(cells)} |" for cells in rows), ""])

    def code(name):
        return f'`"{name}"`'

    def rst(text):  # the lists' summaries mark code as reStructuredText does
        return text.replace("``", "`")

    return "\n".join(
        [
            table(
                "Activations",
                ["name", "computes", "hidden layers", "`init=None` gives"],
                [
                    [code(name), rst(a.summary), "yes" if a.hidden else "no (outputs only)", code(a.init)]
                    for name, a in ACTIVATIONS.items()
                ],
            ),
            table(
                "Outputs and losses",
                ["output", "units", "losses (the first is the default)"],
                [[code(name), rst(o.summary), ", ".join(map(code, o.losses))] for name, o in OUTPUTS.items()],
            ),
            table("Losses", ["loss", "per row"], [[code(name), rst(loss.summary)] for name, loss in LOSSES.items()]),
            table(
                "Optimizers",
                ["optimizer", "update"],
                [[code(name), rst(OPTIMIZERS[name].summary)] for name in OPTIMIZER_OPTIONS],
            ),
            table("Initialisations", ["init", "weights"], [[code(name), rst(i.summary)] for name, i in INITS.items()]),
            table(
                "Layer kinds", ["kind", "computes"], [[code(name), rst(k.summary)] for name, k in LAYER_KINDS.items()]
            ),
        ]
    )


GENERATED.mkdir(exist_ok=True)
(GENERATED / "choices.md").write_text(choices_page(), encoding="utf-8")

project = "fastbp"
author = "the fastbp developers"
version = release = fastbp.__version__

extensions = ["myst_parser", "numpydoc", "sphinx.ext.autodoc", "sphinxarg.ext"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_generated"]

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
