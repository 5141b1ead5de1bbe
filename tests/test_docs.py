"""The documentation's examples run as written.

Every ``python`` block of ``README.md`` and of the pages under ``docs/`` is saved as a
script and run in a fresh process (the Dask example starts worker processes that
import it again), in a temporary directory, with the fastbp these tests import.  Each
block stands alone: it imports and builds what it uses.  Blocks that read the wheat
seeds data find a copy of the shared one as ``wheat-seeds.csv`` in their directory and
in the data set cache (``$FASTBP_DATA_DIR``), and those that read Fashion-MNIST find the
shared copy there, so nothing is downloaded.  A block whose
imports are missing (Dask, ``distributed``) is skipped with a reason, but fails under
CI (``$CI`` set), which must run them all.  Shell blocks are not run.
"""

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastbp
from fastbp._concepts import HIDDEN_ACTIVATIONS, INITS, LOSSES, OPTIMIZER_OPTIONS, OUTPUTS

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
PAGES = [
    REPO_ROOT / "README.md",
    *sorted(path for path in DOCS.rglob("*.md") if not {"_build", "_generated"} & set(path.parts)),
]
#: Seconds one example may take: the Dask one starts a local cluster of two worker processes; the founding
#: notebook's cell trains on all of Fashion-MNIST.
TIMEOUT = 120
LONG_TIMEOUT = 900
#: How many examples each page has at least, so that a page losing its examples fails here.
EXPECTED_EXAMPLES = {
    "README.md": 8,
    "docs/guide/training.md": 4,
    "docs/guide/estimators.md": 2,
    # One core, every core, the Dask cluster, and streaming from a file and from a Dask array.
    "docs/guide/parallel.md": 5,
    "docs/guide/many-networks.md": 2,
    "docs/guide/convolutional.md": 2,
    "docs/guide/cli.md": 1,
    "docs/guide/model-files.md": 2,
    "docs/guide/tutorial.md": 3,
}
#: Modules that import another distribution's: ``dask.distributed`` is ``distributed``'s.
PROVIDED_BY = {"dask.distributed": "distributed"}


def python_blocks(page: Path) -> list[str]:
    """The page's python code blocks, in order."""
    text = page.read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def imported_modules(code: str) -> set[str]:
    """The installed top-level modules that ``code`` needs."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return {name.split(".")[0] for name in names} | {PROVIDED_BY[name] for name in names & set(PROVIDED_BY)}


def page_name(page: Path) -> str:
    return page.relative_to(REPO_ROOT).as_posix()


EXAMPLES = [(page_name(page), k, code) for page in PAGES for k, code in enumerate(python_blocks(page), start=1)]


@pytest.mark.parametrize("page", sorted(EXPECTED_EXAMPLES))
def test_page_has_its_examples(page):
    found = sum(1 for name, _, _ in EXAMPLES if name == page)
    expected = EXPECTED_EXAMPLES[page]
    assert found >= expected, f"expected {expected} python examples in {page}, found {found}"


def test_every_page_is_checked():
    # A new guide page with examples is listed above, so that losing them later fails.
    pages = {name for name, _, _ in EXAMPLES if name.startswith("docs/guide/")}
    assert pages <= set(EXPECTED_EXAMPLES), f"list {sorted(pages - set(EXPECTED_EXAMPLES))} in EXPECTED_EXAMPLES"


def test_the_readme_names_every_choice():
    """The README's options in brief list every name each option takes (the docs' tables are generated)."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    choices = (*HIDDEN_ACTIVATIONS, *OUTPUTS, *LOSSES, *OPTIMIZER_OPTIONS, *INITS)
    assert [name for name in choices if f'"{name}"' not in text] == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "page, code",
    [(page, code) for page, _, code in EXAMPLES],
    ids=[f"{page.removesuffix('.md').replace('/', '-')}-{k}" for page, k, _ in EXAMPLES],
)
def test_example_runs(page, code, tmp_path, request):
    missing = sorted(name for name in imported_modules(code) if importlib.util.find_spec(name) is None)
    if missing:
        reason = f'needs {", ".join(missing)} (pip install "fastbp[dask]")'
        if os.environ.get("CI"):
            pytest.fail(reason + ": CI must run every documented example")
        pytest.skip(reason)
    assert "shared/data" not in code, "examples use bundled or downloadable data, not the test data directory"
    cache = tmp_path / "data-cache"
    cache.mkdir()
    if "wheat" in code:
        wheat = request.getfixturevalue("shared_data") / "wheat-seeds.csv"
        shutil.copy(wheat, tmp_path / "wheat-seeds.csv")
        shutil.copy(wheat, cache / "wheat-seeds.csv")
    long = "load_fashion_mnist" in code
    if long:  # the cache holds a copy of the shared Fashion-MNIST, as a download would leave it
        shutil.copytree(request.getfixturevalue("shared_data") / "fashion-mnist", cache / "fashion-mnist")
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    # The fastbp under test, whether installed or imported from a checkout.
    package_root = str(Path(fastbp.__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "FASTBP_DATA_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=LONG_TIMEOUT if long else TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, (
        f"the example from {page} failed:\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )
