"""Data-parallel training under torchrun (gloo, 2 CPU processes) against one process on ML-100K: the
same weights to float tolerance with the same global batch and seed, and a run interrupted in one
process resumed by two ends as the uninterrupted one. The sharding arithmetic by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import dataset_dir, interrupt_evaluation
from whyrec.cli import app
from whyrec.train.distributed import DataParallel

pytest.importorskip("torch.distributed")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["train", "--dataset", "ml-100k", "--data-dir", str(dataset_dir("ml-100k")), "--model", "lightgcn",
        "--epochs", "4", "--eval-every", "1", "--batch-size", "4096", "--lr", "0.01", "--seed", "0",
        "--patience", "0", "--threads", "1", "--no-progress"]


def torchrun(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "whyrec",
           *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def one_process(*args) -> None:
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output


def same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "weights.safetensors"), load_file(b / "weights.safetensors")
    assert set(wa) == set(wb)
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5, rtol=0), (k, (wa[k] - wb[k]).abs().max())


def test_shares_of_a_batch_cover_it_once():
    shares = []
    for rank in range(3):
        dp = DataParallel.__new__(DataParallel)
        dp.rank, dp.world = rank, 3
        shares.append([dp.share(lo, hi) for lo, hi in ((0, 10), (10, 12), (12, 13))])
    # 10 rows: 4 + 4 + 2; 2 rows: 1 + 1 + 0; 1 row: 1 + 0 + 0
    assert shares == [[(0, 4), (10, 11), (12, 13)], [(4, 8), (11, 12), (13, 13)], [(8, 10), (12, 12), (13, 13)]]


def test_two_gloo_processes_train_as_one(tmp_path):
    one_process(*ARGS, "--out", tmp_path / "one")
    res = torchrun(*ARGS, "--out", tmp_path / "two")
    assert res.returncode == 0, res.stderr[-3000:]
    same_weights(tmp_path / "one", tmp_path / "two")
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["epochs_trained"] == 4 and two["test"]["recall@20"] == pytest.approx(one["test"]["recall@20"], abs=1e-3)
    assert res.stderr.count("epoch 4/4") == 1  # rank 0 alone reports
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # and writes


def test_a_distributed_resume_ends_as_the_uninterrupted_run(tmp_path, monkeypatch):
    one_process(*ARGS, "--out", tmp_path / "whole")
    interrupt_evaluation(monkeypatch, 3)
    res = CliRunner().invoke(app, [str(a) for a in [*ARGS, "--out", tmp_path / "cut"]])
    assert res.exit_code != 0 and (tmp_path / "cut" / "training_state.pt").is_file()
    res = torchrun(*ARGS, "--out", tmp_path / "cut", "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (tmp_path / "cut" / "training_state.pt").exists()
    same_weights(tmp_path / "whole", tmp_path / "cut")


class _Rank(DataParallel):
    """Rank ``rank`` of ``world`` in one process: :meth:`sum` adds what the other ranks handed over."""

    def __init__(self, rank, world, others=()):
        self.rank, self.world, self.others, self.sent = rank, world, list(others), []

    def sum(self, array):
        self.sent.append(array.copy())
        return array + self.others.pop(0) if self.others else array


def test_sharded_evaluation_scores_each_rank_its_share_and_sums_to_one_process():
    import numpy as np
    import scipy.sparse as sp

    from whyrec.evaluate import evaluate_ranking

    rng = np.random.default_rng(0)
    n_users, n_items = 101, 40
    train = sp.random(n_users, n_items, density=0.2, format="csr", random_state=1, dtype=np.float32)
    test = sp.random(n_users, n_items, density=0.1, format="csr", random_state=2, dtype=np.float32)
    train.data[:], test.data[:] = 1, 1
    test = test - test.multiply(train)  # disjoint
    test.eliminate_zeros()
    scores = rng.standard_normal((n_users, n_items)).astype(np.float32)
    whole = evaluate_ranking(scores, train, test, ks=(5, 10), batch_size=16)
    seen = {0: [], 1: []}

    def scorer(rank):
        def f(users):
            seen[rank].extend(users.tolist())
            return torch.from_numpy(scores[users.numpy()].copy())
        return f

    r0 = _Rank(0, 2)
    evaluate_ranking(scorer(0), train, test, ks=(5, 10), batch_size=16, strategy=r0)  # its own sums, sent
    r1 = _Rank(1, 2, others=r0.sent)
    shard = evaluate_ranking(scorer(1), train, test, ks=(5, 10), batch_size=16, strategy=r1)
    evaluated = np.flatnonzero(np.diff(test.indptr) > 0)
    half = -(-len(evaluated) // 2)
    assert seen[0] == evaluated[:half].tolist() and seen[1] == evaluated[half:].tolist()  # contiguous shares
    assert list(shard) == list(whole) and shard["n_users"] == whole["n_users"] == len(evaluated)
    for key in whole:
        assert shard[key] == pytest.approx(whole[key], abs=1e-12), key


def test_two_gloo_processes_evaluate_as_one_and_a_closed_form_model_trains(tmp_path):
    args = [*ARGS, "--epochs", "3", "--eval-on-test"]  # the last --epochs counts
    one_process(*args, "--out", tmp_path / "one")
    res = torchrun(*args, "--out", tmp_path / "two")
    assert res.returncode == 0, res.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for part in ("test", "valid"):  # the per-epoch validation (on test here) and the final test, sharded
        assert set(one[part]) == set(two[part])
        for key in one[part]:
            assert two[part][key] == pytest.approx(one[part][key], abs=1e-6), (part, key)
    assert one["best_epoch"] == two["best_epoch"]
    res = torchrun("train", "--dataset", "ml-100k", "--data-dir", dataset_dir("ml-100k"), "--model", "pop",
                   "--out", tmp_path / "pop", "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "pop" / "metrics.json").is_file()


def test_a_failing_rank_stops_the_job_with_one_line(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("not a run")
    res = torchrun(*ARGS, "--out", tmp_path / "taken")  # rank 0 refuses the folder; rank 1 waits for it
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rank 0 of 2" in errors[0] and "already exists" in errors[0], res.stderr[-3000:]
    assert (tmp_path / "taken" / "x").read_text() == "not a run"
