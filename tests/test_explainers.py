"""One shape for explanations (issue 16, item 1) and LightGCN's history-only mode (item 4): the explainer
registry, the one default-item rule, the already-interacted flag, the generic renderers; and on a tiny
graph, the history-only user representation against numbers written down by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import whyrec
from conftest import cli_fails, cli_ok, dataset_dir
from whyrec.explain import EXPLAINERS, default_item, explainer_for, supported_methods
from whyrec.explain.explanation import KINDS, Explanation, render_text
from whyrec.models.base import EXACT_HISTORY, GRAPH, RESCORE, can
from whyrec.models.lightgcn import LightGCN, LightGCNConfig
from whyrec.models.lightgcn_history import LightGCNHistory


@pytest.fixture(scope="module")
def run(ml100k):
    return whyrec.fit(ml100k, model="lightgcn", seed=0, epochs=2, dim=16, progress=False)


@pytest.fixture(scope="module")
def history_run(ml100k):
    return whyrec.fit(ml100k, model="lightgcn", user_repr="history", seed=0, epochs=2, dim=16, progress=False)


def test_every_recipe_method_meets_its_explainers_capability_needs():
    from whyrec.recipes import recipes

    for name in recipes():
        from whyrec.recipes import get_recipe

        assert set(get_recipe(name).explain_methods) <= set(EXPLAINERS), name
    assert EXPLAINERS["intrinsic"].needs == ("INTRINSIC",) and EXPLAINERS["concepts"].needs == ()
    assert {m for m, e in EXPLAINERS.items() if e.ranks_history} == {"history", "intrinsic", "paths", "counterfactual", "shapley"}


def test_faithfulness_verdicts_follow_the_rule(monkeypatch):
    from types import SimpleNamespace

    from whyrec import explain

    run = SimpleNamespace(config={"model": "toy", "model_config": {}})
    assert explain.verdict(run, "history")["verdict"] == "not measured"
    monkeypatch.setitem(explain.MEASURED, ("history", "toy"), (0.70, 0.78, 0.2, "toy data"))
    assert explain.verdict(run, "history")["verdict"] == "not faithful"  # not significant
    monkeypatch.setitem(explain.MEASURED, ("history", "toy"), (0.80, 0.78, 1e-9, "toy data"))
    assert explain.verdict(run, "history")["verdict"] == "not faithful"  # significant, but worse than random
    monkeypatch.setitem(explain.MEASURED, ("history", "toy"), (0.70, 0.78, 1e-9, "toy data"))
    assert explain.verdict(run, "history") == {
        "verdict": "faithful",
        "note": "deletion area 0.700 against random's 0.780, paired Wilcoxon p = 1e-09 (toy data)"}
    # the faithfulness table's entry for the run's dataset wins over the model's entry
    run.config["dataset"] = "toy-data"
    monkeypatch.setitem(explain.MEASURED, ("history", "toy", "toy-data"), (0.76, 0.78, 0.3, "toy-data, 3 seeds"))
    assert explain.verdict(run, "history")["verdict"] == "not faithful"
    assert "toy-data, 3 seeds" in explain.verdict(run, "history")["note"]
    run.config["dataset"] = "other"
    assert explain.verdict(run, "history")["verdict"] == "faithful"  # no entry for this dataset: the model's
    run.config["model_config"]["user_repr"] = "history"
    assert explain.model_key(run) == "toy/history" and explain.verdict(run, "history")["verdict"] == "not measured"


def test_one_default_item_for_every_method(run):
    u = run.user_index("7")
    t = default_item(run, u)
    assert t == int(run.model.score_users([u])[0].masked_fill(
        torch.from_numpy(run.matrices["seen"][u].toarray()[0] > 0), -np.inf).argmax())  # what recommend lists first
    items = {m: explainer_for(run, m).explain(run, u).item for m in ("history", "counterfactual")}
    items["paths"] = EXPLAINERS["paths"].explain(run, u).item  # model-agnostic: any run has a graph
    assert set(items.values()) == {int(run.item_ids[t])}, items
    assert EXPLAINERS["concepts"].explain(run, u).item is None  # a per-user method: no item
    assert EXPLAINERS["concepts"].explain(run, u).faithfulness is None  # it ranks no history: no verdict


def test_options_are_validated_per_method(run):
    u = run.user_index("7")
    with pytest.raises(ValueError, match="--k only apply to --method counterfactual"):
        EXPLAINERS["history"].explain(run, u, k=3)
    with pytest.raises(ValueError, match="--bogus are not options of any method"):
        EXPLAINERS["history"].explain(run, u, bogus=1)
    assert EXPLAINERS["history"].check_options({"steps": None, "top": 3, "baseline": None}) == {"top": 3}


def test_explanation_shape_json_text_and_round_trip(run, tmp_path):
    u = run.user_index("7")
    seen_item = int(run.matrices["seen"][u].indices[0])
    why = EXPLAINERS["history"].explain(run, u, seen_item, top=5)
    assert why.already_interacted  # an item the user rated: said so, in the object, the JSON and the text
    d = why.to_dict()
    assert d["already_interacted"] and d["explanation"]["already_interacted"]
    assert {"attributions", "baseline_score", "because", "history_share"} <= set(d)  # every key it always had
    assert [c["kind"] for c in d["explanation"]["contributions"]] == ["history item"] * 5
    assert all(c["kind"] in KINDS for c in d["explanation"]["contributions"])
    again = Explanation.from_result(json.loads(json.dumps(d)))
    assert again.contributions == why.contributions and again.baseline == why.baseline and again.already_interacted
    text = render_text(d)
    assert "already interacted" in text and why.contributions[0].label in text and "history item" in text
    fresh = EXPLAINERS["history"].explain(run, u)
    assert not fresh.already_interacted and "already interacted" not in render_text(fresh.to_dict())
    with pytest.raises(ValueError, match="already interacted"):  # a counterfactual needs a recommendation
        EXPLAINERS["counterfactual"].explain(run, u, seen_item)


def test_cli_renders_every_method_generically(tmp_path):
    out = tmp_path / "r"
    cli_ok(["train", "--dataset", "ml-100k", "--data-dir", dataset_dir("ml-100k"), "--out", out, "--epochs", "1",
            "--dim", "8", "--no-progress", "--threads", "1", "--opt", "user_repr=history"])
    res = cli_ok(["explain", out, "--user", "7", "--method", "history", "--json", "--top", "5000"])
    body = json.loads(res.stdout)
    assert body["explanation"]["baseline"] == 0.0 and body["history_share"] == 1.0  # nothing but the history
    assert sum(c["value"] for c in body["explanation"]["contributions"]) == pytest.approx(body["score"], rel=1e-4)
    fig = tmp_path / "cf.png"
    text = cli_ok(["explain", out, "--user", "7", "--method", "counterfactual", "--figure", fig]).stdout
    assert "exact re-scorings" in text and "rank now" in text and fig.stat().st_size > 1000
    cli_fails(["explain", out, "--user", "7", "--method", "history", "--baseline", "zero"],
              "--baseline only apply to --method features")
    cli_fails(["train", "--dataset", "ml-100k", "--data-dir", dataset_dir("ml-100k"), "--out", tmp_path / "x",
               "--opt", "user_repr=bogus"], "user_repr must be one of free, history")


# ---------------------------------------------------------------------------------------------- #
# history-only LightGCN on a graph small enough to write down
# ---------------------------------------------------------------------------------------------- #
# 2 users, 2 items: user 0 has items {0, 1}, user 1 has item {1}. Degrees d_u = (2, 1), d_i = (1, 2).
# K = 1, α = (1/2, 1/2), layer 0: users e0 = (1, 0), e1 = (0, 1); items f0 = (1, 1), f1 = (2, 0).
# LightGCN:  e_u = ½ e_u^(0) + ½ Σ_i f_i / sqrt(d_u d_i);   e_t = ½ f_t + ½ Σ_u e_u^(0) / sqrt(d_u d_t)
#   item 0: ½ (1, 1) + ½ e0 / sqrt(2)            = (0.5 + 0.353553, 0.5)
#   item 1: ½ (2, 0) + ½ (e0 / 2 + e1 / sqrt(2)) = (1.25, 0.353553)
# history mode, user 0: e(H) = ½ (f0 / sqrt(2) + f1 / 2) = (0.853553, 0.353553)   (no ½ e0 term)
def _tiny(cls):
    train = sp.csr_matrix(np.array([[1, 1], [0, 1]], np.float32))
    m = cls(2, 2, LightGCNConfig(dim=2, n_layers=1), graph=train)
    with torch.no_grad():
        m.user_emb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        m.item_emb.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
    return m.eval(), train


def test_history_only_lightgcn_by_hand():
    m, train = _tiny(LightGCNHistory)
    free, _ = _tiny(LightGCN)
    r2 = np.sqrt(2)
    item0 = np.array([0.5 + 0.5 / r2, 0.5])
    item1 = np.array([1.25, 0.5 / r2])
    e_h = np.array([0.5 / r2 + 0.5, 0.5 / r2])
    users, items = m.embeddings()
    np.testing.assert_allclose(items.numpy(), [item0, item1], rtol=1e-6)
    np.testing.assert_allclose(users[0].numpy(), e_h, rtol=1e-6)
    np.testing.assert_allclose(users.numpy(), (free.embeddings()[0] - 0.5 * free.user_emb.weight).detach().numpy(),
                               rtol=1e-6)  # LightGCN's user minus its free layer-0 term
    s = np.array([e_h @ item0, e_h @ item1])  # 1.163320, 1.191942
    np.testing.assert_allclose(m.score_users([0])[0].numpy(), s, rtol=1e-6)
    # the exact decomposition: c(j, t) = ½ f_j · e_t / sqrt(2 d_j), summing to the score
    c = m.history_contributions([0, 1], [0, 1]).numpy()
    np.testing.assert_allclose(c, [[0.5 / r2 * np.array([1, 1]) @ item0, 0.5 / r2 * np.array([1, 1]) @ item1],
                                   [0.25 * np.array([2, 0]) @ item0, 0.25 * np.array([2, 0]) @ item1]], rtol=1e-6)
    np.testing.assert_allclose(c.sum(0), s, rtol=1e-6)
    # removing item 0 from user 0 (d_u, d_i held fixed) lowers each score by exactly c(0, ·); nothing: 0
    rows = sp.csr_matrix(np.array([[0, 1], [0, 0]], np.float32))
    out = m.score_histories(rows, users=torch.tensor([0, 0])).numpy()
    np.testing.assert_allclose(out[0], s - c[0], rtol=1e-6)
    np.testing.assert_allclose(out[1], [0.0, 0.0], atol=0)
    # a new user who likes item 1: d_u = 1, e = ½ f1 / sqrt(2)
    np.testing.assert_allclose(m.fold_in([1]).numpy(), 0.5 * np.array([2, 0]) / r2, rtol=1e-6)
    assert can(m, RESCORE) and can(m, EXACT_HISTORY) and not can(m, GRAPH) and can(free, GRAPH)


def test_history_only_run_explains_exactly(history_run):
    run = history_run
    assert type(run.model) is LightGCNHistory and set(supported_methods(run)) == {"history", "concepts",
                                                                                  "counterfactual", "shapley"}
    u = run.user_index("7")
    why = run.explain(user="7", method="history")
    assert why.extras["exact"] and why.baseline == 0.0 and why.extras["history_share"] == 1.0
    assert why.faithfulness["verdict"] == "faithful" and "Wilcoxon" in why.faithfulness["note"]  # measured
    assert why.total == pytest.approx(why.score, rel=1e-4)
    # each listed removal effect is the contribution itself, and a re-scoring confirms it
    hist = run.matrices["train"][u].indices
    j = run.item_lookup[why.contributions[0].item]
    keep = sp.csr_matrix((np.ones(len(hist) - 1, np.float32), (np.zeros(len(hist) - 1, int), hist[hist != j])),
                         shape=(1, run.n_items))
    t = run.item_lookup[why.item]
    after = float(run.model.score_histories(keep, users=torch.tensor([u]))[0, t])
    assert why.score - after == pytest.approx(why.contributions[0].value, rel=1e-4, abs=1e-6)
    cf = run.explain(user="7", method="counterfactual", k=10)
    assert cf.extras["search"].endswith("(linear filter)") or "exact decomposition" in cf.extras["search"]
    if cf.extras["found"]:
        assert cf.extras["verified"] and cf.compare["rank without them"] > 10
