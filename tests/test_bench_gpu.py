"""benchmarks/bench_gpu.py's self-check on the CPU (``--device cpu --smoke``): every part runs and
reports, and on one device the CPU-vs-device agreement is exact. The GPU figures need a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import dataset_dir

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_smoke_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--device", "cpu", "--smoke",
                          "--data-dir", str(dataset_dir("ml-100k")), "--epochs", "2", "--repeats", "1",
                          "--agree-epochs", "1", "--out", str(out)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["device"] == "cpu" and r["dataset"] == "ml-100k" and r["smoke"]
    for preset in ("paper", "fast"):
        e = r["epoch_seconds"][preset]
        assert e["epochs"] == 2 and e["median_epoch_s"] > 0
    assert r["epoch_seconds"]["paper"]["batch_size"] < r["epoch_seconds"]["fast"]["batch_size"]
    assert r["full_evaluation"]["users"] > 0 and r["full_evaluation"]["median_s"] > 0
    t = r["time_to_target"]
    assert t["reached"] is not None and t["reached"]["recall@20"] >= t["target_recall@20"] == 0.05
    a = r["agreement"]
    assert a["trained_on_cpu_vs_device"]["max_weight_diff"] == 0.0  # the same device twice: bit for bit
    assert a["one_model_scored_on_device_vs_cpu"]["max_score_diff"] == 0.0
    assert len(r["load_average_before"]) == 3 and "bench_gpu.py" in r["command"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_bench_gpu_refuses_a_missing_cuda_with_one_line():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--device", "cuda", "--smoke"],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert res.stderr.startswith("error: ") and "CUDA is not available" in res.stderr
