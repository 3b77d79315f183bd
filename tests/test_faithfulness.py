"""The faithfulness yardstick and the intrinsic explanation through the CLI, and their bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from whyrec.cli import app
from whyrec.data.entities import build_entities
from whyrec.data.splits import Split, heldout_users
from whyrec.explain.faithfulness import IMPORTANCE_FUNCTIONS, evaluate_faithfulness, importance_function
from whyrec.models.mf import MF
from whyrec.models.resolved import Resolved, ResolvedConfig
from whyrec.run import load_run, write_run
from whyrec.train.elbo import ELBO, EVAL_KS, MONITOR
from whyrec.train.loop import TrainConfig, fit

runner = CliRunner()
CFG = {"dim": 8, "n_factors": 2, "anneal_epochs": 0}


def one_error(result) -> str:
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), result.stderr
    return err[0]


def subset(lastfm, n_users=250):
    """First ``n_users`` Last.fm users and the artists they played, re-indexed; entity arrays
    restricted to those artists."""
    keep = lastfm.users < n_users
    items, col = np.unique(lastfm.items[keep], return_inverse=True)
    sub = replace(lastfm, user_ids=lastfm.user_ids[:n_users], item_ids=lastfm.item_ids[items],
                  users=lastfm.users[keep], items=col, ratings=lastfm.ratings[keep], kg_triples=None,
                  n_entities=0, notes=[])
    g = build_entities(lastfm)
    remap = -np.ones(lastfm.n_items, np.int64)
    remap[items] = np.arange(len(items))
    ie = g.item_entity[remap[g.item_entity[:, 0]] >= 0]
    g.item_entity = np.stack([remap[ie[:, 0]], ie[:, 1]], 1)
    g.n_items = len(items)
    return sub, g.to_arrays()


@pytest.fixture(scope="module")
def runs(lastfm, tmp_path_factory):
    """A small trained resolved run (one test user stripped of their history) and an MF run."""
    data, extras = subset(lastfm)
    split = heldout_users(data, n_valid_users=20, n_test_users=40, seed=1)
    # user with no history: move one test user's training rows to their test rows
    test_users = np.unique(data.users[split.test])
    lonely = int(test_users[0])
    mine = split.train[data.users[split.train] == lonely]
    split = Split(np.setdiff1d(split.train, mine), split.valid, np.union1d(split.test, mine), split.method,
                  split.seed, split.min_rating, split.params)
    train, valid, _ = split.matrices(data)
    torch.manual_seed(0)
    model = Resolved(data.n_users, data.n_items, train, extras["item_entity"], int(extras["n_entities"][0]), None,
                     ResolvedConfig(**CFG))
    fit(model, train, valid, TrainConfig(seed=0, epochs=4, lr=1e-2, eval_every=2, batch_size=64, reg=1e-8, ks=EVAL_KS,
                                         monitor=MONITOR), objective=ELBO(), progress=False)
    out = tmp_path_factory.mktemp("runs")
    (out / "resolved").mkdir()
    (out / "mf").mkdir()
    write_run(out / "resolved", data=data, split=split, model=model, model_name="resolved", model_config=CFG,
              train_config={}, metrics={}, extras=extras)
    write_run(out / "mf", data=data, split=split, model=MF(data.n_users, data.n_items), model_name="mf",
              model_config={"dim": 64}, train_config={}, metrics={})
    return {"resolved": out / "resolved", "mf": out / "mf", "lonely": int(data.user_ids[lonely]),
            "user": int(data.user_ids[test_users[1]])}


def faithfulness_json(run_dir, *args) -> dict:
    res = runner.invoke(app, ["faithfulness", str(run_dir), *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_faithfulness_json_contract(runs):
    res = runner.invoke(app, ["faithfulness", str(runs["resolved"]), "--method", "random", "--remove", "1,2",
                              "--runs", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["method"] == "random" and [r["removed"] for r in out["results"]] == [1, 2]
    for r in out["results"]:
        assert set(r) >= {"removed", "shift", "std"} and np.isfinite(r["shift"]) and r["std"] >= 0
    assert out["n_test_users"] == 39  # the stripped user has no history and is left out


def test_intrinsic_and_paths_and_figure(runs, tmp_path):
    fig = tmp_path / "f.png"
    out = faithfulness_json(runs["resolved"], "--method", "intrinsic", "--remove", "1,3", "--runs", "3",
                            "--figure", str(fig))
    assert all(r["std"] == 0 for r in out["results"])  # deterministic explainer
    assert fig.stat().st_size > 1000
    run = load_run(runs["resolved"])
    paths = evaluate_faithfulness(run, "paths", (1,), runs=1)
    assert paths["results"][0]["n_users"] > 0
    # removing nothing-important vs the top item: shift is a real number in a sane range
    assert -1 <= paths["results"][0]["shift"] <= 1


def test_several_methods_share_one_figure_and_report_top10_kept(runs, tmp_path):
    fig = tmp_path / "all.png"
    out = faithfulness_json(runs["resolved"], "--method", "intrinsic,random", "--remove", "1,2", "--runs", "2",
                            "--figure", str(fig))
    assert [r["method"] for r in out["methods"]] == ["intrinsic", "random"]
    for r in (x for m in out["methods"] for x in m["results"]):
        assert 0.0 <= r["top10_kept"] <= 1.0 and r["top10_kept_std"] >= 0
    assert fig.stat().st_size > 1000
    msg = one_error(runner.invoke(app, ["faithfulness", str(runs["resolved"]), "--method", "random,random"]))
    assert "twice" in msg


def test_top10_kept_counts_the_overlap():
    from whyrec.explain.faithfulness import _kept

    before = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    after = np.array([[4, 3, 9, 10], [5, 6, 7, 8]])
    assert _kept(before, after).tolist() == [0.5, 1.0]


def test_intrinsic_explain_cli(runs, tmp_path):
    fig = tmp_path / "why.png"
    res = runner.invoke(app, ["explain", str(runs["resolved"]), "--user", str(runs["user"]), "--method", "intrinsic",
                              "--json", "--figure", str(fig)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["method"] == "intrinsic" and out["history"] and out["entities"]
    shares = [r["share"] for r in out["history"]]
    assert shares == sorted(shares, reverse=True) and all(r["factor"].startswith("I") for r in out["history"])
    assert fig.stat().st_size > 1000
    text = runner.invoke(app, ["explain", str(runs["resolved"]), "--user", str(runs["user"]), "--method", "intrinsic"])
    assert text.exit_code == 0 and "history items" in text.stdout


def test_intrinsic_explanation_through_the_service(runs):
    from fastapi.testclient import TestClient

    from whyrec.serve import create_app

    client = TestClient(create_app(runs["resolved"]))
    assert "intrinsic" in client.get("/health").json()["available_methods"]
    r = client.get(f"/users/{runs['user']}/explanations/{_top_item_id(runs)}?method=intrinsic")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "intrinsic" and body["history"] and body["entities"]
    r = client.get(f"/users/{runs['user']}/explanations/{_top_item_id(runs)}?method=history")
    assert r.status_code == 400 and "supported: intrinsic" in r.json()["detail"]


def _top_item_id(runs) -> int:
    run = load_run(runs["resolved"])
    from whyrec.recommend import top_item

    return int(run.item_ids[top_item(run, run.user_index(runs["user"]))])


def test_importance_interface():
    assert set(IMPORTANCE_FUNCTIONS) >= {"intrinsic", "paths", "history"}
    assert importance_function("random") is None
    with pytest.raises(ValueError, match="unknown faithfulness method"):
        importance_function("bogus")


def test_bad_input(runs, tmp_path):
    msg = one_error(runner.invoke(app, ["faithfulness", str(runs["resolved"]), "--method", "random",
                                        "--remove", "1,5000"]))
    assert "--remove 5000" in msg and "longest" in msg
    msg = one_error(runner.invoke(app, ["faithfulness", str(runs["resolved"]), "--method", "bogus"]))
    assert "unknown faithfulness method" in msg
    msg = one_error(runner.invoke(app, ["faithfulness", str(runs["resolved"]), "--method", "random", "--remove", "0"]))
    assert "positive" in msg
    msg = one_error(runner.invoke(app, ["faithfulness", str(runs["mf"]), "--method", "random"]))
    assert "undefined" in msg
    msg = one_error(runner.invoke(app, ["explain", str(runs["resolved"]), "--user", str(runs["lonely"]),
                                        "--method", "intrinsic"]))
    assert "no training history" in msg
    # a dataset with no knowledge graph and no item attributes (Gowalla layout) for a model that needs entities
    g = tmp_path / "gowalla"
    g.mkdir()
    (g / "train.txt").write_text("0 0 1 2\n1 1 2 3\n2 0 3\n")
    (g / "test.txt").write_text("0 3\n1 0\n2 1\n")
    msg = one_error(runner.invoke(app, ["train", "--dataset", "gowalla", "--data-dir", str(g), "--model", "resolved",
                                        "--out", str(tmp_path / "r"), "--eval-on-test", "--no-progress"]))
    assert "neither a knowledge graph nor item attributes" in msg


def test_metric_shift_alone_is_todays_output(runs):
    args = ["--method", "intrinsic,random", "--remove", "1,2", "--runs", "2", "--no-progress"]
    assert faithfulness_json(runs["resolved"], *args, "--metric", "shift") == faithfulness_json(runs["resolved"], *args)


def test_curves_on_a_resolved_run(runs, tmp_path):
    """Per-recommendation curves through the re-encoding path; the counterfactual order starts with its
    verified set, so it flips every user it found a set for within that set's size."""
    fig = tmp_path / "curves.png"
    out = faithfulness_json(runs["resolved"], "--method", "counterfactual,random", "--metric",
                            "deletion,insertion,knockout,fidelity,flip,shift", "--max-remove", "3", "--k", "1,10",
                            "--users", "8", "--remove", "1", "--runs", "1", "--figure", str(fig), "--no-progress")
    assert fig.stat().st_size > 1000
    cf, rnd = out["methods"]
    assert cf["method"] == "counterfactual" and cf["n_users"] == rnd["n_users"] == 8
    assert cf["shift"]["results"][0]["removed"] == 1  # the seed's column is kept
    assert 0 <= cf["vs_random"]["p_value"] <= 1 and "vs_random" not in rnd
    for res in (cf, rnd):
        assert len(res["deletion"]["score"]) == len(res["knockout"]["1"]) == 3
        assert all(0.0 <= v <= 1.0 for v in res["knockout"]["1"] + res["knockout"]["10"])
        for u in res["per_user"]:
            assert len(u["insertion_rank"]) == 3 and u["deletion_rank"][0] >= 1
    from whyrec.explain.counterfactual import counterfactual_set

    run = load_run(runs["resolved"])
    found = 0
    for u in cf["per_user"]:
        ui, t = run.user_index(u["user"]), run.item_lookup[u["item"]]
        res = counterfactual_set(run, ui, t, k=1, mask=run.matrices["train"][ui].indices)
        if res["found"]:
            found += 1
            assert u["flip"]["1"] is not None and u["flip"]["1"] <= res["size"]
    assert found >= 4


def test_curve_bad_input(runs):
    for args, needle in [(["--metric", "bogus"], "unknown --metric 'bogus'"),
                         (["--metric", "shift,shift"], "twice"),
                         (["--metric", "deletion", "--max-remove", "3", "--fidelity-m", "4"], "larger than"),
                         (["--metric", "deletion", "--k", "0"], "--k expects positive integers"),
                         (["--metric", "deletion", "--max-remove", "5000"], "no test user has more than")]:
        msg = one_error(runner.invoke(app, ["faithfulness", str(runs["resolved"]), "--method", "random", *args]))
        assert needle in msg, msg
