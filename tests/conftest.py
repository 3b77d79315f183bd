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


def interrupt_evaluation(monkeypatch, at: int):
    """Make the trainer's ``at``-th validation evaluation raise ``KeyboardInterrupt`` (Ctrl-C in the
    middle of a run, after the training state of the evaluations before was written). Returns a
    function that puts the real evaluation back."""
    import whyrec.train.loop as loop

    real, calls = loop._run_eval, []

    def interrupted(*a, **kw):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(loop, "_run_eval", interrupted)
    return lambda: monkeypatch.setattr(loop, "_run_eval", real)


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


def copy_dataset(name: str, tmp_path: Path) -> Path:
    """A writable copy of a real dataset folder (to damage in a test)."""
    import shutil

    dst = tmp_path / name
    shutil.copytree(dataset_dir(name), dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A one-epoch, 8-dimensional LightGCN run folder on ML-100K (for tests of what surrounds a run)."""
    from typer.testing import CliRunner

    from whyrec.cli import app

    out = tmp_path_factory.mktemp("tiny") / "run"
    result = CliRunner().invoke(app, ["train", "--dataset", "ml-100k", "--data-dir", str(dataset_dir("ml-100k")),
                                      "--out", str(out), "--epochs", "1", "--dim", "8", "--eval-every", "1",
                                      "--no-progress", "--threads", "1"])
    assert result.exit_code == 0, result.output
    return out


def cli_ok(args):
    """Run the CLI in-process; it must succeed."""
    from typer.testing import CliRunner

    from whyrec.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return result


def cli_fails(args, *needles, single: bool = True) -> str:
    """Run the CLI in-process; it must end in one ``error: …`` line (the only line on stderr unless
    ``single=False``, which allows ``note:`` lines before it) holding every needle, status 1."""
    from typer.testing import CliRunner

    from whyrec.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    if single:
        assert len(lines) == 1, result.stderr
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for n in needles:
        assert n in lines[-1], lines[-1]
    return lines[-1]
