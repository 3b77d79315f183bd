"""One error style for every command (framework usage errors included), help without artefacts,
shared defaults, and a CLI that starts without importing torch."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from conftest import ROOT, dataset_dir
from whyrec.cli import app
from whyrec.explain import METHODS

runner = CliRunner()


def one_error(args) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "╭" not in result.output
    return err[0]


@pytest.mark.parametrize("args, expect", [
    (["recommend", "no-such-run", "--user", "1", "--k", "0"], "--k"),
    (["recommend", "no-such-run", "--user", "1", "--k", "abc"], "--k"),
    (["recommend", "no-such-run", "--user", "1", "--bogus"], "--bogus"),
    (["explain", "no-such-run", "--user", "1"], "--method"),
    (["train", "--dataset", "ml-100k"], "--out"),
    (["serve", "no-such-run", "--port", "70000"], "--port"),
    (["data", "info"], "--dataset"),
    (["no-such-command"], "no-such-command"),
    (["evaluate"], "RUN_DIR"),
])
def test_framework_usage_errors_are_one_line_status_1(args, expect):
    assert expect in one_error(args)


def test_evaluate_and_recommend_k_zero_read_alike():
    assert one_error(["evaluate", "no-such-run", "--k", "0"]).startswith("error: ")
    assert "--k" in one_error(["recommend", "no-such-run", "--user", "1", "--k", "0"])


def test_unknown_explain_method_is_unknown_and_lists_the_known_ones():
    msg = one_error(["explain", "no-such-run", "--user", "1", "--method", "bogus"])
    assert "unknown" in msg and "bogus" in msg and "not supported" not in msg
    for m in METHODS:
        assert m in msg


def _commands():
    from typer.main import get_command

    group = get_command(app)
    out = []
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            out += [[name, sub] for sub in cmd.commands]
        else:
            out.append([name])
    return group, out


def test_help_has_no_artefacts_and_explain_lists_every_method():
    _, commands = _commands()
    assert len(commands) >= 9
    for path in [[]] + commands:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        text = result.output
        for artefact in ("{run_dir}", "{RUN_DIR}", "<bool>", "<str>", "<int", "<path>", "<float>"):
            assert artefact not in text, (path, artefact, text)
    text = runner.invoke(app, ["explain", "--help"]).output
    for m in METHODS:
        assert m in text, m
    assert "RUN_DIR" in text


def test_no_arguments_shows_help_with_status_0():
    result = runner.invoke(app, [])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_seed_and_progress_defaults_are_the_same_everywhere():
    group, commands = _commands()
    defaults: dict[str, set] = {"seed": set(), "progress": set()}
    for path in commands:
        cmd = group.commands[path[0]]
        if len(path) > 1:
            cmd = cmd.commands[path[1]]
        for p in cmd.params:
            if p.name in defaults:
                defaults[p.name].add(p.default)
    assert len(defaults["seed"]) == 1, defaults
    assert defaults["progress"] == {True}, defaults


def test_no_progress_still_prints_a_line_per_evaluation(tmp_path):
    result = runner.invoke(app, ["train", "--dataset", "ml-100k", "--data-dir", str(dataset_dir("ml-100k")),
                                 "--out", str(tmp_path / "r"), "--epochs", "3", "--eval-every", "1", "--dim", "8",
                                 "--no-progress", "--threads", "1"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/3", "2/3", "3/3"], result.stderr
    assert all("recall@20" in ln and "loss" in ln for ln in lines)


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_importing_the_cli_does_not_import_torch():
    code = ("import sys, whyrec.cli; heavy = [m for m in ('torch', 'numpy', 'pandas', 'scipy', 'fastapi') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True)
    assert out.stdout.strip() == "", out.stdout


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["recommend", "x", "--k", "0"]])
def test_help_and_flag_errors_answer_in_under_a_second(args):
    # the child's CPU time (user + system), best of three: what a quiet machine's wall time would be;
    # the wall time of a shared machine under load says more about the other jobs than about whyrec
    best = float("inf")
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run([sys.executable, "-m", "whyrec", *args], capture_output=True, text=True, env=_env(),
                             cwd=ROOT)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best = min(best, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        assert "Traceback" not in out.stderr
    assert best < 1.0, best
