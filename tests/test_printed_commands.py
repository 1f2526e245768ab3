"""The TensorBoard command the example trainers print runs as printed."""

from __future__ import annotations

import importlib.util
import os
import shlex
import stat
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def digits():
    path = os.path.join(ROOT, "example_trainers", "digits.py")
    spec = importlib.util.spec_from_file_location("digits_example_commands", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _fake_env(tmp_path, with_script=True):
    bindir = tmp_path / "env" / "bin"
    bindir.mkdir(parents=True)
    python = bindir / "python"
    python.write_text("")
    if with_script:
        script = bindir / "tensorboard"
        script.write_text("#!/bin/sh\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(python)


def test_the_environments_tensorboard_relative_to_the_current_directory(digits, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", _fake_env(tmp_path))
    monkeypatch.setenv("PATH", os.defpath)
    monkeypatch.chdir(tmp_path)
    assert digits.tensorboard_command("lightning_logs") == "env/bin/tensorboard --logdir lightning_logs"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not under the current directory: the absolute path
    expected = shlex.quote(str(tmp_path / "env" / "bin" / "tensorboard")) + " --logdir 'my logs'"
    assert digits.tensorboard_command("my logs") == expected


def test_plain_tensorboard_when_the_environment_is_activated(digits, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", _fake_env(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "env" / "bin") + os.pathsep + os.defpath)
    assert digits.tensorboard_command("runs") == "tensorboard --logdir runs"


def test_python_m_when_there_is_no_script(digits, tmp_path, monkeypatch):
    python = _fake_env(tmp_path, with_script=False)
    monkeypatch.setattr(sys, "executable", python)
    assert digits.tensorboard_command("runs") == f"{shlex.quote(python)} -m tensorboard.main --logdir runs"


def test_the_printed_command_runs_in_this_environment(digits, tmp_path):
    command = digits.tensorboard_command(str(tmp_path))
    argv = shlex.split(command)
    assert argv[-2:] == ["--logdir", str(tmp_path)]
    proc = subprocess.run(argv[:-2] + ["--version_tb"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (command, proc.stderr)
    assert proc.stdout.strip()[:1].isdigit(), proc.stdout
