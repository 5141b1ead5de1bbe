"""The README's guide to threads, processes and clusters runs as written.

Each ``python`` block of the section "One core, all cores, a cluster" is saved as a
script and run in a fresh process (the Dask example starts worker processes that
import it again), in a temporary directory, with the fastbp these tests import.  A
block whose imports are missing (Dask, ``distributed``) is skipped with a reason, but
fails under CI (``$CI`` set), which must run them all.
"""

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastbp

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## One core, all cores, a cluster"
#: Seconds one example may take: the Dask one starts a local cluster of two worker processes.
TIMEOUT = 120


def guide_blocks() -> list[str]:
    """The python code blocks of the README's guide section, in order."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end >= 0 else len(text)]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)


#: Modules that import another distribution's: ``dask.distributed`` is ``distributed``'s.
PROVIDED_BY = {"dask.distributed": "distributed"}


def imported_modules(code: str) -> set[str]:
    """The installed top-level modules that ``code`` needs."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return {name.split(".")[0] for name in names} | {PROVIDED_BY[name] for name in names & set(PROVIDED_BY)}


BLOCKS = guide_blocks()


def test_guide_has_its_examples():
    # One core, every core, the Dask cluster, and streaming from a file and from a Dask array.
    assert len(BLOCKS) >= 5, f"expected the guide's examples under {SECTION!r} in README.md, found {len(BLOCKS)}"


@pytest.mark.parametrize("code", BLOCKS, ids=[f"example{k + 1}" for k in range(len(BLOCKS))])
def test_guide_example_runs(code, tmp_path):
    missing = sorted(name for name in imported_modules(code) if importlib.util.find_spec(name) is None)
    if missing:
        reason = f'needs {", ".join(missing)} (pip install "fastbp[dask]")'
        if os.environ.get("CI"):
            pytest.fail(reason + ": CI must run every README example")
        pytest.skip(reason)
    assert "shared/data" not in code, "README examples use bundled data, not the test data directory"
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    # The fastbp under test, whether installed or imported from a checkout.
    package_root = str(Path(fastbp.__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env={**os.environ, "PYTHONPATH": path},
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, f"the example failed:\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
