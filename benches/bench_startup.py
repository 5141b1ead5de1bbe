"""Start-up: a fresh Python process that imports fastbp and trains the tutorial's toy
network (10 rows, 2-2-2, 20 epochs), timed from launch to exit.

Cython is compiled at install time.  Numba compiles the kernels on first use and
caches them on disk: "warm" runs with that cache already filled (by a run before the
timing), "cold" with ``NUMBA_CACHE_DIR`` pointing at a fresh empty directory each
round, so every kernel it needs is compiled.  The process runs in an empty directory,
so it imports the installed fastbp, not a checkout in the working directory.
"""

import itertools
import os
import subprocess
import sys

import pytest

import fastbp

SCRIPT = """
import sys
import fastbp
X, y = fastbp.data.tutorial_toy()
model = fastbp.train(X, y, hidden=2, epochs=int(sys.argv[2]), lr=0.5, seed=1, init="tutorial", backend=sys.argv[1])
assert model.backend == sys.argv[1], model.backend
assert (model.predict(X) == y).all(), model.predict(X)
"""

CASES = [
    pytest.param("cython", "installed", id="cython"),
    pytest.param("numba", "warm", id="numba-warm"),
    pytest.param("numba", "cold", id="numba-cold"),
]


def start(backend, epochs, cwd, cache_dir=None):
    env = {**os.environ, "FASTBP_NUMBA_CACHE": "1"}
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, backend, str(epochs)], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"the new process failed:\n{done.stderr}"


@pytest.mark.benchmark(group="startup")
@pytest.mark.parametrize(("backend", "cache"), CASES)
def bench_startup(timed, mode, size, tmp_path, backend, cache):
    if backend not in fastbp.available_backends():
        pytest.skip(f"the {backend} backend is not available here")
    if cache == "cold" and mode == "smoke":
        pytest.skip("compiling every kernel takes seconds: the cold start runs only when timed")
    work = tmp_path / "cwd"
    work.mkdir()
    if cache == "warm" and mode != "smoke":
        start(backend, size.epochs, work)  # fill the cache (the smoke run does not time, so it need not)
    rounds = itertools.count()

    def arguments():
        if cache != "cold":
            return (backend, size.epochs, work), {}
        cache_dir = tmp_path / f"numba-cache-{next(rounds)}"  # empty: Numba compiles every kernel it needs
        cache_dir.mkdir()
        return (backend, size.epochs, work, cache_dir), {}

    timed(
        start,
        setup=arguments,
        samples=size.rows * size.epochs,
        slow=cache == "cold",
        library="fastbp",
        implementation=f"fastbp {backend} ({cache})" if backend == "numba" else f"fastbp {backend}",
        path="new process: import fastbp, train the toy network",
        cache=cache,
    )
