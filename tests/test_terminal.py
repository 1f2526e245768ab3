"""The terminal: one line per validation epoch from the gate under the progress bar, one line at the end
of ``fit`` (the gate's report, the TensorBoard command), nothing without a progress bar."""

from __future__ import annotations

import json
import os
import re
import shlex

import pytest

from lightning_xai import checks
from lightning_xai.callbacks import AttributionMonitor, SanityGate, tensorboard_command

from .fixtures import trainer
from .helpers_gate import Scripted, TinyClassifier, tiny_loaders, tiny_probe


def _fit(tmp_path, values, progress_bar=True, **gate_kwargs):  # type: ignore[no-untyped-def]
    probe = tiny_probe()
    gate = SanityGate(
        probe,
        [checks.Custom(Scripted(values), name="scripted", max_value=0.5), checks.Finite()],
        **gate_kwargs,
    )
    monitor = AttributionMonitor(probe, methods=["saliency"], log_images=False, text_summary=False)
    tr = trainer(tmp_path, [monitor, gate], max_epochs=3, enable_progress_bar=progress_bar)
    tr.fit(TinyClassifier(), *tiny_loaders())
    return tr, gate


def _lines(out: str):  # type: ignore[no-untyped-def]
    # the bar redraws with carriage returns and cursor moves: keep whole lines that start with "xai"
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out).replace("\r", "\n")
    return [line.strip() for line in text.splitlines() if line.strip().startswith("xai")]


def test_one_line_per_epoch_then_the_report_and_the_tensorboard_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tr, gate = _fit(tmp_path, [0.1, 0.9, 0.2], patience=1)
    lines = _lines(capsys.readouterr().out)
    assert lines[:3] == [
        "xai epoch 0: gate passed (2 checks)",
        "xai epoch 1: gate FAILED (1 in a row, patience 1): scripted = 0.9 > max 0.5",
        "xai epoch 2: gate passed (2 checks)",
    ], lines
    assert len(lines) == 4, lines
    log_dir = os.path.relpath(tr.logger.log_dir)
    report = os.path.relpath(gate.report_path)
    assert lines[3] == f"xai: gate report {report}; view the run: {tensorboard_command(log_dir)}"
    argv = shlex.split(lines[3].split("view the run: ", 1)[1])
    assert argv[-2:] == ["--logdir", log_dir] and os.path.isdir(argv[-1])


def test_the_line_says_when_the_gate_stops_training(tmp_path, capsys):
    _fit(tmp_path, [0.9], patience=0)
    lines = _lines(capsys.readouterr().out)
    assert lines[0] == "xai epoch 0: gate FAILED, stopping training: scripted = 0.9 > max 0.5", lines
    assert len(lines) == 2 and lines[1].startswith("xai: gate report "), lines


def test_silent_without_a_progress_bar_or_with_verbose_false(tmp_path, capsys):
    _fit(tmp_path / "a", [0.1, 0.9], progress_bar=False, patience=5)
    assert _lines(capsys.readouterr().out) == []
    _fit(tmp_path / "b", [0.1, 0.9], patience=5, verbose=False)
    lines = _lines(capsys.readouterr().out)
    assert len(lines) == 1 and lines[0].startswith("xai: gate report "), lines  # the fit's last line stays


def test_the_report_and_the_results_carry_the_bound(tmp_path):
    _, gate = _fit(tmp_path, [0.1, 0.9, 0.2], progress_bar=False, patience=5)
    scripted, finite = gate.last_results
    assert (scripted.bound, scripted.direction) == (0.5, "max")
    assert (finite.bound, finite.direction) == (None, None)
    with open(gate.report_path) as f:
        entry = json.load(f)[1]["checks"]
    assert entry[0]["bound"] == 0.5 and entry[0]["direction"] == "max" and entry[0]["value"] == 0.9
    assert entry[1]["bound"] is None and entry[1]["direction"] is None


@pytest.mark.parametrize("direction", ["min", "max"])
def test_at_least_and_at_most_set_bound_and_direction(direction):
    check = checks.Custom(lambda ctx: 0.3, name="c", **{f"{direction}_value": 0.5})
    result = check._bounded(0.3, 0.5, direction, "test", {})
    assert (result.bound, result.direction, result.passed) == (0.5, direction, direction == "max")
    assert result.to_dict()["bound"] == 0.5 and result.to_dict()["direction"] == direction
    assert check.name == "c"
