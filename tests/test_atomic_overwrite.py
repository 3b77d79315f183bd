"""Nothing the user saved is lost: `whyrec train --overwrite` builds the new run beside the old one
and swaps it in only when complete; a retrain that fails (bad data, a failing write, Ctrl-C) leaves
the old run byte-identical. Files whyrec writes go through a temporary file and ``os.replace``."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import dataset_dir, interrupt_evaluation
from whyrec.cli import app

runner = CliRunner()
ML100K = dataset_dir("ml-100k")


def train_args(out, data_dir=ML100K, *extra):
    return ["train", "--dataset", "ml-100k", "--data-dir", str(data_dir), "--out", str(out), "--epochs", "2",
            "--eval-every", "1", "--dim", "8", "--no-progress", "--threads", "1", *extra]


def checksums(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


@pytest.fixture
def old_run(tmp_path):
    out = tmp_path / "runs" / "r"
    result = runner.invoke(app, train_args(out))
    assert result.exit_code == 0, result.output
    return out


def test_failing_retrain_on_bad_data_leaves_the_old_run_byte_identical(old_run, tmp_path):
    before, around = checksums(old_run), siblings(old_run)
    bad = tmp_path / "bad"
    shutil.copytree(ML100K, bad)
    (bad / "u.data").chmod(0o644)
    (bad / "u.data").write_text("1\t2\n")
    result = runner.invoke(app, train_args(old_run, bad, "--overwrite"))
    assert result.exit_code == 1 and result.stderr.startswith("error: "), result.output
    assert checksums(old_run) == before
    assert siblings(old_run) == around  # no temporary folder left behind


def test_interrupted_retrain_leaves_the_old_run_byte_identical(old_run, monkeypatch):
    before, around = checksums(old_run), siblings(old_run)
    interrupt_evaluation(monkeypatch, 2)  # Ctrl-C after the first evaluation (a training state exists)
    result = runner.invoke(app, train_args(old_run, ML100K, "--overwrite", "--dim", "4"))
    assert result.exit_code != 0
    assert "still holds the previous run" in result.stderr
    assert checksums(old_run) == before
    assert siblings(old_run) == around


def test_retrain_failing_while_writing_leaves_the_old_run(old_run, monkeypatch):
    import whyrec.run as run_module

    before = checksums(old_run)

    def disk_full(*a, **kw):
        raise OSError(28, "No space left on device", "split.npz")

    monkeypatch.setattr(run_module, "save_split_pairs", disk_full)
    result = runner.invoke(app, train_args(old_run, ML100K, "--overwrite"))
    assert result.exit_code == 1 and "no space left on device" in result.stderr.lower(), result.output
    assert checksums(old_run) == before
    assert siblings(old_run) == ["r"]


def test_successful_overwrite_replaces_the_run_whole(old_run):
    import json

    before = checksums(old_run)
    result = runner.invoke(app, train_args(old_run, ML100K, "--overwrite", "--dim", "4"))
    assert result.exit_code == 0, result.output
    assert checksums(old_run) != before
    assert json.loads((old_run / "config.json").read_text())["model_config"]["dim"] == 4
    assert siblings(old_run) == ["r"]
    ok = runner.invoke(app, ["evaluate", str(old_run)])
    assert ok.exit_code == 0, ok.output


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    from whyrec.run import atomic_path, atomic_write_text

    target = tmp_path / "why.png"
    target.write_bytes(b"old figure")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".png" and tmp.parent == tmp_path
            tmp.write_bytes(b"half a fig")
            raise RuntimeError("plot failed")
    assert target.read_bytes() == b"old figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["why.png"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_explain_figure_is_replaced_only_by_a_complete_one(old_run, tmp_path, monkeypatch):
    import whyrec.explain.explanation as explanation  # history draws the generic figure

    fig = tmp_path / "why.png"
    fig.write_bytes(b"the user's figure")

    def broken_plot(result, path):
        Path(path).write_bytes(b"partial")
        raise ValueError("cannot draw this")

    monkeypatch.setattr(explanation, "plot", broken_plot)
    result = runner.invoke(app, ["explain", str(old_run), "--user", "1", "--item", "50", "--method", "history",
                                 "--figure", str(fig)])
    assert result.exit_code == 1 and "cannot draw this" in result.stderr
    assert fig.read_bytes() == b"the user's figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["why.png", "runs"])
