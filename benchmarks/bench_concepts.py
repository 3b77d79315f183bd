"""Benchmark genre sensitivities S = E_users @ V^T (whyrec.explain.concepts) on ML-1M.

ML-1M here is the sample at ../shared/datasets/ml-1m-sample (users 1..2998 with all their ratings;
the full ratings file is not available offline). With ``--run DIR`` the final embeddings of a
trained run are used; otherwise random 64-d embeddings of the dataset's sizes (timing does not
depend on the values). CAVs are fitted once (timed separately) on the item embeddings for every
genre; then the sensitivity of all users to all genres is timed

* ``whyrec``: :func:`whyrec.explain.concepts.sensitivities` (one matrix product);
* ``naive``: a per-user Python loop computing ``e_u · v_C`` for each genre with ``numpy.dot``
  (the obvious transcription of the seed's formula),

best of ``--repeat`` runs each, results checked equal, ratio printed, JSON written to
``benchmarks/results/concepts.json``.

Usage::

    python benchmarks/bench_concepts.py [--run /tmp/c_ml1m] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "ml-1m-sample"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "concepts.json"


def naive_sensitivities(E_u: np.ndarray, V: np.ndarray) -> np.ndarray:
    out = np.empty((E_u.shape[0], V.shape[0]))
    for u in range(E_u.shape[0]):
        for c in range(V.shape[0]):
            out[u, c] = np.dot(E_u[u], V[c])
    return out


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, res = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return best, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=None, help="Run folder (default: random embeddings).")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    from whyrec.explain.concepts import ConceptActivationVectors, genre_matrix, run_embeddings, select_genres, \
        sensitivities

    if args.run is not None:
        from whyrec.run import load_run

        run = load_run(args.run)
        E_u, E_i = run_embeddings(run)
        genres, source = run.item_genres, f"run {args.run}"
    else:
        from whyrec.data import load_dataset

        data = load_dataset("ml-1m", args.data_dir)
        rng = np.random.default_rng(0)
        E_u, E_i = rng.normal(0, 0.1, (data.n_users, 64)), rng.normal(0, 0.1, (data.n_items, 64))
        genres, source = data.item_genres, "random 64-d embeddings"
    M, names = genre_matrix(genres)
    cols, _ = select_genres(M, names)
    M, names = M[:, cols], [names[j] for j in cols]
    t0 = time.perf_counter()
    cavs = ConceptActivationVectors().fit(E_i, M, names)
    t_cav = time.perf_counter() - t0
    V = cavs.cavs_
    t_fast, S = best_of(lambda: sensitivities(E_u, V), args.repeat)
    t_naive, S_ref = best_of(lambda: naive_sensitivities(E_u, V), max(1, min(args.repeat, 3)))
    assert np.allclose(S, S_ref), "whyrec and naive sensitivities differ"
    result = {
        "benchmark": "concept sensitivities, all users x all genres",
        "source": source,
        "dataset": "ml-1m (sample: users 1..2998)",
        "n_users": int(E_u.shape[0]), "n_items": int(E_i.shape[0]), "dim": int(E_u.shape[1]),
        "n_genres": len(names),
        "cav_fit_seconds_all_genres": round(t_cav, 4),
        "whyrec_seconds": t_fast,
        "naive_loop_seconds": t_naive,
        "speedup": t_naive / t_fast if t_fast > 0 else None,
        "target_seconds": 1.0,
        "meets_target": t_fast < 1.0,
        "repeat": args.repeat,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "numpy": np.__version__,
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['n_users']:,} users x {len(names)} genres ({source})")
    print(f"  CAV fit (all genres):   {t_cav:8.3f} s")
    print(f"  whyrec (one product):   {t_fast * 1e3:8.3f} ms")
    print(f"  naive per-user loop:    {t_naive * 1e3:8.1f} ms")
    print(f"  ratio naive / whyrec:   {t_naive / t_fast:8.0f}x   -> {args.out}")


if __name__ == "__main__":
    main()
