"""Shared fixtures: the backends every test runs over, and the shared data sets."""

import os
from pathlib import Path

import pytest

import fastbp

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=fastbp.available_backends())
def backend(request):
    """Every backend that imports here, the reference included."""
    return request.param


@pytest.fixture(params=[name for name in fastbp.available_backends() if name != "reference"])
def compiled_backend(request):
    """Every compiled backend that imports here."""
    return request.param


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared data sets: ``$FASTBP_SHARED_DATA`` or ``../shared/data``."""
    path = Path(os.environ.get("FASTBP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not (path / "wheat-seeds.csv").is_file():
        reason = f"shared data not found at {path} (set FASTBP_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(reason + ": CI must run the data tests")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def wheat(shared_data):
    """The wheat seeds features, min-max normalised, and their labels as strings."""
    X, y = fastbp.datasets.load_wheat_seeds(path=shared_data / "wheat-seeds.csv")
    return fastbp.data.minmax_normalize(X), y
