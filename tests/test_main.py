"""``python -m fastbp``: the main job prints the tutorial's figures and a cross-validation."""

import subprocess
import sys

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


def test_main_job_times_the_reference_on_the_same_folds(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "reference (pure Python): " in out and ", same scores" in out
    assert "speed-up over the reference: " in out


def test_module_runs_as_a_script(tmp_path):
    command = [sys.executable, "-m", "fastbp", "--version"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.startswith("fastbp ")


def test_main_job_says_when_it_falls_back_from_a_missing_extension(monkeypatch, capsys):
    monkeypatch.setitem(_backends.BACKENDS, "cython", "fastbp._kernels_not_built")
    assert main(["--skip-reference"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("note: the 'cython' backend is not available: the compiled extension")
    assert "numba backend: " in out
