"""Bad data files end in one line naming the file (and line) and what was expected; exit 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import copy_dataset, dataset_dir
from whyrec.cli import app

runner = CliRunner()


copy_of = copy_dataset


def info(dataset: str, folder: Path):
    result = runner.invoke(app, ["data", "info", "--dataset", dataset, "--data-dir", str(folder)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return err[0]


def rewrite_line(path: Path, lineno: int, new: str, encoding: str = "latin-1") -> None:
    lines = path.read_text(encoding=encoding).splitlines(keepends=True)
    lines[lineno - 1] = new + "\n"
    path.write_text("".join(lines), encoding=encoding)


def test_malformed_line_named_with_number(tmp_path):
    d = copy_of("ml-100k", tmp_path)
    rewrite_line(d / "u.data", 5, "166\t346\t1")
    msg = info("ml-100k", d)
    assert "u.data:5:" in msg and "expected 4 fields" in msg


def test_wrong_separator(tmp_path):
    d = copy_of("ml-1m-sample", tmp_path)
    text = (d / "ratings.dat").read_text()
    (d / "ratings.dat").write_text(text.replace("::", ","))
    msg = info("ml-1m", d)
    assert "ratings.dat:1:" in msg and "separated by '::'" in msg


def test_non_numeric_id(tmp_path):
    d = copy_of("ml-100k", tmp_path)
    rewrite_line(d / "u.data", 77, "abc\t242\t3\t881250949")
    msg = info("ml-100k", d)
    assert "u.data:77:" in msg and "field 'user' is not an integer: 'abc'" in msg


def test_non_numeric_id_in_csv(tmp_path):
    d = copy_of("ml-latest-small", tmp_path)
    rewrite_line(d / "ratings.csv", 10, "1,x47,5.0,964983815", "utf-8")
    msg = info("ml-latest-small", d)
    assert "ratings.csv:10:" in msg and "movieId" in msg and "'x47'" in msg


def test_truncated_file(tmp_path):
    d = copy_of("ml-1m-sample", tmp_path)
    raw = (d / "ratings.dat").read_bytes()
    (d / "ratings.dat").write_bytes(raw[: len(raw) // 2])  # cut mid-line
    msg = info("ml-1m", d)
    assert "ratings.dat:" in msg and ("expected 4 fields" in msg or "is not" in msg)


def test_empty_file(tmp_path):
    d = copy_of("ml-100k", tmp_path)
    (d / "u.user").write_text("")
    msg = info("ml-100k", d)
    assert "u.user" in msg and "file is empty" in msg


def test_missing_file(tmp_path):
    d = copy_of("lastfm-kg", tmp_path)
    (d / "kg.txt").unlink()
    msg = info("lastfm-kg", d)
    assert "missing file kg.txt" in msg


def test_folder_of_the_wrong_dataset():
    msg = info("gowalla", dataset_dir("ml-100k"))
    assert "does not look like gowalla" in msg and "u.data" in msg


def test_missing_folder(tmp_path):
    msg = info("ml-100k", tmp_path / "nope")
    assert "data folder does not exist" in msg


def test_user_left_with_no_interactions(tmp_path):
    d = copy_of("gowalla", tmp_path)
    rewrite_line(d / "train.txt", 3, "2", "ascii")
    msg = info("gowalla", d)
    assert "train.txt:3:" in msg and "user 2 has no training interactions" in msg


def test_rating_out_of_range(tmp_path):
    d = copy_of("ml-100k", tmp_path)
    rewrite_line(d / "u.data", 9, "253\t465\t7\t891628467")
    msg = info("ml-100k", d)
    assert "u.data:9:" in msg and "rating 7.0 outside 1..5" in msg


def test_bad_header(tmp_path):
    d = copy_of("lastfm-kg", tmp_path)
    rewrite_line(d / "user_artists.dat", 1, "user\tartist\tplays", "utf-8")
    msg = info("lastfm-kg", d)
    assert "user_artists.dat:1:" in msg and "header" in msg


def test_unknown_dataset_lists_the_valid_ones():
    result = runner.invoke(app, ["data", "info", "--dataset", "netflix", "--data-dir", "."])
    assert result.exit_code == 1
    assert "unknown dataset 'netflix'" in result.stderr and "ml-100k" in result.stderr


@pytest.mark.parametrize("name,folder", [("ml-100k", "ml-100k"), ("gowalla", "gowalla"), ("lastfm-kg", "lastfm-kg")])
def test_json_keys(name, folder):
    import json

    result = runner.invoke(app, ["data", "info", "--dataset", name, "--data-dir", str(dataset_dir(folder)), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    for key in ("n_users", "n_items", "n_interactions", "user_features", "item_features", "n_entities", "n_triples"):
        assert key in info
    if name == "ml-100k":
        assert info["n_interactions"] == 100_000 and info["user_features"] == ["gender", "age", "occupation", "zip_region"]
    if name == "lastfm-kg":
        assert info["n_triples"] == 15_518


def test_failed_train_leaves_no_half_written_run_folder(tmp_path):
    """Last.fm has no user features: the error names the fix, and the folder the command would
    have created does not exist afterwards (a folder that was already there is left alone)."""
    out = tmp_path / "run"
    args = ["train", "--dataset", "lastfm-kg", "--data-dir", str(dataset_dir("lastfm-kg")), "--model",
            "lightgcn-features", "--features", "user", "--epochs", "1", "--out"]
    res = runner.invoke(app, args + [str(out)])
    assert res.exit_code == 1 and "no user features" in res.stderr
    assert not out.exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    res = runner.invoke(app, args + [str(existing)])
    assert res.exit_code == 1 and existing.is_dir()
