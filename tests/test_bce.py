"""BCE training (seed 000's objective) on the shared epoch driver: it learns and logs its parts."""

from __future__ import annotations

import numpy as np
import torch

from whyrec.models import LightGCN, LightGCNConfig
from whyrec.train.bce import BCE, observed_pairs
from whyrec.train.loop import TrainConfig, fit


def test_observed_pairs_targets():
    import scipy.sparse as sp

    train = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32))
    u, i, y = observed_pairs(train, zero_users=np.array([1]), zero_items=np.array([2]))
    pairs = sorted(zip(u.tolist(), i.tolist(), y.tolist()))
    assert pairs == [(0, 0, 1.0), (0, 2, 1.0), (1, 1, 1.0), (1, 2, 0.0)]


def test_bce_training_learns_on_ml100k(ml100k, tmp_path):
    from whyrec.data.splits import user_holdout
    from whyrec.evaluate import evaluate_ranking

    split = user_holdout(ml100k, seed=3)
    train, valid, test = split.matrices(ml100k)
    torch.manual_seed(0)
    model = LightGCN(ml100k.n_users, ml100k.n_items, LightGCNConfig(dim=16, n_layers=2), graph=train)
    before = evaluate_ranking(model.score_users, train, test)["recall@20"]
    hist = fit(model, train, valid, TrainConfig(epochs=6, batch_size=4096, lr=1e-2, eval_every=2, seed=0,
                                                num_threads=1), objective=BCE(), out_dir=tmp_path, progress=False)
    losses = [r["bce"] for r in hist.epochs]
    assert losses[-1] < losses[0] * 0.8
    after = evaluate_ranking(model.score_users, train, test)["recall@20"]
    assert after > before + 0.1 and after > 0.2
    assert hist.config["loss"] == "bce" and hist.best_epoch in (2, 4, 6)
    assert (tmp_path / "curves.csv").is_file() and "bce" in (tmp_path / "curves.csv").read_text().splitlines()[0]
