"""Benchmark fixtures: the wheat seeds experiment's data, found like the tests find it."""

import os
from pathlib import Path

import pytest

import fastbp

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def wheat():
    path = Path(os.environ.get("FASTBP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "wheat-seeds.csv"
    if not path.is_file():
        pytest.skip(f"wheat-seeds.csv not found at {path} (set FASTBP_SHARED_DATA)")
    X, y = fastbp.datasets.load_wheat_seeds(path=path)
    return fastbp.data.minmax_normalize(X), y
