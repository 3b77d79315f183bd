"""Faithfulness on Last.fm over several trained models: the seed's yardstick averaged over seeds.

One trained model gives one noisy reading (the recall shift depends on which recommendations were
hits); this trains the model once per ``--seeds`` value (split and initialisation both follow the
seed), runs ``whyrec faithfulness`` for every method on each, and reports per method and ``m`` the
mean and spread over the models of ``shift`` and ``top10_kept``, with a figure.

    python benchmarks/faithfulness_seeds.py --model resolved --seeds 2020,2021,2022 \\
        --opt lr=1e-2 --opt input_dropout=0.5 --opt anneal_epochs=5 --opt epochs=60 --opt eval_every=5
    python benchmarks/faithfulness_seeds.py --from-json benchmarks/results/faithfulness_lastfm/resolved_seed*.json

Writes ``benchmarks/results/faithfulness_lastfm/<model>_summary.json`` and
``docs/figures/faithfulness_lastfm_seeds.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "faithfulness_lastfm"


def whyrec(*args: str) -> str:
    cmd = [sys.executable, "-c", "from whyrec.cli import main; main()", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout


def run_seed(model: str, seed: int, opts: list[str], methods: str, work: Path) -> dict:
    run_dir = work / f"{model}_seed{seed}"
    train = ["train", "--dataset", "lastfm-kg", "--data-dir", str(ROOT.parent / "shared" / "datasets" / "lastfm-kg"),
             "--k", "2,10,50,100", "--seed", str(seed), "--model", model, "--out", str(run_dir), "--overwrite",
             "--threads", "1", "--no-progress"]
    for o in opts:
        train += ["--opt", o]
    whyrec(*train)
    out = json.loads(whyrec("faithfulness", str(run_dir), "--method", methods, "--remove", "1,2,5,10", "--runs", "5",
                            "--json"))
    (OUT / f"{model}_seed{seed}.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def summarize(per_seed: list[dict]) -> list[dict]:
    """Per method: ``results`` with ``shift``/``top10_kept`` = mean over the models, ``std``/
    ``top10_kept_std`` = their standard deviation, and each model's values."""
    methods: dict[str, list[dict]] = {}
    for doc in per_seed:
        for res in doc.get("methods", [doc]):
            methods.setdefault(res["method"], []).append(res)
    out = []
    for method, runs in methods.items():
        rows = []
        for i, r0 in enumerate(runs[0]["results"]):
            shifts = np.array([r["results"][i]["shift"] for r in runs])
            kept = np.array([r["results"][i]["top10_kept"] for r in runs])
            rows.append({"removed": r0["removed"], "shift": float(shifts.mean()), "std": float(shifts.std()),
                         "top10_kept": float(kept.mean()), "top10_kept_std": float(kept.std()),
                         "per_model_shift": shifts.round(4).tolist(), "per_model_top10_kept": kept.round(4).tolist()})
        out.append({"method": method, "model": runs[0].get("model"), "n_models": len(runs), "results": rows})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resolved")
    ap.add_argument("--seeds", default="2020,2021,2022")
    ap.add_argument("--opt", action="append", default=[])
    ap.add_argument("--methods", default="intrinsic,random,paths")
    ap.add_argument("--work", type=Path, default=Path("/tmp/whyrec_faithfulness"))
    ap.add_argument("--from-json", nargs="*", type=Path, help="summarize these faithfulness JSONs instead")
    ap.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "faithfulness_lastfm_seeds.png")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        per_seed = [json.loads(p.read_text()) for p in args.from_json]
    else:
        per_seed = [run_seed(args.model, int(s), args.opt, args.methods, args.work) for s in args.seeds.split(",")]
    summary = summarize(per_seed)
    model = summary[0]["model"] if summary else args.model
    (OUT / f"{model}_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    from whyrec.explain.faithfulness import plot_many

    plot_many(summary, args.figure, title=f"faithfulness, {model} on Last.fm: mean ± std over "
                                          f"{summary[0]['n_models']} trained models")
    for res in summary:
        print(res["method"], [(r["removed"], round(r["shift"], 3), round(r["top10_kept"], 3)) for r in res["results"]])
    print(f"wrote {OUT / f'{model}_summary.json'} and {args.figure}")


if __name__ == "__main__":
    main()
