"""`whyrec demo`: a good model on ML-100K, a user's top 10 with "because you liked …", then the page."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import ROOT, cli_fails, cli_ok, dataset_dir
from whyrec.serve.app import stop_process

ML100K = str(dataset_dir("ml-100k"))


def test_demo_prints_a_top_10_with_reasons(tmp_path, monkeypatch):
    monkeypatch.setenv("WHYREC_CACHE", str(tmp_path / "cache"))
    for _ in range(2):  # the demo's own cached run is replaced the second time, without asking
        out = cli_ok(["demo", "--data-dir", ML100K, "--model", "gf-cf", "--no-serve", "--no-progress"]).stdout
    assert "top 10 for user 1:" in out and "Recall@20" in out
    lines = out.splitlines()
    start = lines.index("top 10 for user 1:")
    assert sum(line.strip().startswith("Because you liked") for line in lines[start:]) == 10
    assert (tmp_path / "cache" / "demo" / "gf-cf" / "manifest.json").is_file()


def test_demo_never_replaces_a_folder_you_named(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    cli_fails(["demo", "--data-dir", ML100K, "--model", "gf-cf", "--no-serve", "--no-progress",
               "--out", tmp_path / "mine"], "already exists")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    cli_fails(["demo", "--model", "lightgcn", "--no-serve"], "--model must be one of")


def test_demo_serves_the_page(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WHYREC_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "whyrec", "demo", "--data-dir", ML100K, "--model", "gf-cf",
                             "--no-progress", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.time() < deadline, "the demo's server did not come up"
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
    finally:
        stop_process(proc)
