"""The faithfulness table's pooling (benchmarks/faithfulness_table.py) on cells whose answers are written down
by hand: no training, no model (issue 16, item 5)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "faithfulness_table", Path(__file__).resolve().parents[1] / "benchmarks" / "faithfulness_table.py")
table = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(table)

T4, T1 = 2.7764451051977987, 12.706204736174707  # Student-t 97.5 % quantiles, 4 and 1 degrees of freedom


def _rows(areas, ranks, flips, users):
    return [{"user": u, "item": 7, "n_history": 12, "deletion_area": a, "insertion_area": 1 - a,
             "deletion_rank": r, "flip": {"1": f, "10": None}, "set_size": None}
            for u, a, r, f in zip(users, areas, ranks, flips)]


def _cell(seed, users, hist, rand, ranks, flips, shift, seconds):
    res = {"method": "history", "n_users": len(users), "seconds": seconds, "per_user": _rows(hist, ranks, flips, users),
           "shift": {"results": [{"removed": 10, "shift": shift, "top10_kept": 1 - shift}]}}
    base = {"method": "random", "n_users": len(users), "seconds": seconds,
            "per_user": _rows(rand, [[1, 1]] * len(users), [None] * len(users), users)}
    return {"dataset": "ml-100k", "model": "gf-cf", "seed": seed, "max_remove": 2, "methods": [res, base]}


# seed 2020: users 1, 2, 3; seed 2021: users 1 and 2 again (other split, other people: the same ids must not pair
# across seeds). Differences history - random: -0.05, -0.15, -0.25, -0.35, -0.45 (every user better than random).
CELLS = [_cell(2020, [1, 2, 3], [0.1, 0.2, 0.3], [0.15, 0.35, 0.55], [[1, 1], [1, 2], [2, 3]], [1, None, 2], 0.1, 10.0),
         _cell(2021, [1, 2], [0.4, 0.5], [0.75, 0.95], [[3, 5], [1, 1]], [3, None], 0.3, 4.0)]


def _row(summary, method):
    return next(r for r in summary if r["method"] == method)


def test_pooled_means_and_t_intervals_over_users_of_every_seed():
    h = _row(table.summarize(CELLS), "history")
    assert h["n_users"] == 5 and h["seeds"] == [2020, 2021]
    d = h["deletion_area"]  # mean 0.3, sd sqrt(0.1 / 4), half-width t4 * sd / sqrt(5)
    half = T4 * math.sqrt(0.1 / 4) / math.sqrt(5)
    assert d["mean"] == pytest.approx(0.3) and d["n"] == 5
    assert (d["lo"], d["hi"]) == (pytest.approx(0.3 - half), pytest.approx(0.3 + half))
    assert d["spread"]["per_seed"] == [pytest.approx(0.2), pytest.approx(0.45)]
    assert d["spread"]["std"] == pytest.approx(0.25 / math.sqrt(2))
    k = h["knockout1"]  # rank after M = 2 removals > 1: users 2, 3 (seed 2020) and 1 (seed 2021): 3 of 5
    assert k["mean"] == pytest.approx(0.6)
    assert k["hi"] - k["mean"] == pytest.approx(T4 * math.sqrt(0.3) / math.sqrt(5))
    assert h["knockout10"]["mean"] == 0 and h["flipped1"]["mean"] == pytest.approx(0.6)
    assert h["flip1_size"]["mean"] == pytest.approx(2.0) and h["flip1_size"]["median"] == 2.0
    s = h["shift"]  # a ratio of means, one per seed: the interval is over the two seeds
    assert s["mean"] == pytest.approx(0.2) and s["hi"] - s["mean"] == pytest.approx(T1 * 0.1)
    assert h["shift_curve"] == [{"removed": 10, "shift": pytest.approx(0.2), "std": pytest.approx(0.1),
                                 "top10_kept": pytest.approx(0.8), "top10_kept_std": pytest.approx(0.1),
                                 "per_model_shift": [0.1, 0.3], "per_model_top10_kept": [0.9, pytest.approx(0.7)]}]
    assert h["seconds_per_200_users"] == pytest.approx((10 * 200 / 3 + 4 * 200 / 2) / 2)


def test_paired_test_pools_seed_user_pairs_and_five_wins_are_not_significant():
    h = _row(table.summarize(CELLS), "history")
    vs = h["vs_random"]
    # all 5 differences negative, distinct: exact two-sided Wilcoxon p = 2 / 2^5 = 0.0625 -> not faithful
    assert vs["n"] == 5 and vs["median_difference"] == pytest.approx(-0.25)
    assert vs["p_value"] == pytest.approx(2 / 32)
    assert vs["per_seed_p"] == [pytest.approx(2 / 8), pytest.approx(2 / 4)]
    assert vs["mean_difference"]["mean"] == pytest.approx(-0.25)
    assert h["verdict"] == "not faithful"
    assert _row(table.summarize(CELLS), "random")["verdict"] == "baseline"


def test_six_wins_are_faithful_and_six_losses_worse_than_random():
    more = CELLS + [_cell(2022, [1], [0.2], [0.8], [[1, 1]], [None], 0.2, 1.0)]  # a sixth user, -0.6
    h = _row(table.summarize(more), "history")
    assert h["vs_random"]["p_value"] == pytest.approx(2 / 64) and h["verdict"] == "faithful"
    flipped = [{**c, "methods": [{**c["methods"][0], "per_user": c["methods"][1]["per_user"]},
                                 {**c["methods"][1], "per_user": c["methods"][0]["per_user"]}]} for c in more]
    w = _row(table.summarize(flipped), "history")
    assert w["vs_random"]["median_difference"] > 0 and w["verdict"] == "worse than random"


def test_markdown_and_measured_lines_carry_the_verdicts():
    summary = table.summarize(CELLS)
    md = table.markdown(summary)
    assert "| ml-100k | gf-cf | history | 5 (2) | 0.300 [" in md and md.rstrip().endswith("baseline |")
    assert "not faithful (0/2 seeds) |" in md
    lit = table.measured_literal(summary)
    assert lit.strip().startswith("('history', 'gf-cf', 'ml-100k'): (0.300, 0.550, 6.2e-02")
