"""``fastbp`` and ``python -m fastbp``: the main job (``fastbp demo``, the default command) prints the tutorial's
figures and a cross-validation."""

import shutil
import subprocess
import sys
import sysconfig

import pytest

from fastbp import _backends
from fastbp.__main__ import main


def test_main_job_prints_the_toy_epochs_and_wine_cross_validation(capsys):
    assert main(["--skip-reference"]) == 0
    out = capsys.readouterr().out
    assert ">epoch=0, lrate=0.500, error=6.350" in out
    assert ">epoch=19, lrate=0.500, error=1.132" in out
    assert "predicts 10 of 10 rows correctly" in out
    assert "scikit-learn's wine data (178 rows, 13 features, 3 classes)" in out
    assert "mean accuracy: 98.286% (Zero Rule baseline: 40.571%)" in out
    assert "reference" not in out


@pytest.mark.slow
def test_main_job_times_the_reference_on_the_same_folds(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "reference (pure Python): " in out and ", same scores" in out
    assert "speed-up over the reference: " in out


@pytest.mark.slow
def test_module_runs_as_a_script(tmp_path):
    command = [sys.executable, "-m", "fastbp", "--version"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.startswith("fastbp ")


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--skip-reference"], ["demo", "--skip-reference"]])
def test_console_script_runs_the_main_job_with_no_command_or_as_demo(tmp_path, args):
    script = shutil.which("fastbp", path=sysconfig.get_path("scripts"))
    assert script is not None, "the fastbp console script is not installed: pip install -e ."
    done = subprocess.run([script, *args], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert ">epoch=19, lrate=0.500, error=1.132" in done.stdout
    assert "mean accuracy: 98.286% (Zero Rule baseline: 40.571%)" in done.stdout
    assert done.stderr == ""


@pytest.mark.parametrize(
    "args", [["--backend", "numba", "demo", "--skip-reference"], ["demo", "--backend", "numba", "--skip-reference"]]
)
def test_demo_takes_its_options_before_or_after_the_command(capsys, args):
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "numba backend: " in out and "reference" not in out


def test_main_job_says_when_it_falls_back_from_a_missing_extension(monkeypatch, capsys):
    monkeypatch.setitem(_backends.BACKENDS, "cython", "fastbp._kernels_not_built")
    monkeypatch.setattr(_backends, "_WARNED", set())
    assert main(["--skip-reference"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("fastbp: warning: the 'cython' backend is not available: the compiled extension")
    assert err.count("\n") == 1 and "uses the 'numba' backend instead" in err
    assert "numba backend: " in out
