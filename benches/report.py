"""Run the benchmark suites and print one table of where fastbp stands.

Usage::

    python benches/report.py [--quick] [--stat {median,min,mean}] [pytest args...]

Runs ``pytest benches --benchmark-enable`` in a subprocess (its progress goes to
stderr), then prints to stdout, as Markdown: the run's date, commit and machine, and
per workload (benchmark group) each implementation's time, samples per second and
speed relative to fastbp's fastest backend in that workload, measured side by side in
that one run.  Where fastbp sets itself a target, the table shows the measured ratio next
to it, marked met or missed: informational, never a failure.  A second table gives the
parallel workloads (``bench_parallel.py``) as speed-ups of every core over one thread
or job, with the counts, and a third the lockstep workloads (``bench_lockstep.py``):
many networks trained at once against one at a time on one core, per backend and
against the fastest backend's one-at-a-time time.  The exit status is pytest's (a failed sanity check or a
crash), not the targets'.

``--quick`` runs smaller workloads and fewer rounds (``FASTBP_BENCH_MODE=quick``, see
``benches/conftest.py``); ``--blas-threads 1`` pins BLAS (fastbp's mini-batch kernels,
scikit-learn) and PyTorch to one thread, which keeps mini-batch times steady on a small
machine that other work shares (a multi-threaded BLAS stalls whenever a core is taken);
extra arguments go to pytest, e.g. ``-k W2``, ``-k parallel`` or ``-k lockstep``.  (``--blas-threads``
sets ``OMP_NUM_THREADS``, which is also fastbp's default thread count; the parallel
benchmarks pass their counts explicitly.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from fastbp._backends import is_available
from fastbp._parallel import usable_cores

BENCHES = Path(__file__).resolve().parent
REPO_ROOT = BENCHES.parent
#: Workloads in the order the table lists them.
GROUPS = [
    "W1-wheat-seeds", "W1-wheat-estimator", "W2-digits-online", "W2-digits-batch32", "W2-digits-lbfgs",
    "W2-digits-adam", "W3-mnist-online", "W3-mnist-batch32", "W3-mnist-batch128", "W4-cnn-batch128", "W5-tfidf-sgd",
    "W5-tfidf-adam", "predict", "predict-mnist-shape", "predict-one-row", "startup",
]  # fmt: skip
#: Parallel workloads (bench_parallel.py), in the order their own table lists them: one thread or job
#: against every core, per backend.
PARALLEL_GROUPS = [
    "parallel-predict", "parallel-W3-batch128", "parallel-W3-batch32", "parallel-W4-cnn-batch128", "parallel-cv-wheat",
    "parallel-cv-digits", "parallel-grid-wheat",
]  # fmt: skip
#: Lockstep workloads (bench_lockstep.py), in the order their table lists them: the same networks trained one at a
#: time and in lockstep, per backend.
LOCKSTEP_GROUPS = ["lockstep-wheat-cv", "lockstep-wheat-grid", "lockstep-wheat-grid-tutorial"]
#: The lockstep aim: lockstep's speed-up over one network at a time with the fastest single-network kernel.
LOCKSTEP_AIM = 3.0
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
LIBRARIES = [
    "fastbp", "numpy", "scipy", "numba", "Cython", "scikit-learn", "torch", "tensorflow", "keras", "pytest-benchmark",
]  # fmt: skip
#: The distributions a library installs under: TensorFlow's CPU-only build is ``tensorflow-cpu``.
DISTRIBUTIONS = {"tensorflow": ("tensorflow", "tensorflow-cpu")}


@dataclass(frozen=True)
class Row:
    """One benchmark's result."""

    group: str
    library: str
    implementation: str
    path: str
    dtype: str
    batch_size: int
    cache: str
    samples: int
    seconds: float
    rounds: int
    #: Parallel runs: the backend, how many ``workers`` of which ``parallelism`` ("threads", "jobs"), and
    #: the workload in words (with its size); empty for the others.
    backend: str = ""
    workers: int = 0
    parallelism: str = ""
    workload: str = ""
    #: Lockstep runs: how the ``networks`` were trained ("lockstep" or "one at a time"); empty for the others.
    way: str = ""
    networks: int = 0

    @property
    def rate(self) -> float:
        """Samples per second."""
        return self.samples / self.seconds

    @classmethod
    def from_json(cls, bench: dict, stat: str) -> Row:
        info = bench.get("extra_info", {})
        return cls(
            group=bench.get("group") or "(no group)",
            library=info.get("library", "?"),
            implementation=info.get("implementation", bench["name"]),
            path=info.get("path", ""),
            dtype=info.get("dtype", ""),
            batch_size=int(info.get("batch_size", 0)),
            cache=info.get("cache", ""),
            samples=int(info.get("samples", 0)),
            seconds=float(bench["stats"][stat]),
            rounds=int(bench["stats"]["rounds"]),
            backend=info.get("backend", ""),
            workers=int(info.get("workers", 0)),
            parallelism=info.get("parallelism", ""),
            workload=info.get("workload", ""),
            way=info.get("way", ""),
            networks=int(info.get("networks", 0)),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="smaller workloads and fewer rounds")
    parser.add_argument(
        "--stat", choices=("median", "min", "mean"), default="median", help="which time per benchmark (median)"
    )
    parser.add_argument(
        "--blas-threads", type=int, metavar="N",
        help="threads for BLAS and PyTorch (OPENBLAS/OMP/MKL_NUM_THREADS); default: the libraries' own",
    )  # fmt: skip
    args, pytest_args = parser.parse_known_args(argv)
    mode = "quick" if args.quick else "full"
    if args.blas_threads is not None:
        # Set here too, before numpy loads, so the report's BLAS line shows what the benchmarks ran with.
        for name in THREAD_VARIABLES:
            os.environ[name] = str(args.blas_threads)
    # Other work on the machine takes cores from the parallel runs: say how busy it was before this one.
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="fastbp-bench-") as tmp:
        json_path = Path(tmp) / "benchmarks.json"
        command = [
            sys.executable, "-m", "pytest", str(BENCHES), "--benchmark-enable", f"--benchmark-json={json_path}",
            "-p", "no:cacheprovider", "-q", *pytest_args,
        ]  # fmt: skip
        print("running:", " ".join(command), file=sys.stderr, flush=True)
        env = {**os.environ, "FASTBP_BENCH_MODE": mode}
        # pytest's own output (and pytest-benchmark's tables) go to stderr; stdout gets only the report.
        status = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=sys.stderr).returncode
        if not json_path.is_file():
            print(f"pytest exited with status {status} and wrote no results", file=sys.stderr)
            return status or 1
        results = json.loads(json_path.read_text())
    rows = [Row.from_json(bench, args.stat) for bench in results["benchmarks"]]
    print(report(rows, results.get("datetime"), mode, args.stat, load))
    if status:
        print(f"\npytest exited with status {status}: see its output above", file=sys.stderr)
    return status


def report(rows: list[Row], when: str | None, mode: str, stat: str, load: tuple | None = None) -> str:
    lines = [f"## fastbp benchmarks ({mode} run, {stat} time per benchmark)", ""]
    lines += [f"- {line}" for line in describe_run(when)]
    if load is not None:
        lines.append(f"- load average before the run (1, 5, 15 min): {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}")
    main_table = comparison_table(rows)
    if main_table:
        lines += ["", *main_table]
    parallel = parallel_table(rows)
    if parallel:
        lines += ["", *parallel]
    together = lockstep_table(rows)
    if together:
        lines += ["", *together]
    return "\n".join(lines)


def comparison_table(rows: list[Row]) -> list[str]:
    """Every workload but the parallel ones: each implementation against fastbp's fastest, and the targets."""
    groups = [group for group in GROUPS if any(row.group == group for row in rows)]
    groups += sorted({row.group for row in rows} - set(GROUPS) - set(PARALLEL_GROUPS) - set(LOCKSTEP_GROUPS))
    if not groups:
        return []
    lines = [
        "| workload | implementation | kernels / loop | time | samples/s | vs fastest fastbp | target |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for group in groups:
        members = [row for row in rows if row.group == group]
        ours = [row for row in members if row.library == "fastbp"]
        best = max((row.rate for row in ours), default=None)
        ordered = sorted(ours, key=lambda row: -row.rate) + sorted(
            (row for row in members if row.library != "fastbp"), key=lambda row: -row.rate
        )
        for row in ordered:
            relative = f"{row.rate / best:.3g}x" if best else "-"
            rate = "-" if group == "startup" else f"{row.rate:,.0f}"
            lines.append(
                f"| {group} | {row.implementation} | {row.path} | {format_time(row.seconds)} | {rate} | "
                f"{relative} | {target(row, members)} |"
            )
    lines += [
        "",
        "samples: rows x epochs trained (W1: 168 training rows per fold x epochs x 5 folds), rows predicted, or",
        "for start-up the toy network's 10 rows x 20 epochs (its time is the whole process). 'vs fastest fastbp':",
        "samples/s relative to fastbp's fastest variant in the same workload. fastbp's targets, informational.",
    ]
    return lines


def parallel_table(rows: list[Row]) -> list[str]:
    """The parallel workloads' speed-ups: per workload and backend, one worker against the most measured."""
    usable = usable_cores()
    lines = [
        f"### Parallel speed-ups ({usable} usable cores)",
        "",
        "| workload | backend | one | parallel | time, one | time, parallel | speed-up |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    measured = False
    for group in PARALLEL_GROUPS:
        members = [row for row in rows if row.group == group and row.workers]
        for backend in sorted({row.backend for row in members}):
            runs = sorted((row for row in members if row.backend == backend), key=lambda row: row.workers)
            one, most = runs[0], runs[-1]
            if one.workers != 1 or most.workers == 1:
                continue  # not a pair measured in this run (deselected, or a one-core machine)
            measured = True
            lines.append(
                f"| {most.workload} | {backend} | 1 {one.parallelism.rstrip('s')} | {most.workers} "
                f"{most.parallelism} | {format_time(one.seconds)} | {format_time(most.seconds)} | "
                f"{one.seconds / most.seconds:.2f}x |"
            )
    if not measured:
        return []
    lines += [
        "",
        "speed-up: the one-worker time over the parallel time, both measured in this run on the same work and",
        "data; threads: Model.predict / fastbp.train(n_threads=...); jobs: fastbp.evaluate / search(n_jobs=...),",
        "on threads. The parallel runs give the one-worker run's bits, checked by the benchmarks.",
    ]
    return lines


def lockstep_table(rows: list[Row]) -> list[str]:
    """The lockstep workloads: per workload and backend, one network at a time against all in lockstep, and
    lockstep against the fastest backend's one-at-a-time time (the lockstep aim's measure)."""
    lines = [
        "### Many networks at once (lockstep, one core)",
        "",
        "| workload | networks | backend | one at a time | lockstep | speed-up | vs best single-network kernel |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    measured = False
    for group in LOCKSTEP_GROUPS:
        members = [row for row in rows if row.group == group and row.way]
        alone = {row.backend: row for row in members if row.way == "one at a time"}
        together = {row.backend: row for row in members if row.way == "lockstep"}
        if not alone:
            continue
        fastest = min(alone.values(), key=lambda row: row.seconds)
        for backend in sorted(set(alone) & set(together)):
            one, many = alone[backend], together[backend]
            measured = True
            ratio = fastest.seconds / many.seconds
            verdict = "met" if ratio >= LOCKSTEP_AIM else "missed"
            lines.append(
                f"| {many.workload} | {many.networks} | {backend} | {format_time(one.seconds)} | "
                f"{format_time(many.seconds)} | {one.seconds / many.seconds:.2f}x | {ratio:.2f}x over "
                f"{fastest.backend} one at a time (aim >= {LOCKSTEP_AIM:g}x: {verdict}) |"
            )
    if not measured:
        return []
    lines += [
        "",
        "one at a time: fastbp.train per network (the train_online kernel), then predict and score each fold;",
        "lockstep: fastbp.evaluate (the CV) or fastbp.search (the grid), whose networks train together in the",
        "train_lockstep kernel. Both ways do the same work on one core and give the same scores and weights",
        "(checked by the benchmarks). speed-up: one-at-a-time time over lockstep time, same backend; the last",
        "column divides the fastest backend's one-at-a-time time by this backend's lockstep time (the lockstep aim).",
    ]
    return lines


def target(row: Row, members: list[Row]) -> str:
    """fastbp's target for ``row`` where one applies, with the measured value, met or missed."""
    group = row.group
    if row.library == "hand-written C" and group == "W1-wheat-seeds":
        reference = peer(members, "reference")
        return f"the yardstick: {row.rate / reference.rate:.3g}x reference" if reference else ""
    if row.library != "fastbp":
        return ""
    if group == "W1-wheat-seeds":
        return speedup(row, peer(members, "reference"), 130, "reference")
    if group == "W2-digits-online":
        return speedup(row, peer(members, "scikit-learn"), 60, "scikit-learn batch 1")
    if group == "W3-mnist-online":
        return speedup(row, peer(members, "scikit-learn"), 12, "scikit-learn batch 1")
    if group in ("W3-mnist-batch32", "W3-mnist-batch128"):
        size = group.removeprefix("W3-mnist-batch")
        if row.dtype == "float64":
            return speedup(row, peer(members, "scikit-learn"), 1, f"scikit-learn batch {size}")
        return speedup(row, peer(members, "PyTorch"), 1, f"PyTorch batch {size}")
    if group == "W4-cnn-batch128":
        torch = speedup(row, peer(members, "PyTorch"), 3, "PyTorch eager (aim 4x)")
        return f"{torch}; {speedup(row, peer(members, 'Keras'), 2, 'Keras')}"
    if group == "startup":
        if row.cache == "cold":
            return "none (stated in docs/performance.md)"
        limit = 1.0 if row.cache == "warm" else 0.5  # Cython: "well under" the warm Numba second
        verdict = "met" if row.seconds < limit else "missed"
        return f"< {limit:g} s: {format_time(row.seconds)} {verdict}"
    return ""


def peer(members: list[Row], library: str) -> Row | None:
    return next((row for row in members if row.library == library), None)


def speedup(row: Row, other: Row | None, minimum: float, name: str) -> str:
    if other is None:
        return f">= {minimum:g}x {name}: not measured (not installed, or deselected)"
    ratio = row.rate / other.rate
    return f">= {minimum:g}x {name}: {ratio:.3g}x {'met' if ratio >= minimum else 'missed'}"


def format_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def describe_run(when: str | None) -> list[str]:
    """The date, commit, machine and library versions, one line each."""
    date = when or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [f"date: {date}"]
    commit = _git("rev-parse", "--short", "HEAD")
    if commit:
        dirty = " (with uncommitted changes)" if _git("status", "--porcelain", "--untracked-files=no") else ""
        lines.append(f"commit: {commit}{dirty}")
    cpu, flags = _cpu()
    usable = usable_cores()
    lines.append(f"machine: {cpu}, {os.cpu_count()} cores ({usable} usable), {platform.machine()}{flags}")
    lines.append(f"system: {platform.system()} {platform.release()}, Python {platform.python_version()}")
    lines.append("libraries: " + ", ".join(_versions()))
    blas = _blas()
    if blas:
        lines.append(f"BLAS: {blas}")
    return lines


def _cpu() -> tuple[str, str]:
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    model = model or platform.processor() or "unknown CPU"
    vector = [name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("fma", "FMA")) if flag in flags]
    return model, f", {' '.join(vector)}" if vector else ""


def _versions() -> list[str]:
    versions = []
    for name in LIBRARIES:
        installed = [(each, _version(each)) for each in DISTRIBUTIONS.get(name, (name,))]
        found = [f"{each} {version}" for each, version in installed if version is not None]
        versions.append(", ".join(found) if found else f"{name} ({_why_missing(name)})")
    return versions


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _why_missing(name: str) -> str:
    """What a library that has no installed version means here: pip builds fastbp's Cython backend with Cython
    in an isolated environment it then discards, so the backend can be there without Cython."""
    if name == "Cython" and is_available("cython"):
        return "not installed here; fastbp's Cython backend is built (pip builds it in an isolated environment)"
    return "not installed"


def _blas() -> str:
    """The BLAS libraries numpy and scipy load (fastbp's mini-batch kernels use scipy's)."""
    try:
        import numpy  # noqa: F401
        import scipy.linalg  # noqa: F401
        from threadpoolctl import threadpool_info
    except ImportError:
        return ""
    return "; ".join(
        f"{pool.get('internal_api')} {pool.get('version')} ({pool.get('num_threads')} threads, "
        f"{Path(pool.get('filepath', '')).name})"
        for pool in threadpool_info()
        if pool.get("user_api") == "blas"
    )


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return done.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
