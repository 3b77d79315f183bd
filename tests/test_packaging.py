"""A real (non-editable) install works: the wheel carries the web page, and `whyrec serve` from it
answers the page and its static files.

CI installs whyrec in editable mode, where the source tree shadows whatever the wheel would hold,
so this test builds the wheel from a copy of the sources, installs it with ``--no-deps --no-index``
into a fresh venv whose only other path is the project venv's site-packages (added by a plain path
line, so the editable install's finder there is never activated), and runs the installed
``whyrec`` console script from a folder outside the source tree, with ``PYTHONPATH`` unset.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, dataset_dir
from whyrec.serve.app import stop_process

STATIC = ("index.html", "app.js", "style.css")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    shutil.copytree(ROOT / "whyrec", src / "whyrec", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(dist), str(src)], check=True, cwd=tmp, env=_clean_env())
    wheel = next(dist.glob("whyrec-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps", "--no-index",
                    str(wheel)], check=True, cwd=tmp, env=_clean_env())
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies (torch, fastapi, ...) from this interpreter's site-packages: a plain path line
    # adds the folder, but does not run the .pth files in it (the editable install's finder)
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_whyrec_test_deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    return {"wheel": wheel, "venv": venv, "python": py, "whyrec": venv / "bin" / "whyrec", "site": site, "tmp": tmp}


def test_wheel_lists_the_page(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for name in STATIC:
        assert f"whyrec/serve/static/{name}" in names, names


def test_installed_package_compiles_its_kernel(installed, tmp_path):
    """The wheel carries the C sources, and the installed package compiles and uses them."""
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for name in ("whyrec/spmm.c", "whyrec/native.c", "whyrec/train/bpr.c", "whyrec/train/sampling.c"):
        assert name in names, names
    if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        pytest.skip("no C compiler here")
    env = {**_clean_env(), "WHYREC_CACHE": str(tmp_path)}
    probe = ("import torch, whyrec.spmm as s; from whyrec.train.bpr_kernel import supports; "
             "from whyrec.train.sampling import _membership; "
             "print(s.available(), supports(torch.zeros(2, 2)), _membership() is not None, s.__file__)")
    out = subprocess.run([str(installed["python"]), "-c", probe], check=True, capture_output=True, text=True,
                         cwd=installed["tmp"], env=env)
    spmm_ok, bpr_ok, sampling_ok, where = out.stdout.split()
    assert spmm_ok == bpr_ok == sampling_ok == "True" and installed["site"].resolve() in Path(where).resolve().parents
    for stem in ("spmm", "bpr", "sampling"):
        assert list((tmp_path / "kernels").glob(f"{stem}-*.so")), stem


def test_installed_package_is_not_the_source_tree(installed):
    out = subprocess.run([str(installed["python"]), "-c", "import whyrec, sys; print(whyrec.__file__)"],
                         check=True, capture_output=True, text=True, cwd=installed["tmp"], env=_clean_env())
    where = Path(out.stdout.strip()).resolve()
    assert installed["site"].resolve() in where.parents, where
    assert ROOT.resolve() not in where.parents


def test_installed_serve_answers_page_and_static_files(installed):
    env = _clean_env()
    run_dir = installed["tmp"] / "run"
    train = subprocess.run([str(installed["whyrec"]), "train", "--dataset", "ml-100k", "--data-dir",
                            str(dataset_dir("ml-100k")), "--out", str(run_dir), "--epochs", "1", "--dim", "8",
                            "--eval-every", "1", "--no-progress", "--threads", "1"],
                           capture_output=True, text=True, cwd=installed["tmp"], env=env, timeout=300)
    assert train.returncode == 0, train.stderr
    port = _free_port()
    server = subprocess.Popen([str(installed["whyrec"]), "serve", str(run_dir), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=installed["tmp"],
                              env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"whyrec serve exited with {server.returncode}: {server.stderr.read()}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("whyrec serve did not answer /health within 120 s")
                time.sleep(0.2)
        for path, name in (("/", "index.html"), ("/static/app.js", "app.js"), ("/static/style.css", "style.css")):
            with urllib.request.urlopen(base + path, timeout=10) as r:
                assert r.status == 200
                assert r.read() == (ROOT / "whyrec" / "serve" / "static" / name).read_bytes(), path
    finally:
        stop_process(server)
