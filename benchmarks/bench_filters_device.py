"""The graph filters' scoring before and after it moved wholly into torch (issue 17: ``--device cuda``
on every model), side by side in one process on the CPU, plus the agreement of the two.

Before (``--old``, default ``a768201``): the first product ``R̃ X`` and ``V^T X`` of a block of users
in scipy, the rest in torch on the CPU. After (this tree): every step in torch on the model's device
(:class:`whyrec.models.spectral.Rows`). The old package is extracted with ``git archive`` into a
temporary folder and imported as ``whyrec_old``; both models get the same basis (a random
orthonormal ``V_k``: the SVD is the same code in both and is not what is compared), and are timed
alternately, ``--rounds`` times (best of), on the same users, with one torch thread by default. The
load average before and after is recorded: this machine is shared.

    python benchmarks/bench_filters_device.py --data-dir ../shared/datasets/gowalla --users 1024

Writes ``benchmarks/results/filters_torch_ab.json``.
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

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--dataset", default="gowalla")
    ap.add_argument("--old", default="a768201", help="the commit to compare against")
    ap.add_argument("--users", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "filters_torch_ab.json"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="whyrec_old_"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old, "whyrec"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    (tmp / "whyrec").rename(tmp / "whyrec_old")
    sys.path.insert(0, str(tmp))

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import whyrec_old.models.bspm as O2
    import whyrec_old.models.cheby_cf as O3
    import whyrec_old.models.gf_cf as O1

    import whyrec.models.bspm as N2
    import whyrec.models.cheby_cf as N3
    import whyrec.models.gf_cf as N1
    from whyrec.data import load_dataset
    from whyrec.data.splits import make_split

    data = load_dataset(args.dataset, args.data_dir)
    train, _, _ = make_split(data, "official" if data.official_test is not None else "user-holdout",
                             seed=0).matrices(data)
    load_before = os.getloadavg()
    pairs = {"gf-cf": (O1.GFCF, O1.GFCFConfig, N1.GFCF, N1.GFCFConfig),
             "bspm": (O2.BSPM, O2.BSPMConfig, N2.BSPM, N2.BSPMConfig),
             "cheby-cf": (O3.ChebyCF, O3.ChebyCFConfig, N3.ChebyCF, N3.ChebyCFConfig)}
    rng = np.random.default_rng(0)
    users = torch.from_numpy(rng.choice(train.shape[0], min(args.users, train.shape[0]), replace=False))
    hist = train[users.numpy()[:64]]
    rows = []
    for name, (Oc, Ocfg, Nc, Ncfg) in pairs.items():
        old, new = Oc(train, Ocfg()), Nc(train, Ncfg())
        V = np.linalg.qr(rng.standard_normal((train.shape[1], old.config.rank)))[0].astype(np.float32)
        for m in (old, new):
            m.basis = torch.from_numpy(V.copy())
            m.singular_values = torch.ones(V.shape[1])
            m.invalidate_cache()
            m.score_users(users[:64])  # derived factors built once (BSPM's IDL factor)
        times = {"old": [], "new": []}
        scores = {}
        for r in range(args.rounds):
            order = (("old", old), ("new", new)) if r % 2 == 0 else (("new", new), ("old", old))
            for tag, m in order:
                t0 = time.perf_counter()
                scores[tag] = m.score_users(users)
                times[tag].append(time.perf_counter() - t0)
        timed = {}
        for tag, m in (("old", old), ("new", new)):
            t0 = time.perf_counter()
            h = m.score_histories(hist)
            t1 = time.perf_counter()
            c = m.history_contributions(hist[0].indices, np.arange(train.shape[1]))
            timed[tag] = (t1 - t0, time.perf_counter() - t1, h, c)
        rel = float((scores["old"] - scores["new"]).abs().max() / scores["old"].abs().max())
        row = {"model": name, "users": len(users),
               "score_users_s": {"old": round(min(times["old"]), 3), "new": round(min(times["new"]), 3)},
               "score_users_all_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
               "speedup": round(min(times["old"]) / min(times["new"]), 2),
               "score_histories_64_s": {"old": round(timed["old"][0], 3), "new": round(timed["new"][0], 3)},
               "history_contributions_s": {"old": round(timed["old"][1], 3), "new": round(timed["new"][1], 3)},
               "max_rel_diff_scores": rel,
               "max_abs_diff_histories": float((timed["old"][2] - timed["new"][2]).abs().max()),
               "max_abs_diff_contributions": float((timed["old"][3] - timed["new"][3]).abs().max())}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"what": "graph-filter scoring on the CPU, before (scipy first steps) vs after (all torch)",
           "dataset": args.dataset, "old": args.old, "threads": args.threads, "rounds": args.rounds,
           "torch": torch.__version__, "machine": platform.platform(), "cpus": os.cpu_count(),
           "load_before": load_before, "load_after": os.getloadavg(),
           "command": " ".join(sys.argv), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"| model | users | old s | new s | old/new | max rel diff |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['users']} | {r['score_users_s']['old']} | {r['score_users_s']['new']} | "
              f"{r['speedup']} | {r['max_rel_diff_scores']:.1e} |")
    print(f"load average before {load_before}, after {out['load_after']}")


if __name__ == "__main__":
    main()
