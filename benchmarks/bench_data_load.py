"""Time the load of every dataset, side by side with a plain pandas read of the main file.

    python benchmarks/bench_data_load.py [--datasets-dir ../shared/datasets] [--repeat 3]

The reference is the cheapest possible read of the interaction file (pandas' C parser,
no validation, no features) so the ratio says what whyrec's validation, re-indexing and
feature building cost on top.  Results go to benchmarks/results/load.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import pandas as pd

from whyrec.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"ml-100k": "ml-100k", "ml-1m": "ml-1m-sample", "ml-latest-small": "ml-latest-small",
           "gowalla": "gowalla", "lastfm-kg": "lastfm-kg"}


def reference_read(name: str, folder: Path) -> int:
    if name == "ml-100k":
        return len(pd.read_csv(folder / "u.data", sep="\t", header=None))
    if name == "ml-1m":
        text = (folder / "ratings.dat").read_text().replace("::", "\t")
        import io
        return len(pd.read_csv(io.StringIO(text), sep="\t", header=None))
    if name == "ml-latest-small":
        return len(pd.read_csv(folder / "ratings.csv"))
    if name == "gowalla":
        n = 0
        for f in ("train.txt", "test.txt"):
            n += sum(len(line.split()) - 1 for line in open(f"{folder}/{f}"))
        return n
    return len(pd.read_csv(folder / "user_artists.dat", sep="\t"))


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for name, sub in FOLDERS.items():
        folder = args.datasets_dir / sub
        ours = best_of(lambda: load_dataset(name, folder), args.repeat)
        ref = best_of(lambda: reference_read(name, folder), args.repeat)
        n = load_dataset(name, folder).n_interactions
        rows.append({"dataset": name, "interactions": n, "whyrec_s": round(ours, 3),
                     "pandas_raw_read_s": round(ref, 3), "ratio": round(ours / ref, 2)})
        print(f"{name:16s} {n:>9,d}  whyrec {ours:6.3f}s  raw pandas read {ref:6.3f}s  ratio {ours / ref:5.2f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")
    out = ROOT / "benchmarks" / "results" / "load.json"
    out.write_text(json.dumps({"rows": rows, "peak_rss_mib": round(peak)}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
