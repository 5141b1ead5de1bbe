"""Incomplete installs work and say what they cost.

A read-only install without a writable home (a container image, a shared
site-packages): the Cython backend needs no cache at all, and the Numba backend
compiles in memory after one warning.  An install whose Cython extension could not
be built: the build succeeds with a warning, and the first ``backend="auto"`` of a
process warns once.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastbp
from fastbp import _backends
from fastbp._backends import InstallWarning

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The installed package, with its compiled extension.
PACKAGE = Path(fastbp.__file__).resolve().parent

#: Trains the toy network twice on the backend named by argv[1], saves the model and prints, as JSON, where
#: fastbp was imported from, the predictions, every InstallWarning given and whether Numba was imported.
TRAIN_TWICE = """
import json, sys, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastbp
    from fastbp._backends import InstallWarning
    X, y = fastbp.data.tutorial_toy()
    for _ in range(2):
        model = fastbp.train(X, y, hidden=2, epochs=1, seed=1, init="tutorial", backend=sys.argv[1])
    model.save("model.npz")
print(json.dumps({
    "file": fastbp.__file__,
    "predictions": model.predict(X).tolist(),
    "warnings": [str(w.message) for w in caught if issubclass(w.category, InstallWarning)],
    "numba": "numba" in sys.modules,
}))
"""


def _unprivileged() -> list[str]:
    """The command prefix under which a process cannot write where permissions forbid it: none for a user;
    for root, who writes anywhere, a user namespace (``unshare --user``), where root's files are out of its
    reach but their owner's permission bits."""
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--user", "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root, which ignores permissions, and unshare --user is not available")
    return [unshare, "--user"]


def _set_writable(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture
def read_only_install(tmp_path):
    """Run ``python *args`` in a writable folder, with fastbp imported from a read-only copy of the installed
    package (no ``__pycache__``) and a home folder that cannot be written to; returns the finished process."""
    site, home, work = tmp_path / "site", tmp_path / "home", tmp_path / "work"
    shutil.copytree(PACKAGE, site / "fastbp", ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.pyx", "*.pxd"))
    home.mkdir()
    work.mkdir()
    prefix = _unprivileged()
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "FASTBP_NUMBA_CACHE", "PYTHONPATH")
    }
    env.update(HOME=str(home), PYTHONPATH=str(site))
    _set_writable(site, False)
    _set_writable(home, False)

    def run(*args, **extra_env):
        command = [*prefix, sys.executable, *map(str, args)]
        return subprocess.run(command, cwd=work, env={**env, **extra_env}, capture_output=True, text=True, timeout=600)

    run.site, run.work = site, work
    yield run
    _set_writable(site, True)
    _set_writable(home, True)


def _trained_twice(run, backend: str) -> dict:
    done = run("-c", TRAIN_TWICE, backend)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert Path(result["file"]).is_relative_to(run.site)
    return result


@pytest.mark.slow
def test_a_read_only_install_trains_and_predicts_with_cython_without_any_cache(read_only_install):
    result = _trained_twice(read_only_install, "cython")
    assert result["warnings"] == []
    assert not result["numba"]
    X, y = fastbp.data.tutorial_toy()
    np.savetxt(read_only_install.work / "toy.csv", X, delimiter=",")
    done = read_only_install("-m", "fastbp", "predict", "model.npz", "toy.csv")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert [int(line) for line in done.stdout.split()] == result["predictions"]


@pytest.mark.slow
def test_a_read_only_install_compiles_numba_in_memory_after_one_warning(read_only_install):
    result = _trained_twice(read_only_install, "numba")
    assert set(result["predictions"]) <= set(fastbp.data.tutorial_toy()[1].tolist())
    [message] = result["warnings"]
    assert "cannot be cached on disk" in message
    assert "NUMBA_CACHE_DIR" in message and "FASTBP_NUMBA_CACHE=0" in message
    # Asking for no cache asks for no warning either.
    quiet = (
        "import warnings, fastbp._backends as backends;"
        "warnings.simplefilter('error', backends.InstallWarning);"
        "backends.get_backend('numba')"
    )
    done = read_only_install("-c", quiet, FASTBP_NUMBA_CACHE="0")
    assert done.returncode == 0, done.stderr


def test_auto_without_the_extension_warns_once_with_the_cost_and_the_fix(monkeypatch):
    monkeypatch.setitem(_backends.BACKENDS, "cython", "fastbp._kernels_not_built")
    monkeypatch.setattr(_backends, "_WARNED", set())
    X, y = fastbp.data.tutorial_toy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            assert fastbp.train(X, y, epochs=1).backend == "numba"
    [message] = [str(w.message) for w in caught if w.category is InstallWarning and "'auto'" in str(w.message)]
    for phrase in ("fastbp._kernels_not_built is missing", "'numba'", "10-17 s", "C compiler", "reinstall"):
        assert phrase in message


def test_auto_with_the_extension_warns_nothing(monkeypatch):
    monkeypatch.setattr(_backends, "_WARNED", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error", InstallWarning)
        assert _backends.get_backend("auto").name == "cython"


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="only the Unix compilers read CC")
def test_a_build_without_a_c_compiler_succeeds_and_says_what_it_costs(tmp_path):
    if not (REPO_ROOT / "setup.py").is_file():
        pytest.skip("needs the source checkout")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source)
    # The generated C sources come along, with their times, so that Cython has nothing to redo.
    shutil.copytree(REPO_ROOT / "fastbp", source / "fastbp", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    command = [
        sys.executable,
        "setup.py",
        "build_ext",
        "--build-lib",
        tmp_path / "lib",
        "--build-temp",
        tmp_path / "temp",
    ]
    env = {**os.environ, "CC": "/bin/false"}  # a C compiler that fails on everything
    done = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("without its compiled Cython backend") == 1
    for phrase in ('backend="auto"', "Numba", "10-17 s", "C compiler", "reinstall fastbp"):
        assert phrase in done.stderr
    assert not list(tmp_path.glob("lib/**/*.so"))
