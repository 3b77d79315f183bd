"""The trainer's extension points on tiny synthetic problems whose answers are known by hand: a custom
objective, a custom callback, early stopping on a scripted metric sequence, the checked monitor,
and the settings' precedence (defaults, recipe, preset, flags, ``--opt``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

import whyrec
from conftest import dataset_dir
from whyrec.cli import app
from whyrec.models import MF, MFConfig
from whyrec.train import Callback, EarlyStopping, Objective, TrainConfig, Trainer, fit


def _graph():
    R = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 1]], dtype=np.float32))
    return R, sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]], dtype=np.float32))


class Rows(Objective):
    """Epoch ``e``'s examples are ``0..4`` (shuffled by nobody); a batch's loss is the mean of its
    rows plus ``½‖u_0‖²`` of the model's first user row, so Adam moves only that row."""

    def __init__(self):
        self.batches = []

    def epoch(self, epoch):
        return (torch.arange(5.0),)

    def loss(self, x):
        self.batches.append(x.tolist())
        w = 0.5 * self.model.user_emb.weight[0].pow(2).sum()
        return {"mean": x.mean(), "loss": x.mean() + w}


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_begin(self, trainer):
        self.calls.append(("begin", trainer.first_epoch))

    def on_epoch(self, trainer, row):
        self.calls.append(("epoch", row["epoch"], trainer.at_eval, "recall@20" in row))

    def on_end(self, trainer, completed):
        self.calls.append(("end", completed))


def test_custom_objective_and_callback_by_hand():
    R, V = _graph()
    torch.manual_seed(0)
    model = MF(3, 4, MFConfig(dim=2))
    u1_before = model.user_emb.weight[1:].detach().clone()
    u0_before = model.user_emb.weight[0].detach().clone()
    rows, rec = Rows(), Recorder()
    hist = fit(model, R, V, TrainConfig(epochs=3, batch_size=2, eval_every=2, lr=0.01), objective=rows,
               callbacks=[rec], progress=False, evaluate=lambda *a: {"recall@20": 0.5, "ndcg@20": 0.25})
    # batches of 2 over 5 rows: [0, 1], [2, 3], [4] every epoch; the row means are 0.5, 2.5, 4
    assert rows.batches == [[0.0, 1.0], [2.0, 3.0], [4.0]] * 3
    assert [r["mean"] for r in hist.epochs] == pytest.approx([(0.5 + 2.5 + 4.0) / 3] * 3)
    assert [r["lr"] for r in hist.epochs] == [0.01] * 3
    # evaluation points: epoch 2 (eval_every) and 3 (the last); the callback sees them in order
    assert rec.calls == [("begin", 1), ("epoch", 1, False, False), ("epoch", 2, True, True),
                         ("epoch", 3, True, True), ("end", True)]
    assert [e for e, _ in hist.evals] == [2, 3]
    # only user 0 has a gradient: Adam's first step moves each of its coordinates by lr (|g| >> eps)
    assert torch.equal(model.user_emb.weight[1:], u1_before)
    assert not torch.allclose(model.user_emb.weight[0], u0_before)
    assert not model.training


def test_a_failing_epoch_still_ends_the_callbacks():
    R, _ = _graph()

    class Boom(Rows):
        def loss(self, x):
            if len(self.batches) == 4:
                raise RuntimeError("boom")
            return super().loss(x)

    rec = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        fit(MF(3, 4, MFConfig(dim=2)), R, None, TrainConfig(epochs=3, batch_size=2), objective=Boom(),
            callbacks=[rec], progress=False)
    assert rec.calls == [("begin", 1), ("epoch", 1, False, False), ("end", False)]


def test_early_stopping_on_a_scripted_metric_sequence():
    """Evaluations every 2 epochs: 0.5, 0.4, 0.6, 0.6, 0.55, 0.58, ... -- the best is epoch 6 (0.6; an
    equal score is no improvement), then three evaluations without one: patience 3 stops at epoch 12."""
    R, V = _graph()
    scores = iter([0.5, 0.4, 0.6, 0.6, 0.55, 0.58, 0.9])
    weights = {}

    def evaluate(model, train, valid, ks):
        s = next(scores)
        weights.setdefault(s, model.item_emb.weight.detach().clone())
        return {"recall@20": s, "ndcg@20": 0.0}

    torch.manual_seed(0)
    model = MF(3, 4, MFConfig(dim=2))
    hist = fit(model, R, V, TrainConfig(epochs=40, eval_every=2, patience=3, batch_size=2, lr=0.05),
               evaluate=evaluate, progress=False)
    assert hist.stopped_early and len(hist.epochs) == 12
    assert [e for e, _ in hist.evals] == [2, 4, 6, 8, 10, 12]
    assert hist.best_epoch == 6 and hist.best_score == 0.6
    assert torch.equal(model.item_emb.weight, weights[0.6])  # the best weights are back


def test_early_stopping_callback_alone():
    stop = EarlyStopping("ndcg@10", patience=1, ks=(10, 20))

    class T:  # the attributes a callback reads
        at_eval, stop = True, False
        model = MF(2, 2, MFConfig(dim=1))
        history = type("H", (), {"evals": [], "best_score": None, "best_epoch": None, "best_metrics": {}})()

    t = T()
    for epoch, score in ((1, 0.2), (2, 0.1)):
        t.history.evals.append((epoch, {"ndcg@10": score}))
        stop.on_epoch(t, {"epoch": epoch})
    assert t.history.best_epoch == 1 and t.stop


def test_an_unknown_monitor_is_an_error_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"monitor must be one of recall@20, ndcg@20, .*mrr@20; got 'recal@20'"):
        TrainConfig(monitor="recal@20")
    with pytest.raises(ValueError, match="monitor must be one of recall@10"):
        TrainConfig(ks=(10,))  # recall@20 is not computed at k = 10: no silent fallback any more
    with pytest.raises(ValueError, match="got 'ndcg@10'"):
        EarlyStopping("ndcg@10", ks=(20,))
    assert TrainConfig(ks=(5, 20), monitor="ndcg@5").monitor == "ndcg@5"


def test_resume_needs_a_resumable_objective(tmp_path):
    from whyrec.train.elbo import ELBO

    R, _ = _graph()
    with pytest.raises(ValueError, match="resume needs the out_dir"):
        Trainer(MF(3, 4), config=TrainConfig(epochs=1, resume=True)).fit(R)
    with pytest.raises(ValueError, match="keeps no resumable state"):
        Trainer(MF(3, 4), ELBO(), TrainConfig(epochs=1, resume=True), out_dir=tmp_path).fit(R)


# ------------------------------------------------------------------------------ settings' precedence
def test_settings_precedence_defaults_recipe_preset_flags_opts():
    from whyrec.pipeline import plan_training
    from whyrec.train.elbo import EVAL_KS

    assert plan_training("lightgcn").train_values == {}  # TrainConfig's own defaults
    assert TrainConfig().epochs == 150 and TrainConfig().lr == 5e-3
    paper = plan_training("lightgcn", preset="paper").train_values
    assert paper == {"epochs": 1000, "lr": 1e-3, "eval_every": 20}
    assert plan_training("lightgcn", preset="paper", lr=0.01).train_values["lr"] == 0.01  # a flag wins
    with pytest.raises(ValueError, match="lightgcn has no --preset 'fast'; its presets: paper"):
        plan_training("lightgcn", preset="fast")
    tuned = plan_training("resolved")
    assert tuned.train_values["lr"] == 1e-2 and tuned.train_values["epochs"] == 60
    assert tuned.train_values["ks"] == EVAL_KS and tuned.train_values["monitor"] == "ndcg@100"
    assert tuned.model_config["input_dropout"] == 0.5 and tuned.model_config["anneal_epochs"] == 5
    table1 = plan_training("resolved", preset="paper")
    assert table1.train_values["lr"] == 2e-4 and table1.model_config["input_dropout"] == 0.0
    # an --opt training setting wins over the flag, and is not a model setting
    p = plan_training("resolved", lr=1e-3, options={"lr": "3e-3", "batch_users": "64", "input_dropout": "0.2"})
    assert p.train_values["lr"] == 3e-3 and p.train_values["batch_size"] == 64
    assert "lr" not in p.model_config and p.model_config["input_dropout"] == 0.2
    with pytest.raises(ValueError, match="--monitor must be one of recall@20"):
        plan_training("lightgcn", monitor="auc")
    assert plan_training("kgcn").train_values["lr"] == 5e-4


# ------------------------------------------------------------------------------ lightgcn-aligned
def test_lightgcn_aligned_is_lightgcn_plus_an_objective(tmp_path):
    """With ``align_weight=0`` the alignment objective is BPR: the run equals ``--model lightgcn``'s
    to the last digit; with the default weight it differs, logs ``align`` and still loads as a
    plain LightGCN."""
    def train(name, *extra):
        out = tmp_path / name
        res = CliRunner().invoke(app, ["train", "--dataset", "ml-100k", "--data-dir", str(dataset_dir("ml-100k")),
                                       "--out", str(out), "--epochs", "2", "--eval-every", "1", "--seed", "0",
                                       "--threads", "1", "--no-progress", *extra])
        assert res.exit_code == 0, res.output
        return out, json.loads((out / "metrics.json").read_text())["test"]

    _, plain = train("plain", "--model", "lightgcn")
    _, zero = train("zero", "--model", "lightgcn-aligned", "--opt", "align_weight=0")
    out, aligned = train("aligned", "--model", "lightgcn-aligned")
    assert zero == plain
    assert aligned["recall@20"] != plain["recall@20"]
    curves = pd.read_csv(out / "curves.csv")
    assert curves["align"].notna().all() and (curves["align"] < 0).all()  # minus a mean correlation
    config = json.loads((out / "config.json").read_text())
    assert config["train_config"]["align_refits"] == 2 and config["model_config"]["align_weight"] == 0.1
    run = whyrec.load(out)
    assert type(run.model).__name__ == "LightGCN"
    assert run.evaluate(k=(10, 20))["recall@20"] == pytest.approx(aligned["recall@20"], abs=1e-12)


def test_cli_refuses_an_unknown_monitor_or_preset(tmp_path):
    for flags, message in ((["--monitor", "auc"], "error: --monitor must be one of recall@20, ndcg@20, precision@20, "
                                                  "hit_rate@20, mrr@20; got 'auc'"),
                           (["--preset", "fast"], "error: lightgcn has no --preset 'fast'; its presets: paper"),
                           (["--model", "pop", "--preset", "paper"], "error: pop has no --preset 'paper'; its presets: none")):
        out = tmp_path / "run"
        res = CliRunner().invoke(app, ["train", "--dataset", "ml-100k", "--data-dir", str(dataset_dir("ml-100k")),
                                       "--out", str(out), "--no-progress", *flags])
        assert res.exit_code == 1 and res.output.strip() == message, res.output
        assert not out.exists()
