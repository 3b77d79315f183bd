"""Counterfactual explanations on ML-100K test users (issue 16's target): the share of users whose top-1
item leaves first place (and the top 10) with a **verified** counterfactual set, its median size, and the
number of removals the same flip takes in a random order and in the order of the history explainer.

For each model a run is trained through ``whyrec train`` (default settings: the filters' rank/alpha chosen on
validation) into a temporary folder, unless ``--run MODEL=DIR`` names one. Every test user with a training
history is explained: ``t`` = their top-1 item (training items masked, as in ``whyrec faithfulness``), then

* ``counterfactual``: :func:`whyrec.explain.counterfactual.counterfactual_set` with ``k`` = 1 and 10 and
  ``--max-size`` (every set it reports was re-scored; its size, whether it is proven smallest);
* ``random``: ``--draws`` uniform random orders of the whole history; the flip size is the first prefix
  whose removal takes ``t`` out of the top ``k`` (exact re-scoring of every prefix; never: ``inf``), the
  per-user value the median over draws;
* ``history``: the same with the order of the model's own history explainer (largest contribution / IG
  first): ``history`` where the model supports it, else ``intrinsic`` (resolved, vae), else ``paths``
  (NMF); ``--order-method`` names another. The JSON records which (``order_method``).

Medians over users count a user who is never flipped as ``inf`` (``"inf"`` in the JSON), so a median is
finite only when more than half the users flip. ``ratio`` = random's median / the counterfactual's median,
over the users the counterfactual flipped (the same flips).

    python benchmarks/bench_counterfactual.py --models gf-cf,cheby-cf,bspm
    python benchmarks/bench_counterfactual.py --models lightgcn --users 200 --run lightgcn=runs/ml100k
    python benchmarks/bench_counterfactual.py --models lightgcn --run lightgcn=runs/ml100k-history \
        --out benchmarks/results/counterfactual_ml100k_lightgcn_history.json   # --opt user_repr=history

Writes ``benchmarks/results/counterfactual_ml100k.json`` (``--out``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
ORDER_METHODS = ("history", "intrinsic", "paths")  # the first one the model supports orders the history


def train(model: str, data_dir: str, out: Path, seed: int, extra: list[str]) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "whyrec", "train", "--dataset", "ml-100k", "--data-dir", data_dir, "--model", model,
           "--out", str(out), "--seed", str(seed), "--no-progress", *extra]
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def flip_sizes(run, u: int, t: int, order: np.ndarray, ks, mask) -> dict:
    """Fewest prefixes of ``order`` whose removal takes ``t`` out of the top k (exact re-scoring)."""
    from whyrec.explain.counterfactual import ranks
    from whyrec.explain.faithfulness import _rows, rescore

    lists = [order[m:] for m in range(1, len(order) + 1)]
    import torch

    with torch.no_grad():
        sc = rescore(run, np.full(len(lists), u), _rows(lists, run.n_items)).double().numpy()
    rk = ranks(sc, t, mask)
    out = {}
    for k in ks:
        hit = np.flatnonzero(rk > k)
        out[k] = float(hit[0] + 1) if len(hit) else float("inf")
    return out


def median(xs) -> float:
    return float(np.median(np.asarray(xs, float))) if len(xs) else float("nan")


def bench(model: str, run_dir: Path, args) -> dict:
    import torch

    from whyrec.explain.counterfactual import counterfactual_set
    from whyrec.explain import EXPLAINERS
    from whyrec.explain.faithfulness import history_and_top, importance_function
    from whyrec.run import load_run

    torch.set_num_threads(args.threads)
    run = load_run(run_dir)
    train, test = run.matrices["train"], run.matrices["test"]
    users = np.flatnonzero((np.diff(test.indptr) > 0) & (np.diff(train.indptr) > 0))
    if args.users:
        users = users[: args.users]
    order_method = args.order_method or next(m for m in ORDER_METHODS if EXPLAINERS[m].supports(run.model))
    hist_fn = importance_function(order_method)
    rng = np.random.default_rng(args.seed)
    ks = (1, 10)
    rows = []
    t_cf = t_rand = 0.0
    load_before = os.getloadavg()
    for u in users:
        u = int(u)
        hist, full, t = history_and_top(run, train, u)
        row = {"user": int(run.user_ids[u]), "item": int(run.item_ids[t]), "n_history": int(len(hist))}
        t0 = time.perf_counter()
        for k in ks:
            res = counterfactual_set(run, u, t, k=k, max_size=args.max_size, beam=args.beam, mask=hist)
            row[f"cf@{k}"] = {"found": res["found"], "size": res["size"], "optimal": res["optimal"],
                              "exists": res["exists"], "lower_bound": res["lower_bound"],
                              "rescorings": res["rescorings"], "rank_after": res["rank_after"]}
        t_cf += time.perf_counter() - t0
        t0 = time.perf_counter()
        draws = [flip_sizes(run, u, t, rng.permutation(hist), ks, hist) for _ in range(args.draws)]
        for k in ks:
            row[f"random@{k}"] = median([d[k] for d in draws])
        imp = hist_fn(run, u, t)
        h = np.sort(hist)
        score = np.array([imp.get(int(j), 0.0) for j in h])
        hist_order = flip_sizes(run, u, t, h[np.lexsort((h, -score))], ks, hist)
        for k in ks:
            row[f"history@{k}"] = hist_order[k]
        t_rand += time.perf_counter() - t0
        rows.append(row)
    load_after = os.getloadavg()
    summary = {}
    n = len(rows)
    for k in ks:
        found = [r for r in rows if r[f"cf@{k}"]["found"]]
        sizes = [r[f"cf@{k}"]["size"] for r in found]
        rand_same = [r[f"random@{k}"] for r in found]
        summary[f"top{k}"] = {
            "users": n,
            "counterfactual_flipped": len(found) / n,
            "counterfactual_median": median(sizes),
            "counterfactual_mean": float(np.mean(sizes)) if sizes else None,
            "counterfactual_proven_smallest": float(np.mean([r[f"cf@{k}"]["optimal"] for r in found])) if found else None,
            "proven_impossible_within_max": float(np.mean([r[f"cf@{k}"]["exists"] is False for r in rows])),
            "random_median_same_flips": median(rand_same),
            "random_flipped_any_size": float(np.mean([np.isfinite(r[f"random@{k}"]) for r in rows])),
            "random_median_all_users": median([r[f"random@{k}"] for r in rows]),
            "random_within_max": float(np.mean([r[f"random@{k}"] <= args.max_size for r in rows])),
            "history_median_same_flips": median([r[f"history@{k}"] for r in found]),
            "history_within_max": float(np.mean([r[f"history@{k}"] <= args.max_size for r in rows])),
            "ratio_random_to_counterfactual": (median(rand_same) / median(sizes)) if sizes else None,
            "median_rescorings": median([r[f"cf@{k}"]["rescorings"] for r in rows]),
        }
    return {"model": model, "run": str(run_dir), "config": run.config.get("model_config"), "users": n,
            "median_history": median([r["n_history"] for r in rows]), "max_size": args.max_size, "beam": args.beam,
            "order_method": order_method,
            "draws": args.draws, "seconds_counterfactual": t_cf, "seconds_random_and_history": t_rand,
            "load_average_before": load_before, "load_average_after": load_after, "summary": summary,
            "per_user": rows}


def table(results: list[dict]) -> str:
    lines = ["| model | users | leave | counterfactual flipped (≤ max) | median size | proven smallest | "
             "random median, same flips | ratio | history order median | s/user |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for k in (1, 10):
            s = res["summary"][f"top{k}"]
            lines.append(f"| {res['model']} | {res['users']} | {'first place' if k == 1 else 'top 10'} | "
                         f"{100 * s['counterfactual_flipped']:.1f}% | {s['counterfactual_median']:g} | "
                         f"{100 * (s['counterfactual_proven_smallest'] or 0):.0f}% | {s['random_median_same_flips']:g} | "
                         f"{(s['ratio_random_to_counterfactual'] or float('nan')):.1f}× | "
                         f"{s['history_median_same_flips']:g} | {res['seconds_counterfactual'] / res['users']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="gf-cf")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets" / "ml-100k"))
    p.add_argument("--run", action="append", default=[], help="MODEL=RUN_DIR: use this run instead of training")
    p.add_argument("--users", type=int, default=0, help="first N test users (0: all)")
    p.add_argument("--max-size", type=int, default=20)
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--order-method", default=None, help="explainer whose order is the 'history' column "
                   "(default: history, else intrinsic, else paths, the first the model supports)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-args", default="", help="extra `whyrec train` arguments (space-separated)")
    p.add_argument("--out", default=str(RESULTS / "counterfactual_ml100k.json"))
    args = p.parse_args()
    given = dict(kv.split("=", 1) for kv in args.run)
    path = Path(args.out)
    out = {"dataset": "ml-100k", "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
                                            "(shared)", "python": platform.python_version(),
           "command": "python benchmarks/bench_counterfactual.py " + " ".join(sys.argv[1:]), "results": []}
    with tempfile.TemporaryDirectory(prefix="whyrec-cf-") as tmp:
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            run_dir = Path(given[model]) if model in given else Path(tmp) / model
            fit = None
            if model not in given:
                fit = train(model, args.data_dir, run_dir, args.seed, args.train_args.split())
            t0 = time.perf_counter()
            res = bench(model, run_dir, args)
            res["seconds_total"] = time.perf_counter() - t0
            res["seconds_train"] = fit
            res["command"] = out["command"]
            if model not in given:
                res["run"] = f"trained by this script: whyrec train --dataset ml-100k --model {model} --seed {args.seed}"
            print(table([res]), flush=True)
            old = {}
            if path.exists():  # keep other models' results from earlier runs; written after every model
                try:
                    old = {r["model"]: r for r in json.loads(path.read_text())["results"]}
                except (ValueError, KeyError):
                    old = {}
            old[model] = res
            out["results"] = list(old.values())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(out, indent=1, default=lambda o: str(o)).replace("Infinity", '"inf"').replace("NaN", "null"))
    print(table(out["results"]))


if __name__ == "__main__":
    main()
