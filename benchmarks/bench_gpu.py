"""GPU figures of issue 17 in one short run: LightGCN on Gowalla on one device.

    python benchmarks/bench_gpu.py --device cuda --data-dir DATA/gowalla        # -> benchmarks/results/gpu_cuda.json
    python benchmarks/bench_gpu.py --device cpu --smoke                          # ML-100K, seconds: a self-check

Measures, on ``--device``:

* **seconds per epoch** of the paper preset (batch 2,048, lr 1e-3) and of the fast preset (batch
  65,536, lr 3e-2 cosine, positives per uniform user; ``benchmarks/gowalla_quality.py``'s presets):
  ``--epochs`` epochs each, without evaluation; the first epoch (warm-up: CUDA kernels, allocator)
  reported apart, the median of the others as the figure;
* **full evaluation**: every test user ranked against every item, training items masked
  (:func:`whyrec.evaluate.evaluate_ranking`), the median of ``--repeats``;
* **time until test Recall@20 ≥ --target** (default 0.18, the paper's 0.1830 minus rounding) with the
  long preset (the fast preset's step over an 800-epoch cosine: the preset that reached 0.18 on the CPU,
  at epoch 570), test evaluated every ``--eval-every`` epochs, wall clock from the first step,
  evaluations included; stopped at the target or after ``--max-seconds``;
* **CPU-vs-device agreement**: the same ``--agree-epochs`` of the fast preset trained on the CPU and on
  the device from the same seed (largest weight difference, Recall@20 of each), and the device-trained
  model evaluated on the device and again on the CPU (largest score difference on 256 users, metric
  differences).

Everything is written to ``benchmarks/results/gpu_<device>[_smoke].json`` with the device's name, torch's
version, the load average before and after and the command. ``--smoke``: ML-100K (``$WHYREC_DATASETS``
or ``--data-dir``), 2 epochs, a 0.05 target and a 60 s budget — a check that the script runs, not a
measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _out import write  # noqa: E402
from gowalla_quality import PRESETS  # noqa: E402
from whyrec.data import load_dataset  # noqa: E402
from whyrec.device import resolve_device  # noqa: E402
from whyrec.evaluate import evaluate_ranking  # noqa: E402
from whyrec.models import LightGCN, LightGCNConfig  # noqa: E402
from whyrec.train.callbacks import Callback  # noqa: E402
from whyrec.train.loop import TrainConfig, fit  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(data_n, train, seed: int, device: torch.device) -> LightGCN:
    torch.manual_seed(seed)  # the same initial weights on every device (made on the CPU, then moved)
    model = LightGCN(*data_n, LightGCNConfig(dim=64, n_layers=3, init_std=0.1), graph=train)
    return model.to(device)


def preset_config(name: str, epochs: int, device, seed: int, **extra) -> TrainConfig:
    values = {k: v for k, v in PRESETS[name].items() if k != "epochs"}
    return TrainConfig(epochs=epochs, seed=seed, device=str(device), **{**values, **extra})


def epoch_seconds(name, data_n, train, args, device) -> dict:
    model = build(data_n, train, args.seed, device)
    hist = fit(model, train, None, preset_config(name, args.epochs, device, args.seed), progress=False, callbacks=[])
    sync(device)
    secs = [float(r["seconds"]) for r in hist.epochs]
    rest = secs[1:] or secs
    return {"epochs": len(secs), "first_epoch_s": round(secs[0], 3), "median_epoch_s": round(statistics.median(rest), 3),
            "all_s": [round(s, 3) for s in secs], "batch_size": PRESETS[name]["batch_size"]}


def eval_seconds(model, train, test, repeats: int, device) -> dict:
    times, res = [], None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        res = evaluate_ranking(model.score_users, train, test, ks=(20,), batch_size=1024)
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(times), 3), "all_s": [round(t, 3) for t in times],
            "users": int(res["n_users"]), "recall@20": res["recall@20"]}


class Target(Callback):
    """Stop once the evaluated Recall@20 reaches ``target`` or ``max_seconds`` have passed."""

    def __init__(self, target: float, max_seconds: float):
        self.target, self.max_seconds, self.t0, self.reached, self.log = target, max_seconds, 0.0, None, []

    def on_begin(self, trainer) -> None:
        self.t0 = time.perf_counter()

    def on_epoch(self, trainer, row: dict) -> None:
        wall = time.perf_counter() - self.t0
        if "recall@20" in row:
            self.log.append({"epoch": row["epoch"], "wall_s": round(wall, 2), "recall@20": row["recall@20"]})
            if self.reached is None and row["recall@20"] >= self.target:
                self.reached = self.log[-1]
                trainer.stop = True
        if wall > self.max_seconds:
            trainer.stop = True


def time_to_target(data_n, train, test, args, device) -> dict:
    model = build(data_n, train, args.seed, device)
    cb = Target(args.target, args.max_seconds)
    epochs = PRESETS["long"]["epochs"]
    fit(model, train, test, preset_config("long", epochs, device, args.seed, eval_every=args.eval_every, ks=(20,),
                                          monitor="recall@20"), progress=False, callbacks=[cb])
    return {"preset": "long", "target_recall@20": args.target, "reached": cb.reached,
            "stopped_after_s": cb.log[-1]["wall_s"] if cb.log else None, "evaluations": cb.log,
            "max_seconds": args.max_seconds}


def agreement(data_n, train, test, args, device) -> dict:
    cpu = torch.device("cpu")
    models = {}
    for where in (cpu, device):
        m = build(data_n, train, args.seed, where)
        fit(m, train, None, preset_config("fast", args.agree_epochs, where, args.seed), progress=False, callbacks=[])
        models[where.type] = m
    on_dev = models[device.type]
    weights = max(float((a.detach().cpu() - b.detach().cpu()).abs().max())
                  for a, b in zip(models["cpu"].parameters(), on_dev.parameters()))
    metrics_dev = evaluate_ranking(on_dev.score_users, train, test, ks=(20,))
    users = torch.arange(min(256, data_n[0]))
    with torch.no_grad():
        s_dev = on_dev.score_users(users).cpu()
        on_dev.to(cpu)
        on_dev.invalidate_cache()
        s_cpu = on_dev.score_users(users)
    metrics_cpu = evaluate_ranking(on_dev.score_users, train, test, ks=(20,))
    trained_cpu = evaluate_ranking(models["cpu"].score_users, train, test, ks=(20,))
    return {"epochs": args.agree_epochs,
            "trained_on_cpu_vs_device": {"max_weight_diff": weights, "recall@20_cpu": trained_cpu["recall@20"],
                                         "recall@20_device": metrics_dev["recall@20"]},
            "one_model_scored_on_device_vs_cpu": {
                "max_score_diff": float((s_dev - s_cpu).abs().max()),
                "metric_diffs": {k: abs(metrics_dev[k] - metrics_cpu[k]) for k in metrics_dev}}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (auto: CUDA if available)")
    ap.add_argument("--data-dir", type=Path, default=None, help="the Gowalla folder (ML-100K's with --smoke)")
    ap.add_argument("--smoke", action="store_true", help="ML-100K, tiny budgets: a check that the script runs")
    ap.add_argument("--epochs", type=int, default=None, help="epochs timed per preset (default 6; smoke 2)")
    ap.add_argument("--repeats", type=int, default=3, help="full evaluations timed")
    ap.add_argument("--target", type=float, default=None, help="test Recall@20 to reach (default 0.18; smoke 0.05)")
    ap.add_argument("--eval-every", type=int, default=None, help="epochs between test evaluations (default 10; smoke 1)")
    ap.add_argument("--max-seconds", type=float, default=None, help="budget of the time-to-target run (default 420; "
                                                                       "smoke 60)")
    ap.add_argument("--agree-epochs", type=int, default=2, help="epochs of the CPU-vs-device training comparison")
    ap.add_argument("--skip", default="", help="comma-separated parts to leave out: epochs,eval,target,agree")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="result file (default benchmarks/results/gpu_<device>.json)")
    args = ap.parse_args()
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    smoke = args.smoke
    args.epochs = args.epochs or (2 if smoke else 6)
    args.target = args.target if args.target is not None else (0.05 if smoke else 0.18)
    args.eval_every = args.eval_every or (1 if smoke else 10)
    args.max_seconds = args.max_seconds or (60.0 if smoke else 420.0)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    load_before = os.getloadavg()

    name = "ml-100k" if smoke else "gowalla"
    data_dir = args.data_dir or (Path(os.environ["WHYREC_DATASETS"]) / name if os.environ.get("WHYREC_DATASETS") else None)
    data = load_dataset(name, data_dir)
    if smoke:
        from whyrec.data.splits import make_split

        split = make_split(data, None, seed=args.seed)
    else:
        from whyrec.data.splits import official_split

        split = official_split(data)
    train, _, test = split.matrices(data)
    data_n = (data.n_users, data.n_items)
    result = {"dataset": name, "smoke": smoke, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
              "n_users": data.n_users, "n_items": data.n_items, "n_train": int(train.nnz), "n_test": int(test.nnz)}
    t_all = time.perf_counter()
    if "epochs" not in skip:
        result["epoch_seconds"] = {p: epoch_seconds(p, data_n, train, args, device) for p in ("paper", "fast")}
        print(json.dumps({"epoch_seconds": result["epoch_seconds"]}), flush=True)
    if "eval" not in skip:
        model = build(data_n, train, args.seed, device).eval()
        result["full_evaluation"] = eval_seconds(model, train, test, args.repeats, device)
        print(json.dumps({"full_evaluation": result["full_evaluation"]}), flush=True)
    if "target" not in skip:
        result["time_to_target"] = time_to_target(data_n, train, test, args, device)
        print(json.dumps({"time_to_target": {k: v for k, v in result["time_to_target"].items() if k != "evaluations"}}),
              flush=True)
    if "agree" not in skip:
        result["agreement"] = agreement(data_n, train, test, args, device)
        print(json.dumps({"agreement": result["agreement"]}), flush=True)
    result.update(total_s=round(time.perf_counter() - t_all, 1), load_average_before=load_before,
                  load_average_after=os.getloadavg(), platform=platform.platform(), cpus=os.cpu_count(),
                  command=" ".join([Path(sys.executable).name, *sys.argv]))
    write(args.out or ROOT / "benchmarks" / "results" / f"gpu_{device.type}{'_smoke' if smoke else ''}.json", result)


if __name__ == "__main__":
    main()
