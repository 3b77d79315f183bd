"""A commit against the working tree, side by side in one process: a training epoch, a full
evaluation and the service's per-request work, on ML-100K.

    python benchmarks/bench_ab.py --base d925a73            # epoch, evaluate, serve; a few minutes
    python benchmarks/bench_ab.py --base d925a73 --parts serve --rounds 9

``--base REV``'s ``whyrec`` is imported as ``whyrec_base`` next to the working tree's ``whyrec``
(:func:`bench_step_ab.import_revision`). Every measurement alternates the two (base, new, new, base,
... : the order flips every round), so a shared machine's load hits both alike; reported are each
side's median and ``new / base`` of the medians, with the load average before and after.

* ``epoch``: ``whyrec.fit(data, model="lightgcn", epochs=E)`` in memory (the library's whole path:
  split, build, trainer, final evaluation) for ``E = 1`` and ``E = 1 + --epochs``, back to back;
  seconds per epoch = the difference / ``--epochs`` (the fixed costs cancel), median over rounds and
  from each side's fastest fits. Same settings on both sides (dim 64, 3
  layers, batch 2048, lr 5e-3, seed 0), two threads.
* ``evaluate``: ``Run.evaluate(k=[10, 20])`` (full ranking of every test user, training items
  masked) of one run folder, loaded by each side's ``load_run``.
* ``serve``: each side's ``whyrec.serve.app.Service`` over its own load of that run, explanation
  cache off: ``recommend_user`` (``GET /users/{u}/recommendations?k=10``, median over ``--users``
  users), ``recommend_new`` (``POST /recommendations``, three liked titles) and a ``history``
  explanation (``GET /users/{u}/explanations/{i}?method=history``, the user's top item; distinct
  users) — what a request costs behind the HTTP layer, which neither side changed.

Writes ``benchmarks/results/no_slowdown_ab.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
warnings.filterwarnings("ignore")

FIT = {"model": "lightgcn", "split": "user-holdout", "seed": 0, "dim": 64, "layers": 3, "batch_size": 2048,
       "lr": 5e-3, "threads": 2, "progress": False}
LIKED = ["Toy Story (1995)", "Star Wars (1977)", "Fargo (1996)"]
HTTP_EXPLAIN_OPTIONS = {"steps": None, "baseline": None, "top": 10, "genre": None}  # the route's defaults


def interleaved(sides: dict, rounds: int, measure) -> dict:
    """``{side: [seconds, ...]}``: ``measure(side_name, side, round)`` timed, the sides alternating
    (the order flips every round), after one untimed warm-up call of each (``round`` -1)."""
    names = list(sides)
    for n in names:
        measure(n, sides[n], -1)
    times = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            t = time.perf_counter()
            measure(n, sides[n], r)
            times[n].append(time.perf_counter() - t)
    return times


def summary(times: dict, per: int = 1) -> dict:
    med = {n: statistics.median(v) / per for n, v in times.items()}
    return {"median_s": med, "new_over_base": med["new"] / med["base"], "all_s": times}


def bench_epoch(sides, data, args) -> dict:
    """Per round and side: ``fit(epochs=1)`` then ``fit(epochs=1 + E)``, back to back; seconds per
    epoch = their difference / E. Reported: the median over rounds, and the estimate from each side's
    fastest fits (load only ever adds time, so the minimum is the least disturbed)."""
    long_epochs = 1 + args.epochs
    short, long_ = {n: [] for n in sides}, {n: [] for n in sides}

    def measure(n, pkg, r):
        for epochs, into in ((1, short), (long_epochs, long_)):
            t = time.perf_counter()
            pkg.fit(data[n], **{**FIT, "epochs": epochs, "eval_every": long_epochs})
            if r >= 0:
                into[n].append(time.perf_counter() - t)

    interleaved(sides, args.rounds_epoch, measure)
    per_round = {n: [(b - a) / args.epochs for a, b in zip(short[n], long_[n])] for n in sides}
    med = {n: statistics.median(v) for n, v in per_round.items()}
    fastest = {n: (min(long_[n]) - min(short[n])) / args.epochs for n in sides}
    return {"fit_settings": FIT, "extra_epochs": args.epochs, "s_per_epoch": med, "new_over_base": med["new"] / med["base"],
            "s_per_epoch_from_fastest": fastest, "new_over_base_from_fastest": fastest["new"] / fastest["base"],
            "s_per_epoch_per_round": per_round, "fit_1_epoch_s": short, f"fit_{long_epochs}_epochs_s": long_}


def bench_evaluate(runs, args) -> dict:
    return summary(interleaved(runs, args.rounds, lambda n, run, r: run.evaluate(k=[10, 20])))


def bench_serve(sides, runs, args) -> dict:
    services = {n: sides[n].serve.app.Service(runs[n], explain_cache=0) for n in sides}
    users = [str(u) for u in runs["new"].user_ids[: args.users]]
    per_user = interleaved(services, args.rounds,
                           lambda n, s, r: [s.recommend_user(u, 10) for u in users])
    new_user = interleaved(services, args.rounds, lambda n, s, r: [s.recommend_new(LIKED, 10) for _ in range(20)])
    pairs = [(u, str(runs["new"].recommend(user=u, k=1)[0].item)) for u in users[: args.rounds * args.explain]]
    assert len(pairs) == args.rounds * args.explain, "--users must be at least --rounds x --explain"

    def explain(n, s, r):  # the warm-up (r = -1) takes the last round's pairs
        for u, i in pairs[r % args.rounds * args.explain:(r % args.rounds + 1) * args.explain]:
            s._compute(s.explain_key("history", u, i, HTTP_EXPLAIN_OPTIONS))

    why = interleaved(services, args.rounds, explain)
    same = all(services["base"].recommend_user(u, 10)["recommendations"] == services["new"].recommend_user(u, 10)
               ["recommendations"] for u in users[:50])
    return {"recommend_user": summary(per_user, len(users)), "recommend_new": summary(new_user, 20),
            "explain_history": summary(why, args.explain), "same_recommendations": same,
            "users": len(users), "explanations_per_round": args.explain}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="HEAD~1", help="git revision to compare the working tree with")
    ap.add_argument("--data", default=os.environ.get("WHYREC_ML100K", str(ROOT.parent / "shared" / "datasets" / "ml-100k")))
    ap.add_argument("--parts", default="epoch,evaluate,serve")
    ap.add_argument("--rounds", type=int, default=11, help="rounds of evaluate and serve")
    ap.add_argument("--rounds-epoch", type=int, default=7, help="rounds of the two fits")
    ap.add_argument("--epochs", type=int, default=3, help="epochs the long fit adds to the short one")
    ap.add_argument("--users", type=int, default=200, help="users per serve round")
    ap.add_argument("--explain", type=int, default=4, help="explanations per serve round")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "no_slowdown_ab.json"))
    args = ap.parse_args()
    parts = args.parts.split(",")

    import torch

    import whyrec
    from bench_step_ab import import_revision

    torch.set_num_threads(2)
    tmp = tempfile.TemporaryDirectory()
    base = import_revision(args.base, Path(tmp.name))
    importlib_modules = ("data", "api", "run", "serve.app", "recommend")
    import importlib

    for pkg in (base, whyrec):
        for m in importlib_modules:
            importlib.import_module(f"{pkg.__name__}.{m}")
    sides = {"base": base, "new": whyrec}
    data = {n: pkg.load_dataset("ml-100k", args.data) for n, pkg in sides.items()}
    load_start = os.getloadavg()
    started = time.time()
    out = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "base": args.base,
           "base_commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", args.base], capture_output=True,
                                         text=True).stdout.strip(),
           "new": "working tree (" + subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                                    capture_output=True, text=True).stdout.strip() + " + edits)",
           "dataset": "ml-100k", "threads": 2, "rounds": args.rounds}
    if "epoch" in parts:
        out["epoch"] = bench_epoch(sides, data, args)
        print("epoch", json.dumps(out["epoch"]["s_per_epoch"]), f"new/base {out['epoch']['new_over_base']:.3f}",
              f"(fastest fits: {out['epoch']['new_over_base_from_fastest']:.3f})", flush=True)
    if "evaluate" in parts or "serve" in parts:
        folder = Path(tmp.name) / "run"
        whyrec.fit(data["new"], **{**FIT, "epochs": 5, "eval_every": 5}).save(folder)
        runs = {n: pkg.load(folder) for n, pkg in sides.items()}
        if "evaluate" in parts:
            out["evaluate"] = bench_evaluate(runs, args)
            print("evaluate", json.dumps(out["evaluate"]["median_s"]), f"new/base {out['evaluate']['new_over_base']:.3f}",
                  flush=True)
        if "serve" in parts:
            out["serve"] = bench_serve(sides, runs, args)
            for k_ in ("recommend_user", "recommend_new", "explain_history"):
                print(k_, json.dumps(out["serve"][k_]["median_s"]), f"new/base {out['serve'][k_]['new_over_base']:.3f}",
                      flush=True)
    out.update({"seconds": time.time() - started, "load_average_start": load_start, "load_average_end": os.getloadavg(),
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__}})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}; load average {load_start} -> {out['load_average_end']}")


if __name__ == "__main__":
    main()
