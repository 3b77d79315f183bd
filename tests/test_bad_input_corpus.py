"""A corpus of hostile input: corrupt weights (even with a matching manifest), ids beyond int64,
header-only files, pointless hyper-parameters, unreadable files. Each ends in exactly one
``error: ...`` line and status 1, never a traceback nor a silently wrong result."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import copy_dataset, dataset_dir
from whyrec.cli import app

runner = CliRunner()


def one_error(args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    err = result.stderr.strip().splitlines()
    err = [ln for ln in err if not ln.startswith("note: ")]
    assert len(err) == 1 and err[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return err[0]


copy_of = copy_dataset


def rewrite_line(path: Path, lineno: int, new: str, encoding: str = "latin-1") -> None:
    lines = path.read_text(encoding=encoding).splitlines(keepends=True)
    lines[lineno - 1] = new + "\n"
    path.write_text("".join(lines), encoding=encoding)


# --------------------------------------------------------------------------------------------- #
# corrupt weights, with a manifest that matches them
# --------------------------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def good_run(tiny_run):
    return tiny_run


def _absurd_length(raw: bytes) -> bytes:
    return struct.pack("<Q", 2**62) + raw[8:]


def _not_json(raw: bytes) -> bytes:
    n = struct.unpack("<Q", raw[:8])[0]
    return raw[:8] + b"\xff" * n + raw[8 + n:]


def _tensor_beyond_end(raw: bytes) -> bytes:  # a valid header, the data cut short
    n = struct.unpack("<Q", raw[:8])[0]
    return raw[: 8 + n + 16]


CORRUPTIONS = {
    "zero-bytes": lambda raw: b"",
    "truncated-header": lambda raw: raw[:5],
    "truncated-half": lambda raw: raw[: len(raw) // 2],
    "absurd-header-length": _absurd_length,
    "header-not-json": _not_json,
    "data-cut-short": _tensor_beyond_end,
}


@pytest.fixture(params=sorted(CORRUPTIONS))
def corrupt_run(request, good_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    weights = run / "weights.safetensors"
    weights.write_bytes(CORRUPTIONS[request.param](weights.read_bytes()))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["weights.safetensors"] = hashlib.sha256(weights.read_bytes()).hexdigest()  # it "matches"
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.mark.parametrize("command", ["evaluate", "recommend", "explain", "serve"])
def test_corrupt_weights_one_line_in_every_command(corrupt_run, command):
    args = {"evaluate": ["evaluate", corrupt_run],
            "recommend": ["recommend", corrupt_run, "--user", "1"],
            "explain": ["explain", corrupt_run, "--user", "1", "--item", "50", "--method", "history"],
            "serve": ["serve", corrupt_run, "--port", "0"]}[command]
    msg = one_error(args)
    assert "weights.safetensors" in msg and "not a valid safetensors file" in msg, msg


def test_weights_file_replaced_by_a_folder(good_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    (run / "weights.safetensors").unlink()
    (run / "weights.safetensors").mkdir()
    assert "weights.safetensors" in one_error(["evaluate", run])


# --------------------------------------------------------------------------------------------- #
# ids beyond int64 (and beyond any index)
# --------------------------------------------------------------------------------------------- #
HUGE = "9" * 25


def info(dataset: str, folder: Path) -> str:
    return one_error(["data", "info", "--dataset", dataset, "--data-dir", folder])


def test_gowalla_id_beyond_int64_names_file_and_line(tmp_path):
    d = copy_of("gowalla", tmp_path)
    rewrite_line(d / "train.txt", 3, f"2 {HUGE} 5", encoding="ascii")
    msg = info("gowalla", d)
    assert "train.txt:3:" in msg and "out of range" in msg


def test_gowalla_index_far_beyond_the_file_is_refused(tmp_path):
    d = copy_of("gowalla", tmp_path)
    rewrite_line(d / "test.txt", 7, "6 1000000000000", encoding="ascii")  # fits int64, would size arrays
    msg = info("gowalla", d)
    assert "test.txt:7:" in msg and "out of range" in msg


@pytest.mark.parametrize("dataset, folder, file, lineno, line", [
    ("ml-100k", "ml-100k", "u.data", 5, f"{HUGE}\t346\t1\t886397596"),
    ("ml-1m", "ml-1m-sample", "ratings.dat", 4, f"1::{HUGE}::4::978300760"),
    ("ml-latest-small", "ml-latest-small", "ratings.csv", 9, f"1,{HUGE},4.0,964982703"),
    ("ml-latest-small", "ml-latest-small", "ratings.csv", 12, f"{2**63},1,4.0,964982703"),
])
def test_movielens_id_beyond_int64_names_file_and_line(tmp_path, dataset, folder, file, lineno, line):
    d = copy_of(folder, tmp_path)
    rewrite_line(d / file, lineno, line)
    msg = info(dataset, d)
    assert f"{file}:{lineno}:" in msg and "out of range" in msg, msg


def test_large_but_valid_int64_id_is_kept_exactly(tmp_path):
    d = copy_of("ml-latest-small", tmp_path)
    big = 2**63 - 1  # not representable as float64: must not be rounded
    rewrite_line(d / "ratings.csv", 2, f"{big},1,4.0,964982703")
    from whyrec.data import load_dataset

    data = load_dataset("ml-latest-small", d)
    assert big in set(int(u) for u in data.user_ids)


# --------------------------------------------------------------------------------------------- #
# header-only rating files
# --------------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("dataset, folder, file", [
    ("ml-latest-small", "ml-latest-small", "ratings.csv"),
    ("lastfm-kg", "lastfm-kg", "user_artists.dat"),
])
def test_header_only_rating_file_is_not_a_dataset(tmp_path, dataset, folder, file):
    d = copy_of(folder, tmp_path)
    header = (d / file).read_text(encoding="latin-1").splitlines()[0]
    (d / file).write_text(header + "\n")
    msg = info(dataset, d)
    assert file in msg and "no records" in msg, msg


# --------------------------------------------------------------------------------------------- #
# pointless hyper-parameters: refused before any work
# --------------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("flag, value", [
    ("--epochs", "0"), ("--epochs", "-3"), ("--lr", "inf"), ("--lr", "nan"), ("--lr", "0"), ("--lr", "-0.1"),
    ("--reg", "nan"), ("--batch-size", "0"), ("--eval-every", "0"),
])
def test_pointless_hyper_parameters_refused_before_any_work(tmp_path, flag, value):
    out = tmp_path / "run"
    msg = one_error(["train", "--dataset", "ml-100k", "--data-dir", dataset_dir("ml-100k"), "--out", out,
                     flag, value, "--no-progress"])
    assert flag in msg, msg
    assert not out.exists()


def test_train_config_refuses_them_too():
    from whyrec.train.loop import TrainConfig

    for bad in ({"epochs": 0}, {"lr": float("inf")}, {"lr": float("nan")}, {"lr": 0.0}, {"batch_size": -1}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


# --------------------------------------------------------------------------------------------- #
# unreadable files. The tests run as root, for whom chmod 000 changes nothing, so permission
# denied is simulated by making the read raise PermissionError exactly as the OS would; a folder
# where a file is expected is real.
# --------------------------------------------------------------------------------------------- #
def test_permission_denied_on_a_data_file(tmp_path, monkeypatch):
    d = copy_of("ml-100k", tmp_path)
    target = d / "u.data"
    real = Path.read_bytes

    def read_bytes(self):
        if self == target:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    msg = info("ml-100k", d)
    assert str(target) in msg and "permission denied" in msg.lower()


def test_permission_denied_on_a_run_file(good_run, tmp_path, monkeypatch):
    import builtins

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    target = str(run / "items.json")
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if str(file) == target:
            raise PermissionError(13, "Permission denied", target)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    msg = one_error(["recommend", run, "--user", "1"])
    assert target in msg and "permission denied" in msg.lower()


def test_folder_where_a_data_file_is_expected(tmp_path):
    d = copy_of("ml-100k", tmp_path)
    (d / "u.item").unlink()
    (d / "u.item").mkdir()
    assert "u.item" in info("ml-100k", d)
