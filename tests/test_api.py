"""The library's face (README's Python snippet) on real data: whyrec.fit / load / Run methods /
from_interactions, in memory, with save/load round trips."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import whyrec


def test_readme_snippet_lightgcn(ml100k, tmp_path):
    data = ml100k
    run = whyrec.fit(data, model="lightgcn", split="user-holdout", seed=0, epochs=60, lr=5e-3, progress=False)
    metrics = run.evaluate(k=[10, 20])
    pop = whyrec.fit(data, model="pop", split="user-holdout", seed=0, progress=False).evaluate(k=[10, 20])
    assert metrics["recall@20"] > pop["recall@20"] + 0.05, (metrics["recall@20"], pop["recall@20"])
    recs = run.recommend(user="1", k=10)
    seen = set(data.item_ids[data.items[data.users == data.user_index("1")]].tolist())
    assert len(recs) == 10 and all(r.title for r in recs) and not {r.item for r in recs} & seen
    new = run.recommend(liked=["Toy Story (1995)", "star wars"], k=10)
    assert len(new) == 10 and not {r.item for r in new} & {1, 50}
    why = run.explain(user="1", item=recs[0].item, method="history")
    assert why.method == "history" and why.item == recs[0].item and why.additive
    assert why.score == pytest.approx(recs[0].score, rel=1e-4)
    assert why.total == pytest.approx(why.score - why.baseline, rel=1e-3, abs=1e-4)
    # the share of the score that depends on the history at all (the rest: the free user embedding)
    assert why.extras["history_share"] == pytest.approx((why.score - why.baseline) / abs(why.score))
    assert why.extras["history_share"] < 1.0
    labels = [label for label, _ in why.contributions]  # every history item, as (label, value) pairs
    assert len(labels) == run.matrices["train"][run.user_index("1")].nnz and all(labels)
    assert json.loads(json.dumps(why.to_dict()))["method"] == "history"
    run.save(tmp_path / "ml100k")
    again = whyrec.load(tmp_path / "ml100k")
    assert [r.item for r in again.recommend(user="1", k=10)] == [r.item for r in recs]
    assert [r.score for r in again.recommend(user="1", k=10)] == pytest.approx([r.score for r in recs], rel=1e-6)
    with pytest.raises(FileExistsError):
        run.save(tmp_path / "ml100k")  # nothing is overwritten without asking
    assert again.recommend(user="1", k=10).to_dict()["recommendations"][0]["item_id"] == recs[0].item


def test_model_registry_at_the_package_top():
    """``whyrec.MODELS`` / ``available_models()`` are the registry ``fit`` and ``whyrec train --model``
    use (``whyrec/recipes/``), read-only, and ``whyrec models`` lists the same names."""
    from typer.testing import CliRunner

    from whyrec.cli import app as cli
    from whyrec.recipes import get_recipe

    models = whyrec.available_models()
    assert list(models) == list(whyrec.MODELS) and {"lightgcn", "gf-cf", "resolved", "pop"} <= set(models)
    assert whyrec.MODELS["lightgcn"] is get_recipe("lightgcn") and models["lightgcn"] == get_recipe("lightgcn").description
    with pytest.raises(TypeError):
        whyrec.MODELS["mine"] = None
    listed = [line.split()[0] for line in CliRunner().invoke(cli, ["models"]).stdout.splitlines()]
    assert listed == list(models)
    import importlib.util

    assert importlib.util.find_spec("whyrec.train.recipes") is None  # one registry, not two


def test_fit_refuses_unknown_options(ml100k):
    with pytest.raises(ValueError, match="does not know --opt bogus"):
        whyrec.fit(ml100k, model="gf-cf", bogus=1, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        whyrec.fit(ml100k, model="lightgcn", epochs=0, progress=False)


def test_graph_filter_in_memory(ml100k):
    run = whyrec.fit(ml100k, model="gf-cf", seed=0, progress=False)
    assert run.config["model_config"]["rank"] in (64, 128, 256, 512)
    recs = run.recommend(user="7", k=5)
    why = run.explain(user="7", item=recs[0].item, method="history")
    assert why.baseline == 0.0 and why.total == pytest.approx(why.score, rel=1e-4)
    assert why.extras["history_share"] == 1.0
    flip = run.explain(user="7", item=recs[0].item, method="counterfactual", k=1)
    assert flip.method == "counterfactual" and flip.extras["verified"] and len(flip.contributions) == flip.extras["size"]
    new = run.recommend(liked=["Fargo (1996)", "Usual Suspects, The (1995)"], k=5)
    assert all(sum(b["contribution"] for b in r.because) == pytest.approx(r.score, rel=1e-4) for r in new)


def synthetic_frame(seed=0, n_users=300, n_items=120, per_user=15) -> pd.DataFrame:
    """Two taste groups: users 0..149 like items 0..59, the others 60..119 (plus a little noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group = u < n_users // 2
        pool = np.arange(0, n_items // 2) if group else np.arange(n_items // 2, n_items)
        items = rng.choice(pool, size=per_user, replace=False)
        noise = rng.choice(n_items, size=2, replace=False)
        for i in np.r_[items, noise]:
            rows.append((1000 + u, 5000 + int(i), float(rng.integers(1, 6)), 1_600_000_000 + len(rows)))
    return pd.DataFrame(rows, columns=["uid", "iid", "stars", "ts"])


def test_from_interactions_dataframe_and_arrays(tmp_path):
    df = synthetic_frame()
    titles = {5000 + i: f"Item {i}" for i in range(120)}
    data = whyrec.from_interactions(df, user="uid", item="iid", rating="stars", timestamp="ts", titles=titles)
    assert data.n_users == 300 and data.n_items == df.iid.nunique() and data.explicit
    assert data.item_titles[data.item_index(5003)] == "Item 3"
    run = whyrec.fit(data, model="gf-cf", seed=1, min_rating=1, progress=False)
    pop = whyrec.fit(data, model="pop", seed=1, min_rating=1, progress=False)
    assert run.evaluate(k=10)["recall@10"] > pop.evaluate(k=10)["recall@10"] + 0.1
    # a user of the first group is recommended items of the first group, unseen, with their titles
    recs = run.recommend(user="1000", k=10)
    assert sum(r.item < 5060 for r in recs) >= 8
    seen = set(df.iid[df.uid == 1000].tolist())
    assert len(recs) == 10 and not {r.item for r in recs} & seen and all(r.title.startswith("Item ") for r in recs)
    # a new user who liked items of the second group gets the second group, each with its "because"
    new = run.recommend(liked=["Item 70", "Item 71", "5072"], k=10)
    assert sum(r.item >= 5060 for r in new) >= 8 and not {r.item for r in new} & {5070, 5071, 5072}
    assert all(sum(b["contribution"] for b in r.because) == pytest.approx(r.score, rel=1e-4) for r in new)
    # an additive explanation: the history's exact terms sum to the score (a filter has no baseline)
    why = run.explain(user="1000", item=recs[0].item, method="history")
    assert why.additive and why.score == pytest.approx(recs[0].score, rel=1e-4)
    assert sum(v for _, v in why.contributions) == pytest.approx(why.score - why.baseline, rel=1e-4, abs=1e-6)
    run.save(tmp_path / "custom")
    assert [r.item for r in whyrec.load(tmp_path / "custom").recommend(user="1000", k=10)] == [r.item for r in recs]
    # numpy arrays: the same data
    arrays = whyrec.from_interactions(users=df.uid.to_numpy(), items=df.iid.to_numpy())
    assert arrays.n_users == data.n_users and not arrays.explicit
    with pytest.raises(whyrec.data.DataError, match="no column 'user'"):
        whyrec.from_interactions(df)
    with pytest.raises(whyrec.data.DataError, match="integer ids"):
        whyrec.from_interactions(users=["a", "b"], items=[1, 2])


def test_resolved_on_lastfm_in_memory(lastfm, tmp_path):
    """The seed-002 model through the same five lines: trained in memory (a short schedule, 10 of its
    documented 60 epochs, which reach Recall@10 0.216, docs/resolved.md) and above popularity on the
    same split, ten unseen artists with names, a new user's list, its own (intrinsic) explanation
    (not additive: the score is the log of a sum of exponentials), an additive one (Shapley values of the
    history, summing to the score minus the no-history score), and save/load giving identical
    recommendations."""
    run = whyrec.fit(lastfm, model="resolved", seed=0, epochs=10, eval_every=10, progress=False)  # ~1 min
    metrics = run.evaluate(k=[10, 20])
    pop = whyrec.fit(lastfm, model="pop", seed=0, progress=False).evaluate(k=[10, 20])
    assert metrics["recall@20"] > pop["recall@20"] and metrics["n_users"] == pop["n_users"] > 0
    user = str(run.user_ids[0])
    recs = run.recommend(user=user, k=10)
    seen = set(run.item_ids[run.matrices["seen"][run.user_index(user)].indices].tolist())
    assert len(recs) == 10 and not {r.item for r in recs} & seen and all(r.title for r in recs)
    # a new user: the liked artists re-encoded as a history (no retraining, no user term)
    liked = [run.titles().label(i) for i in run.matrices["train"][run.user_index(user)].indices[:5]]
    new = run.recommend(liked=liked, k=10)
    liked_ids = set(new.to_dict()["liked_ids"])
    assert len(new) == 10 and len(liked_ids) == 5 and not {r.item for r in new} & liked_ids
    assert len({r.item for r in new} & {r.item for r in recs}) >= 3  # much of the same taste as the user's
    why = run.explain(user=user, item=recs[0].item, method="intrinsic")
    assert why.method == "intrinsic" and why.item == recs[0].item and why.contributions
    history = set(run.item_ids[run.matrices["train"][run.user_index(user)].indices].tolist())
    assert {c.id for c in why.contributions if c.kind == "history item"} <= history
    # an additive explanation: Shapley values of the history over the score without any history
    shap = run.explain(user=user, item=recs[0].item, method="shapley", top=100, samples=4)
    assert shap.additive and shap.score == pytest.approx(recs[0].score, rel=1e-5)
    assert sum(c.value for c in shap.contributions) == pytest.approx(shap.score - shap.baseline, abs=1e-4)
    assert {c.id for c in shap.contributions if c.id is not None} <= history
    run.save(tmp_path / "lastfm")
    again = whyrec.load(tmp_path / "lastfm")
    back = again.recommend(user=user, k=10)
    assert [r.item for r in back] == [r.item for r in recs]
    assert [r.score for r in back] == pytest.approx([r.score for r in recs], rel=1e-6)
