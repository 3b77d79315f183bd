"""The faithfulness table (issue 16, item 5): every explainer that ranks history items × every model that
re-scores from a changed history × ML-100K, the ML-1M files and Last.fm, over three trained seeds.

For each cell (dataset, model, seed) it trains the model with the short schedule of :data:`MODELS`
(``--threads 1``; ``--seed`` sets the split and the initialisation, so three seeds are three trained
models on three splits), asks the explainer registry which explainers rank history items for that run
(``whyrec.explain.supported_methods``, ``ranks_history``; ``random`` always), and runs, one process per
explainer (so that each is timed alone)::

    whyrec faithfulness RUN --method M --metric deletion,insertion,knockout,fidelity,flip,shift \\
        --users 100 --max-remove M_d --remove 1,2,5,10 --runs 1 --json

(the first 100 test users with more than ``M_d`` training items; ``M_d`` = 10 on MovieLens, 5 on Last.fm,
whose histories are short). Per cell it writes ``benchmarks/results/faithfulness_table/<dataset>_<model>_
seed<seed>.json`` (the training command, time and test metrics, per explainer its summaries, per-user rows,
time and load average, and the paired test against random); a cell whose JSON exists is skipped, so a
partial run is useful and a re-run resumes. Then (or alone, ``--summary-only``) it pools the cells into
``summary.json`` (:func:`summarize`: per (dataset, model, explainer) the means with 95 % confidence
intervals over users pooled over seeds, the spread over seeds, the paired Wilcoxon test against random and
the verdict) and draws ``docs/figures/faithfulness_table.png``.

    python benchmarks/faithfulness_table.py                       # the whole table (resumes)
    python benchmarks/faithfulness_table.py --cells ml-100k:gf-cf  # some cells
    python benchmarks/faithfulness_table.py --summary-only         # pool what exists, draw the figure
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "faithfulness_table"
FIGURE = ROOT / "docs" / "figures" / "faithfulness_table.png"
DATA = Path(os.environ.get("WHYREC_DATASETS", ROOT.parent / "shared" / "datasets"))

#: dataset key -> (whyrec dataset name, folder under the datasets, M = --max-remove)
DATASETS = {"ml-100k": ("ml-100k", "ml-100k", 10), "ml-1m": ("ml-1m", "ml-1m-sample", 10),
            "lastfm": ("lastfm-kg", "lastfm-kg", 5)}
_RESOLVED = ["--opt", "lr=1e-2", "--opt", "input_dropout=0.5", "--opt", "anneal_epochs=5", "--opt", "epochs=30",
             "--opt", "eval_every=5"]
_LGCN_HISTORY = ["--opt", "user_repr=history", "--lr", "1e-2", "--eval-every", "20", "--patience", "2"]
#: model key -> (whyrec model, training flags, per-dataset extra flags): the short schedules
MODELS = {
    "gf-cf": ("gf-cf", [], {}),  # closed form; rank/alpha selected on validation by `whyrec train`
    "cheby-cf": ("cheby-cf", [], {}),
    "bspm": ("bspm", [], {}),
    "nmf": ("nmf", [], {}),  # one scikit-learn fit
    # history-only LightGCN: lr 1e-2 (the documented run: 5e-3, 300 epochs), at most 120 epochs (ML-1M: 60
    # epochs of 8192-example batches), early stop on validation Recall@20
    "lightgcn/history": ("lightgcn", _LGCN_HISTORY, {"ml-1m": ["--epochs", "60", "--batch-size", "8192"],
                                                      "*": ["--epochs", "120"]}),
    # LightGCN with free user embeddings: the same schedule as the history-only mode
    "lightgcn": ("lightgcn", _LGCN_HISTORY[2:], {"ml-1m": ["--epochs", "60", "--batch-size", "8192"],
                                                  "*": ["--epochs", "120"]}),
    # seed 002's tuned row at half its epochs (30 instead of 60)
    "resolved": ("resolved", _RESOLVED, {}),
    "vae": ("vae", _RESOLVED, {}),
}
SEEDS = (2020, 2021, 2022)
#: the order cells run in: cheap ones first (the filters are closed-form)
PLAN = [(d, m) for m in ("gf-cf", "cheby-cf", "bspm") for d in ("ml-100k", "ml-1m", "lastfm")
        if (d, m) != ("ml-1m", "bspm")] + \
       [("ml-100k", "lightgcn/history"), ("lastfm", "nmf"), ("ml-100k", "nmf"), ("lastfm", "resolved"),
        ("lastfm", "lightgcn/history"), ("lastfm", "vae"), ("ml-1m", "nmf"), ("ml-1m", "bspm"),
        ("ml-1m", "lightgcn/history"), ("ml-100k", "resolved"), ("ml-100k", "vae"), ("ml-1m", "resolved"),
        ("ml-1m", "vae"), ("ml-100k", "lightgcn"), ("lastfm", "lightgcn"), ("ml-1m", "lightgcn")]
N_USERS = 100
#: per-user keys left out of the cell JSON (their means over users are kept in ``deletion``/``insertion``)
DROP_PER_USER = ("deletion_score", "insertion_score", "insertion_rank")
CURVES = "deletion,insertion,knockout,fidelity,flip,shift"


def cell_path(dataset: str, model: str, seed: int) -> Path:
    return OUT / f"{dataset}_{model.replace('/', '-')}_seed{seed}.json"


def whyrec_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "whyrec", *args]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _round(x, nd: int = 5):
    """``x`` with every float to ``nd`` significant digits (a p-value of 1e-30 stays 1e-30)."""
    if isinstance(x, float):
        return float(f"{x:.{nd}g}")
    if isinstance(x, list):
        return [_round(v, nd) for v in x]
    if isinstance(x, dict):
        return {k: _round(v, nd) for k, v in x.items()}
    return x


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def train_args(dataset: str, model: str, seed: int, run_dir: Path) -> list[str]:
    name, folder, _ = DATASETS[dataset]
    wmodel, flags, extra = MODELS[model]
    return ["train", "--dataset", name, "--data-dir", str(DATA / folder), "--model", wmodel, "--seed", str(seed),
            "--out", str(run_dir), "--overwrite", "--threads", "1", "--no-progress", *flags,
            *extra.get(dataset, extra.get("*", []))]


def methods_for(run) -> tuple[list[str], list[str]]:
    """The explainers the table runs on ``run``: every registry explainer that ranks history items and whose
    capability needs the model meets (``paths`` reads the graph only, so it applies to every model, also where
    the recipe does not offer it), then ``random``; and those the recipe offers (``whyrec explain``, the page)."""
    from whyrec.explain import EXPLAINERS, supported_methods

    ranked = [m for m, e in EXPLAINERS.items() if e.ranks_history and e.supports(run.model)]
    return ranked + ["random"], [m for m in supported_methods(run) if EXPLAINERS[m].ranks_history]


def run_cell(dataset: str, model: str, seed: int, work: Path, n_users: int = N_USERS) -> dict:
    """Train one (dataset, model, seed), run every applicable explainer and random, write the cell JSON. A cell
    JSON that exists keeps its results; only the explainers it lacks are run (the run folder is reused)."""
    from whyrec.explain.faithfulness import paired_test
    from whyrec.run import load_run

    path = cell_path(dataset, model, seed)
    old = json.loads(path.read_text()) if path.exists() else None
    run_dir = work / f"{dataset}_{model.replace('/', '-')}_seed{seed}"
    targs = train_args(dataset, model, seed, run_dir)
    t0, load0 = time.time(), os.getloadavg()[0]
    if not (run_dir / "metrics.json").exists():
        subprocess.run(whyrec_cmd(*targs), check=True, capture_output=True, text=True, cwd=ROOT, env=_env())
    train_s = time.time() - t0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = load_run(run_dir)
    methods, offered = methods_for(run)
    del run
    M = DATASETS[dataset][2]
    results = {r["method"]: r for r in (old or {}).get("methods", [])}
    for m in methods:
        if m in results:
            continue
        fargs = ["faithfulness", str(run_dir), "--method", m, "--metric", CURVES, "--users", str(n_users),
                 "--max-remove", str(M), "--remove", "1,2,5,10", "--runs", "1", "--json", "--no-progress"]
        la, t1 = os.getloadavg()[0], time.time()
        out = subprocess.run(whyrec_cmd(*fargs), check=True, capture_output=True, text=True, cwd=ROOT, env=_env())
        res = json.loads(out.stdout)
        res["seconds"], res["load_average"] = time.time() - t1, [la, os.getloadavg()[0]]
        res["command"] = "whyrec " + " ".join(fargs[:1] + ["RUN"] + fargs[2:])
        for row in res["per_user"]:  # the per-m score curves are in the summaries; keep what the tests need
            for key in DROP_PER_USER:
                row.pop(key, None)
        results[m] = _round(res)
    results = [results[m] for m in methods if m in results]
    rand = next(r for r in results if r["method"] == "random")
    for res in results:
        if res is not rand:
            res["vs_random"] = paired_test(res, rand)
    train = old["train"] if old else {
        "command": "whyrec " + " ".join(a if a != str(run_dir) else "RUN" for a in targs), "seconds": train_s,
        "load_average": [load0, os.getloadavg()[0]], "test": metrics.get("test"),
        "best_epoch": metrics.get("best_epoch")}
    doc = {"dataset": dataset, "model": model, "seed": seed, "n_users_requested": n_users, "max_remove": M,
           "train": train, "offered_by_recipe": offered, "machine": machine(), "methods": results}
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc) + "\n")
    tmp.replace(path)
    return doc


def complete(path: Path, work: Path) -> bool:
    """Whether the cell JSON at ``path`` has every explainer :func:`methods_for` gives (its run folder must exist
    to tell; without it the cell counts as complete)."""
    from whyrec.run import load_run

    doc = json.loads(path.read_text())
    run_dir = work / path.stem
    if not (run_dir / "metrics.json").exists():
        return True
    have = {r["method"] for r in doc["methods"]}
    return set(methods_for(load_run(run_dir))[0]) <= have


# ---------------------------------------------------------------------------------------------- #
# pooling the cells: confidence intervals, the paired test, the verdict
# ---------------------------------------------------------------------------------------------- #
ALPHA = 0.05
#: the order explainers are listed and drawn in
EXPLAIN_ORDER = ("history", "intrinsic", "paths", "counterfactual", "random")


def mean_ci(values) -> dict:
    """Mean of ``values`` with its 95 % Student-t interval (``sd`` with ddof 1; ``None`` bounds for n < 2)."""
    from scipy.stats import t as student

    x = np.asarray([v for v in values if v is not None], float)
    n = len(x)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    if n < 2:
        return {"mean": float(x[0]), "lo": None, "hi": None, "n": 1}
    half = float(student.ppf(1 - ALPHA / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return {"mean": float(x.mean()), "lo": float(x.mean() - half), "hi": float(x.mean() + half), "n": n}


def spread(values) -> dict:
    """The per-seed values, their standard deviation (ddof 1) and range."""
    x = [float(v) for v in values if v is not None]
    return {"per_seed": x, "std": float(np.std(x, ddof=1)) if len(x) > 1 else None,
            "min": min(x) if x else None, "max": max(x) if x else None}


def user_values(res: dict, max_remove: int) -> dict[str, list]:
    """Per explained user of one explainer's result: the quantities the table pools."""
    rows = res["per_user"]
    m = max_remove - 1
    return {"deletion_area": [x["deletion_area"] for x in rows],
            "insertion_area": [x["insertion_area"] for x in rows],
            "knockout1": [float(x["deletion_rank"][m] > 1) for x in rows],
            "knockout10": [float(x["deletion_rank"][m] > 10) for x in rows],
            "flipped1": [float(x["flip"]["1"] is not None) for x in rows],
            "flip1_size": [x["flip"]["1"] for x in rows if x["flip"]["1"] is not None],
            "set_size": [x["set_size"] for x in rows if x.get("set_size") is not None]}


def _shift_at(res: dict, removed: int = 10):
    """The recall shift and top-10 kept at ``removed`` removals (``None`` when not run)."""
    for r in (res.get("shift") or {}).get("results", []):
        if r["removed"] == removed:
            return r["shift"], r["top10_kept"]
    return None, None


def shift_curve(per_seed: list[list[dict]]) -> list[dict]:
    """The seed's yardstick over the trained seeds: per number removed, the mean and standard deviation (ddof 0)
    over the seeds of the recall shift and of top-10 kept, and each seed's value."""
    out = []
    for removed in sorted({r["removed"] for res in per_seed for r in res}):
        got = [r for res in per_seed for r in res if r["removed"] == removed]
        sh, kept = np.array([r["shift"] for r in got]), np.array([r["top10_kept"] for r in got])
        out.append({"removed": removed, "shift": float(sh.mean()), "std": float(sh.std()),
                    "top10_kept": float(kept.mean()), "top10_kept_std": float(kept.std()),
                    "per_model_shift": sh.tolist(), "per_model_top10_kept": kept.tolist()})
    return out


def summarize(cells: list[dict]) -> list[dict]:
    """Pool the cells of each (dataset, model): per explainer the mean with a 95 % t-interval over the users of
    every seed together (deletion / insertion area, knock-out@1 and @10 after M removals, share flipped out of
    first place within ``--max-size`` removals in the explainer's order, the flip size, the counterfactual set
    size), the spread of the per-seed means, the recall shift at 10 removals (a ratio of means: its interval is
    over the seeds), the paired Wilcoxon test of the deletion areas against random's over all (seed, user) pairs
    (:func:`whyrec.explain.faithfulness.paired_test`) with per-seed p-values and the mean difference's
    interval, the verdict (:func:`verdict`), the time per 200 users and the recall shift / top-10 kept at every
    number removed over the seeds (``shift_curve``, the seed's yardstick averaged over trained models)."""
    from whyrec.explain.faithfulness import paired_test

    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["dataset"], c["model"]), []).append(c)
    out = []
    for (dataset, model), cs in groups.items():
        cs = sorted(cs, key=lambda c: c["seed"])
        methods = [r["method"] for r in cs[0]["methods"]]
        for method in methods:
            per_seed, pooled_a, pooled_r, diffs, seeds_p = [], [], [], [], []
            for c in cs:
                res = next((r for r in c["methods"] if r["method"] == method), None)
                rand = next((r for r in c["methods"] if r["method"] == "random"), None)
                if res is None:
                    continue
                vals = user_values(res, c["max_remove"])
                shift, kept = _shift_at(res)
                per_seed.append({"seed": c["seed"], "vals": vals, "shift": shift, "top10_kept": kept,
                                 "shift_results": (res.get("shift") or {}).get("results", []),
                                 "seconds": res.get("seconds"), "n_users": res["n_users"],
                                 "load_average": res.get("load_average")})
                if rand is not None and method != "random":
                    tag = lambda r: [{**x, "user": (c["seed"], x["user"])} for x in r["per_user"]]  # noqa: E731
                    pooled_a += tag(res)
                    pooled_r += tag(rand)
                    seeds_p.append(paired_test(res, rand)["p_value"])
                    other = {(x["user"], x["item"]): x["deletion_area"] for x in rand["per_user"]}
                    diffs += [x["deletion_area"] - other[(x["user"], x["item"])] for x in res["per_user"]
                              if (x["user"], x["item"]) in other]
            if not per_seed:
                continue
            row = {"dataset": dataset, "model": model, "method": method, "seeds": [p["seed"] for p in per_seed],
                   "n_users": int(sum(p["n_users"] for p in per_seed)), "max_remove": cs[0]["max_remove"]}
            for key in ("deletion_area", "insertion_area", "knockout1", "knockout10", "flipped1", "flip1_size",
                        "set_size"):
                pooled = [v for p in per_seed for v in p["vals"][key]]
                if not pooled:
                    continue
                row[key] = {**mean_ci(pooled), "spread": spread([np.mean(p["vals"][key]) if p["vals"][key]
                                                                 else None for p in per_seed])}
                if key in ("flip1_size", "set_size"):
                    row[key]["median"] = float(np.median(pooled))
            for key in ("shift", "top10_kept"):
                vals = [p[key] for p in per_seed if p[key] is not None]
                if vals:
                    row[key] = {**mean_ci(vals), "spread": spread(vals)}
            row["shift_curve"] = shift_curve([p["shift_results"] for p in per_seed])
            secs = [p["seconds"] * 200 / p["n_users"] for p in per_seed if p["seconds"] is not None]
            row["seconds_per_200_users"] = float(np.mean(secs)) if secs else None
            row["load_average"] = [p["load_average"] for p in per_seed]
            if method != "random" and pooled_a:
                test = paired_test({"per_user": pooled_a}, {"per_user": pooled_r})
                row["vs_random"] = {**test, "mean_difference": mean_ci(diffs), "per_seed_p": seeds_p}
            row["verdict"] = verdict(row)
            out.append(row)
    order = {k: i for i, k in enumerate([*DATASETS, *MODELS, *EXPLAIN_ORDER])}
    return sorted(out, key=lambda r: (order.get(r["dataset"], 99), order.get(r["model"], 99),
                                      order.get(r["method"], 99)))


def verdict(row: dict) -> str:
    """``faithful``: the deletion area is significantly below random's (paired Wilcoxon over users, p < 0.05,
    and a negative median difference); ``not faithful`` otherwise; ``worse than random``: significantly above;
    ``baseline`` for random itself."""
    if row["method"] == "random":
        return "baseline"
    test = row.get("vs_random") or {}
    p, d = test.get("p_value"), test.get("median_difference")
    if p is None or d is None:
        return "not measured"
    if p < ALPHA and d < 0:
        return "faithful"
    return "worse than random" if p < ALPHA and d > 0 else "not faithful"


def _fmt(entry, nd: int = 3) -> str:
    if not entry or entry.get("mean") is None:
        return "–"
    if entry.get("lo") is None:
        return f"{entry['mean']:.{nd}f}"
    return f"{entry['mean']:.{nd}f} [{entry['lo']:.{nd}f}, {entry['hi']:.{nd}f}]"


def _seeds_note(row: dict) -> str:
    """`` (k/n seeds)``: in how many seeds alone the deletion area is significantly below random's."""
    ps = (row.get("vs_random") or {}).get("per_seed_p") or []
    if not ps:
        return ""
    return f" ({sum(p is not None and p < ALPHA for p in ps)}/{len(ps)} seeds)"


def markdown(summary: list[dict]) -> str:
    """The table of docs/explanations.md."""
    head = ("| dataset | model | explainer | users (seeds) | deletion area [95 % CI] | seed spread (sd) | "
            "vs random: median diff, Wilcoxon p | insertion area | knock-out@1 after M | knock-out@10 after M | "
            "out of first place within 20: share, mean size | counterfactual set: mean, median | "
            "recall shift at 10 [CI over seeds] | s / 200 users | verdict |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in summary:
        vs = r.get("vs_random")
        vs_s = f"{vs['median_difference']:+.3f}, p = {vs['p_value']:.1e}" if vs and vs["p_value"] is not None else "–"
        sp = r["deletion_area"]["spread"]["std"]
        fl = r.get("flip1_size")
        ss = r.get("set_size")
        secs = r["seconds_per_200_users"]
        flip_s = "–" if not fl else f"{fl['mean']:.1f}"
        set_s = "–" if not ss else f"{ss['mean']:.1f}, {ss['median']:.0f}"
        sp_s = "–" if sp is None else f"{sp:.3f}"
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['method']} | {r['n_users']} ({len(r['seeds'])}) | "
            f"{_fmt(r['deletion_area'])} | {sp_s} | {vs_s} | "
            f"{_fmt(r['insertion_area'])} | {_fmt(r['knockout1'], 2)} | {_fmt(r['knockout10'], 2)} | "
            f"{100 * r['flipped1']['mean']:.0f} %, {flip_s} | {set_s} | {_fmt(r.get('shift'))} | "
            f"{'–' if secs is None else f'{secs:.0f}'} | {r['verdict']}{_seeds_note(r)} |")
    return "\n".join(lines)


FIG_METRICS = (("deletion_area", "deletion area (lower = more faithful)"),
               ("insertion_area", "insertion area (higher = more faithful)"),
               ("knockout1", "knock-out@1 after M removals"),
               ("flip1_size", "removals to leave first place (flipped users)"),
               ("shift", "recall shift at 10 removals (CI over seeds)"))


def plot_table(summary: list[dict], path: Path) -> None:
    """One grid: a row per dataset, a column per metric; bars per explainer grouped by model, 95 % CIs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in summary)]
    explainers = list(EXPLAIN_ORDER)
    colors = dict(zip(explainers, ("tab:blue", "tab:purple", "tab:green", "tab:orange", "tab:gray")))
    fig = Figure(figsize=(4.2 * len(FIG_METRICS), 3.3 * max(1, len(datasets)) + 0.8))
    FigureCanvasAgg(fig)
    labelled: set = set()
    for i, d in enumerate(datasets):
        rows = [r for r in summary if r["dataset"] == d]
        models = [m for m in MODELS if any(r["model"] == m for r in rows)]
        for j, (key, title) in enumerate(FIG_METRICS):
            ax = fig.add_subplot(len(datasets), len(FIG_METRICS), i * len(FIG_METRICS) + j + 1)
            for g, m in enumerate(models):
                present = [(e, r) for e in explainers for r in rows if r["model"] == m and r["method"] == e
                           and (r.get(key) or {}).get("mean") is not None]
                width = 0.8 / max(1, len(present))
                for k, (e, r) in enumerate(present):
                    v = r[key]
                    x = g - 0.4 + width * (k + 0.5)
                    err = [[v["mean"] - v["lo"] if v.get("lo") is not None else 0],
                           [v["hi"] - v["mean"] if v.get("hi") is not None else 0]]
                    ax.bar([x], [v["mean"]], width, yerr=err, color=colors[e], capsize=1.5,
                           label=None if e in labelled else e)
                    labelled.add(e)
                    if e != "random" and key == "deletion_area" and r["verdict"] != "faithful":
                        ax.annotate("✗", (x, v["mean"]), ha="center", va="bottom", fontsize=9, color="red")
            ax.set_xticks(range(len(models)))
            ax.set_xticklabels([m.replace("lightgcn/history", "lightgcn\nhistory") for m in models], fontsize=7)
            ax.set_title(f"{d}: {title}", fontsize=8)
            ax.tick_params(axis="y", labelsize=7)
    if datasets:
        fig.legend(loc="lower center", ncol=len(explainers), fontsize=9)
    fig.suptitle("faithfulness per recommendation: bars per explainer grouped by model, 95 % CIs over users "
                 "pooled over 3 seeds (recall shift: over seeds); ✗ = not faithful (deletion area not significantly "
                 "below random's, paired Wilcoxon)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path, dpi=110)


def measured_literal(summary: list[dict]) -> str:
    """Lines for :data:`whyrec.explain.MEASURED` (key (method, model key, dataset))."""
    names = {d: n for d, (n, _, _) in DATASETS.items()}
    out = []
    for r in summary:
        if r["method"] == "random" or not r.get("vs_random"):
            continue
        rand = next(x for x in summary if x["dataset"] == r["dataset"] and x["model"] == r["model"]
                    and x["method"] == "random")
        out.append(f"    ({r['method']!r}, {r['model']!r}, {names[r['dataset']]!r}): ({r['deletion_area']['mean']:.3f}, "
                   f"{rand['deletion_area']['mean']:.3f}, {r['vs_random']['p_value']:.1e}, "
                   f"\"{r['dataset']}, {r['n_users']} users, {len(r['seeds'])} seed(s){_seeds_note(r).replace(' seeds)', ' seeds alone)')}, "
                   f"faithfulness table\"),")
    return "\n".join(out)


def accuracy(cells: list[dict]) -> list[dict]:
    """Per (dataset, model): the seeds, mean test Recall@10 / NDCG@10 / Recall@20 and training seconds."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["dataset"], c["model"]), []).append(c)
    out = []
    for (d, m), cs in sorted(groups.items(), key=lambda g: (list(DATASETS).index(g[0][0]), list(MODELS).index(g[0][1]))):
        row = {"dataset": d, "model": m, "seeds": sorted(c["seed"] for c in cs),
               "train_seconds": float(np.mean([c["train"]["seconds"] for c in cs]))}
        for k in ("recall@10", "ndcg@10", "recall@20"):
            row[k] = float(np.mean([c["train"]["test"][k] for c in cs]))
        out.append(row)
    return out


def write_summary(figure: Path = FIGURE) -> list[dict]:
    cells = [json.loads(p.read_text()) for p in sorted(OUT.glob("*_seed*.json"))]
    summary = summarize(cells)
    total = sum(c["train"]["seconds"] + sum(r.get("seconds", 0) for r in c["methods"]) for c in cells)
    doc = {"cells": len(cells), "compute_seconds": total, "machine": machine(), "n_users_per_cell": N_USERS,
           "command": "python benchmarks/faithfulness_table.py", "accuracy": accuracy(cells), "rows": summary}
    (OUT / "summary.json").write_text(json.dumps(_round(doc, 6), indent=1) + "\n")
    if summary:
        plot_table(summary, figure)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default=None, help="dataset:model,... (default: the whole plan, cheap cells first)")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--users", type=int, default=N_USERS)
    ap.add_argument("--work", type=Path, default=Path("/tmp/whyrec_faithfulness_table"))
    ap.add_argument("--summary-only", action="store_true", help="pool the cell JSONs that exist, draw the figure")
    ap.add_argument("--figure", type=Path, default=FIGURE)
    args = ap.parse_args()
    plan = PLAN if args.cells is None else [tuple(c.split(":", 1)) for c in args.cells.split(",")]
    for d, m in plan:
        if d not in DATASETS or m not in MODELS:
            raise SystemExit(f"unknown cell {d}:{m}")
    if not args.summary_only:
        for d, m in plan:
            for s in map(int, args.seeds.split(",")):
                if cell_path(d, m, s).exists() and complete(cell_path(d, m, s), args.work):
                    continue
                t0 = time.time()
                try:
                    run_cell(d, m, s, args.work, args.users)
                except subprocess.CalledProcessError as err:
                    print(f"FAILED {d} {m} {s}: {err.stderr[-2000:]}", flush=True)
                    continue
                print(f"{time.strftime('%H:%M:%S')} {d} {m} seed {s}: {time.time() - t0:.0f} s", flush=True)
    summary = write_summary(args.figure)
    print(markdown(summary))
    for a in json.loads((OUT / "summary.json").read_text())["accuracy"]:
        print(f"accuracy {a['dataset']} {a['model']} seeds {a['seeds']}: Recall@10 {a['recall@10']:.4f} NDCG@10 "
              f"{a['ndcg@10']:.4f} Recall@20 {a['recall@20']:.4f}, training {a['train_seconds']:.0f} s")
    print(measured_literal(summary))


if __name__ == "__main__":
    main()
