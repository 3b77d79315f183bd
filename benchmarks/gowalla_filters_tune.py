"""Can a graph filter pass the best published Gowalla figure (ChebyCF's Recall@20 0.1941) without
looking at the test set?

Protocol: 10 % of each user's official training interactions become a validation part (seeded);
the model is fitted on the other 90 % and every setting of a grid wider than the paper's is scored
on the validation users (a seeded sample); the best setting is then refitted on the **whole**
official training set and evaluated once on the official test set. The grid and every validation
score are saved.

    python benchmarks/gowalla_filters_tune.py --model cheby-cf --data-dir ../shared/datasets/gowalla

Writes ``benchmarks/results/gowalla_tune_<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

GRIDS = {
    "cheby-cf": {"order": [8, 10, 12], "flatness": [1.5, 2.0], "rank": [512, 768], "alpha": [0.2, 0.3],
                 "beta": [0.4, 0.45]},
    "bspm": {"T_s": [2.5, 3.0, 3.5], "beta": [0.2, 0.3], "rank": [448, 640]},
    "gf-cf": {"rank": [256, 384, 512], "alpha": [0.3, 0.5]},
}


def main() -> None:
    from whyrec.data import load_dataset
    from whyrec.data.splits import make_split
    from whyrec.evaluate import evaluate_ranking
    from whyrec.recipes import ModelInputs, get_recipe
    from whyrec.train.select import select_config

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cheby-cf", choices=sorted(GRIDS))
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--valid-ratio", type=float, default=0.1)
    p.add_argument("--select-users", type=int, default=3000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--grid", type=json.loads, help='a JSON grid instead of the default, e.g. {"order": [8, 12]}')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("gowalla", args.data_dir)
    recipe = get_recipe(args.model)
    grid = args.grid or GRIDS[args.model]
    load0 = os.getloadavg()[0]

    # 1. select on validation carved from the training set
    split = make_split(data, "official", seed=args.seed, valid_ratio=args.valid_ratio)
    train, valid, _ = split.matrices(data)
    config = recipe.model_config({})
    model = recipe.build(ModelInputs(data.n_users, data.n_items, train, {}), config)
    t0 = time.perf_counter()
    model.fit_basis(seed=args.seed, rank=max(grid.get("rank", [model.config.rank])))
    sel = select_config(model, grid, train, valid, max_users=args.select_users, seed=args.seed, progress=True)
    t_select = time.perf_counter() - t0
    print(f"selected {sel['best']} (validation recall@20 {sel['score']:.4f}) in {t_select:.0f} s", flush=True)

    # 2. refit the chosen setting on the whole official training set, evaluate once on test
    split = make_split(data, "official", seed=args.seed)
    train, _, test = split.matrices(data)
    chosen = {**recipe.model_config({}), **sel["best"]}
    model = recipe.build(ModelInputs(data.n_users, data.n_items, train, {}), chosen)
    t1 = time.perf_counter()
    model.fit_basis(seed=args.seed)
    fit_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    with torch.no_grad():
        metrics = evaluate_ranking(model.score_users, train, test, ks=(20,))
    eval_s = time.perf_counter() - t2
    print(f"test recall@20 {metrics['recall@20']:.4f} ndcg@20 {metrics['ndcg@20']:.4f} "
          f"(fit {fit_s:.0f} s, eval {eval_s:.0f} s)", flush=True)
    out = ROOT / "benchmarks" / "results" / f"gowalla_tune_{args.model}.json"
    out.write_text(json.dumps({
        "command": "python benchmarks/gowalla_filters_tune.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "protocol": f"select on {args.valid_ratio:.0%} of each user's training (≤ {args.select_users} validation "
                    "users), refit on the whole official training, evaluate once on test",
        "grid": grid, "selection": sel, "chosen": chosen, "test": metrics, "fit_seconds": round(fit_s, 1),
        "eval_seconds": round(eval_s, 1), "select_seconds": round(t_select, 1),
        "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)]}, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
