"""Shared fixtures: the real datasets in ../shared/datasets (read-only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("WHYREC_DATASETS", ROOT.parent / "shared" / "datasets"))


def dataset_dir(name: str) -> Path:
    path = DATASETS / name
    if not path.is_dir():
        pytest.fail(f"real dataset folder {path} is missing (set WHYREC_DATASETS)")
    return path


@pytest.fixture(scope="session")
def ml100k():
    from whyrec.data import load_dataset

    return load_dataset("ml-100k", dataset_dir("ml-100k"))


@pytest.fixture(scope="session")
def ml1m():
    from whyrec.data import load_dataset

    return load_dataset("ml-1m", dataset_dir("ml-1m-sample"))


@pytest.fixture(scope="session")
def gowalla():
    from whyrec.data import load_dataset

    return load_dataset("gowalla", dataset_dir("gowalla"))


@pytest.fixture(scope="session")
def lastfm():
    from whyrec.data import load_dataset

    return load_dataset("lastfm-kg", dataset_dir("lastfm-kg"))


@pytest.fixture(scope="session")
def mlsmall():
    from whyrec.data import load_dataset

    return load_dataset("ml-latest-small", dataset_dir("ml-latest-small"))
