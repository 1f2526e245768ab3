"""SanityGate in a real Trainer: decisions, actions, logging, report, checkpoint state, errors."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from .fixtures import trainer as make_trainer
from .helpers_gate import (
    DeadReLUMonitor,
    FeatureDriftMonitor,
    Scripted,
    TinyClassifier,
    tiny_loaders,
    tiny_probe,
)
from lightning_xai import ProbeSet, SanityCheckError, checks
from lightning_xai.callbacks import AttributionMonitor, GateReason, SanityGate
from lightning_xai.callbacks._cache import cache_for

GATE_TRAINER = dict(logger=False, deterministic=None)  # no logger unless a test passes one


def fit(callbacks, max_epochs, tmp_path, model=None, **kw):  # type: ignore[no-untyped-def]
    trainer = make_trainer(tmp_path, callbacks, max_epochs, **{**GATE_TRAINER, **kw})
    train, val = tiny_loaders()
    trainer.fit(model or TinyClassifier(), train, val)
    return trainer


def scripted_gate(values, tmp_path, **kw) -> SanityGate:  # type: ignore[no-untyped-def]
    kw.setdefault("report_dir", str(tmp_path))
    return SanityGate(tiny_probe(), [checks.Custom(Scripted(values), "scripted", max_value=0.5)], verbose=False, **kw)


# ------------------------------------------------------------------------------------------------ decisions
# values per epoch (> 0.5 fails), patience, warmup_epochs, every_n_epochs, expected stop epoch (None: ran all)
DECISIONS = [
    ([0, 0, 1, 0, 0, 0], 0, 0, 1, 2),
    ([0, 0, 0, 0, 0, 0], 0, 0, 1, None),
    ([1, 1, 1, 1, 1, 1], 0, 2, 1, 2),  # warm-up failures do not count
    ([1, 1, 1, 1, 1, 1], 0, 6, 1, None),
    ([0, 1, 0, 1, 1, 1], 1, 0, 1, 4),  # a pass resets the count
    ([1, 1, 1, 0, 0, 0], 2, 0, 1, 2),  # patience 2: the third failure in a row stops
    ([1, 1, 0, 1, 1, 0], 2, 0, 1, None),
    ([1, 1, 1, 1, 1, 1], 1, 0, 2, 3),  # evaluated at epochs 1 and 3 only: patience counts evaluations
    ([0, 1, 0, 0, 0, 0], 0, 0, 2, 1),
    ([0, 0, 1, 0, 0, 0], 0, 0, 2, None),  # the failing epoch is never evaluated
]


@pytest.mark.parametrize("values,patience,warmup,every,stop", DECISIONS)
def test_gate_decisions(values, patience, warmup, every, stop, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gate = scripted_gate(values, tmp_path, patience=patience, warmup_epochs=warmup, every_n_epochs=every)
    trainer = fit([gate], len(values), tmp_path)
    fn = gate.checks[0].fn
    if stop is None:
        assert trainer.current_epoch == len(values)
        assert gate.stopping_reason is GateReason.NOT_STOPPED and gate.stopping_reason_message is None
    else:
        assert gate.stopped_epoch == stop
        assert trainer.current_epoch == stop + 1  # the stopping epoch completes, no more
        assert gate.stopping_reason is GateReason.CHECKS_FAILED
        assert f"epoch {stop}" in gate.stopping_reason_message and "scripted = 1 > max 0.5" in gate.stopping_reason_message
    last = trainer.current_epoch - 1
    assert fn.calls == [e for e in range(last + 1) if (e + 1) % every == 0]
    assert [e["epoch"] for e in gate.report] == fn.calls


def test_action_raise_raises_sanity_check_error_naming_the_check(tmp_path) -> None:  # type: ignore[no-untyped-def]
    gate = scripted_gate([0, 1, 1], tmp_path, action="raise", patience=0)
    with pytest.raises(SanityCheckError, match=r"epoch 1: 1 of 1 explanation check\(s\) failed.*scripted = 1 > max 0.5"):
        fit([gate], 3, tmp_path)
    assert gate.stopped_epoch == 1 and gate.stopping_reason is GateReason.CHECKS_FAILED


def test_action_warn_warns_and_trains_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    gate = scripted_gate([0, 1, 1, 1], tmp_path, action="warn")
    with pytest.warns(UserWarning, match="scripted = 1 > max 0.5"):
        trainer = fit([gate], 4, tmp_path)
    assert trainer.current_epoch == 4
    assert [e["decision"] for e in gate.report] == ["pass", "warn", "warn", "warn"]


def test_a_check_that_raises_fails_the_gate_with_its_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def broken(ctx):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    gate = SanityGate(tiny_probe(), [checks.Custom(broken, "broken")], verbose=False, report_dir=str(tmp_path))
    fit([gate], 3, tmp_path)
    assert gate.stopped_epoch == 0 and gate.stopping_reason is GateReason.CHECK_ERROR
    assert "broken raised RuntimeError: boom" in gate.stopping_reason_message


def test_nan_value_stops_with_non_finite_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    gate = scripted_gate([float("nan")], tmp_path)
    fit([gate], 3, tmp_path)
    assert gate.stopped_epoch == 0 and gate.stopping_reason is GateReason.NON_FINITE
    assert "scripted is NaN" in gate.stopping_reason_message


# ------------------------------------------------------------------------------------------------ when it runs
def test_skipped_in_sanity_check_fast_dev_run_and_validate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    gate = scripted_gate([1, 1, 1], tmp_path)
    trainer = fit([gate], 2, tmp_path, num_sanity_val_steps=2)
    assert gate.checks[0].fn.calls == [0]  # not in the sanity check; stopped after epoch 0

    gate = scripted_gate([1, 1, 1], tmp_path)
    fit([gate], 2, tmp_path, fast_dev_run=True)
    assert gate.checks[0].fn.calls == []

    gate = scripted_gate([1, 1, 1], tmp_path)
    trainer = make_trainer(tmp_path, [gate], 1, **GATE_TRAINER)
    trainer.validate(TinyClassifier(), tiny_loaders()[1], verbose=False)
    assert gate.checks[0].fn.calls == [] and not trainer.should_stop


# ------------------------------------------------------------------------------------------------ logging and report
def test_logs_check_values_and_gate_passed_to_tensorboard(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = tiny_probe()
    gate = SanityGate(
        ProbeSet(base.inputs, base.targets, masks=torch.ones(len(base), 4, 4)),
        [checks.Custom(Scripted([0.2, 0.9, 0.1]), "scripted", max_value=0.5), checks.RelevanceMass("saliency", min_mass=0.5)],
        action="warn", verbose=False,
    )
    logger = TensorBoardLogger(str(tmp_path), name="run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = fit([gate], 3, tmp_path, logger=logger)
    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert {"xai/check/scripted", "xai/check/relevance_mass/saliency", "xai/gate/passed"} <= set(scalars)
    passed = [(e.step, e.value) for e in acc.Scalars("xai/gate/passed")]
    assert [v for _, v in passed] == [1.0, 0.0, 1.0]
    assert [s for s, _ in passed] == [3, 6, 9]  # global step of each validation epoch
    assert [round(e.value, 6) for e in acc.Scalars("xai/check/scripted")] == [0.2, 0.9, 0.1]
    # all masks are ones: all the mass is inside
    assert [e.value for e in acc.Scalars("xai/check/relevance_mass/saliency")] == pytest.approx([1.0] * 3)
    assert float(trainer.callback_metrics["xai/gate/passed"]) == 1.0

    # the JSON report lies in the run's log directory, one entry per epoch
    path = os.path.join(logger.log_dir, SanityGate.REPORT_NAME)
    assert gate.report_path == path
    with open(path) as f:
        report = json.load(f)
    assert [e["epoch"] for e in report] == [0, 1, 2]
    assert [e["passed"] for e in report] == [True, False, True]
    assert [e["decision"] for e in report] == ["pass", "warn", "pass"]
    second = {c["name"]: c for c in report[1]["checks"]}
    assert second["scripted"]["value"] == pytest.approx(0.9) and not second["scripted"]["passed"]
    assert second["scripted"]["reason"] == "scripted = 0.9 > max 0.5 (custom)"
    assert second["relevance_mass/saliency"]["passed"]


def test_report_without_logger_only_where_a_directory_is_given(tmp_path) -> None:  # type: ignore[no-untyped-def]
    gate = SanityGate(tiny_probe(), [checks.Finite()], verbose=False)
    fit([gate], 2, tmp_path)  # logger=False: the user asked for no files
    assert not os.path.exists(os.path.join(str(tmp_path), SanityGate.REPORT_NAME)) and gate.report_path is None
    assert [e["checks"][0]["name"] for e in gate.report] == ["finite", "finite"]
    gate = SanityGate(tiny_probe(), [checks.Finite()], verbose=False, report_dir=tmp_path / "reports")
    fit([gate], 2, tmp_path)
    with open(os.path.join(str(tmp_path), "reports", SanityGate.REPORT_NAME)) as f:
        assert [e["checks"][0]["name"] for e in json.load(f)] == ["finite", "finite"]


def test_shares_attributions_with_attribution_monitor(tmp_path) -> None:  # type: ignore[no-untyped-def]
    probe = tiny_probe()
    probe = ProbeSet(probe.inputs, probe.targets, masks=torch.ones(len(probe), 4, 4))
    monitor = AttributionMonitor(probe, methods=["saliency"], log_images=False)
    gate = SanityGate(probe, [checks.RelevanceMass("saliency", 0.5), checks.SpuriousRegion(torch.ones(4, 4), "saliency", 1.0)], verbose=False)
    trainer = fit([monitor, gate], 3, tmp_path)
    assert cache_for(trainer).computed["saliency"] == 3  # one per epoch for both callbacks and both checks


def test_observing_does_not_perturb_training(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def run(with_gate: bool) -> dict:
        pl.seed_everything(0)
        model = TinyClassifier()
        probe = tiny_probe()
        cbs = []
        if with_gate:
            cbs = [
                SanityGate(
                    probe,
                    [
                        checks.ParameterRandomization("saliency", max_similarity=1.0),
                        checks.RandomLogit("saliency", max_similarity=1.0),
                        checks.Completeness(max_error=10.0, n_steps=8),
                        checks.Finite(),
                    ],
                    verbose=False,
                )
            ]
        fit(cbs, 3, tmp_path, model=model)
        return {k: v.clone() for k, v in model.state_dict().items()}

    a, b = run(True), run(False)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------ checkpoints
def test_resume_keeps_the_patience_counter(tmp_path) -> None:  # type: ignore[no-untyped-def]
    values = [0, 1, 1, 1, 1, 1, 1]
    gate = scripted_gate(values, tmp_path, patience=2)
    trainer = fit([gate], 3, tmp_path)  # epochs 1, 2 fail: two in a row, within patience
    assert gate.wait_count == 2 and gate.stopping_reason is GateReason.NOT_STOPPED
    ckpt = os.path.join(str(tmp_path), "mid.ckpt")
    trainer.save_checkpoint(ckpt)

    resumed = scripted_gate(values, tmp_path, patience=2)
    trainer = make_trainer(tmp_path, [resumed], 7, **GATE_TRAINER)
    train, val = tiny_loaders()
    trainer.fit(TinyClassifier(), train, val, ckpt_path=ckpt)
    # the third failure in a row is epoch 3; a gate that forgot the count would run to epoch 5
    assert resumed.stopped_epoch == 3 and trainer.current_epoch == 4
    assert [e["epoch"] for e in resumed.report] == [0, 1, 2, 3]
    assert resumed.checks[0].fn.calls == [3]

    state = resumed.state_dict()
    fresh = scripted_gate(values, tmp_path, patience=2)
    fresh.load_state_dict(state)
    assert (fresh.wait_count, fresh.stopped_epoch, fresh.stopping_reason) == (3, 3, GateReason.CHECKS_FAILED)


def test_guard_metric_keeps_failing_epochs_out_of_best(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # val/loss falls every epoch; the gate fails at epochs 2 and 3 (warn: training goes on)
    gate = scripted_gate([0, 0, 1, 1], tmp_path, action="warn", guard_metric="val/loss")
    best = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="xai/gate/val/loss", mode="min", save_top_k=1, filename="{epoch}")
    plain = ModelCheckpoint(dirpath=str(tmp_path / "plain"), monitor="val/loss", mode="min", save_top_k=1, filename="{epoch}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = fit([gate, best, plain], 4, tmp_path, enable_checkpointing=True)
    assert os.path.basename(plain.best_model_path) == "epoch=3.ckpt"  # the lowest loss: a failing epoch
    assert os.path.basename(best.best_model_path) == "epoch=1.ckpt"  # the lowest loss among passing epochs
    assert float(trainer.callback_metrics["xai/gate/val/loss"]) == float("inf")


# ------------------------------------------------------------------------------------------------ monitor values and order
def test_dead_units_and_drift_read_monitors_placed_before_the_gate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    dead = DeadReLUMonitor({"xai/dead_relu/all": [0.1, 0.2, 0.7, 0.8]})
    drift = FeatureDriftMonitor({"xai/drift/saliency/spearman/prev": [0.9, 0.9, 0.9, 0.9]})
    gate = SanityGate(
        tiny_probe(), [checks.DeadUnits(max_fraction=0.5), checks.Drift("spearman", 0.5, against="prev")],
        patience=1, verbose=False, report_dir=str(tmp_path),
    )
    fit([dead, drift, gate], 4, tmp_path)
    assert gate.stopped_epoch == 3
    assert "dead_units = 0.8 > max 0.5 (fraction of dead ReLU units, all layers)" in gate.stopping_reason_message
    assert [e["checks"][1]["passed"] for e in gate.report] == [True] * 4


def test_monitor_after_the_gate_is_a_setup_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    gate = SanityGate(tiny_probe(), [checks.DeadUnits(0.5)], verbose=False)
    with pytest.raises(ValueError, match="DeadReLUMonitor comes after SanityGate.*put DeadReLUMonitor before SanityGate"):
        fit([gate, DeadReLUMonitor({})], 1, tmp_path)
    gate = SanityGate(tiny_probe(), [checks.Drift("spearman", 0.5)], verbose=False)
    with pytest.warns(UserWarning, match="no FeatureDriftMonitor comes before SanityGate"):
        fit([gate], 1, tmp_path)
    assert "not in trainer.callback_metrics" in gate.report[0]["checks"][0]["reason"]
    assert gate.stopping_reason is GateReason.NON_FINITE  # missing value: NaN, failed, never a silent pass


# ------------------------------------------------------------------------------------------------ errors
def test_probe_dependent_errors_come_at_setup_before_training(tmp_path) -> None:  # type: ignore[no-untyped-def]
    gate = SanityGate(tiny_probe(), [checks.RelevanceMass("saliency", 0.5)])
    model = TinyClassifier()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="relevance_mass/saliency needs ground-truth masks in the probe"):
        fit([gate], 1, tmp_path, model=model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    gate = SanityGate(tiny_probe(), [checks.SpuriousRegion(torch.ones(8, 8), "saliency")])
    with pytest.raises(ValueError, match="does not broadcast to one probe sample of shape \\(1, 4, 4\\)"):
        fit([gate], 1, tmp_path)


def test_bad_arguments(tmp_path) -> None:  # type: ignore[no-untyped-def]
    probe = tiny_probe()
    ok = [checks.Finite()]
    with pytest.raises(ValueError, match="action must be one of 'stop', 'raise', 'warn'"):
        SanityGate(probe, ok, action="halt")
    with pytest.raises(ValueError, match="patience must be an int >= 0"):
        SanityGate(probe, ok, patience=-1)
    with pytest.raises(ValueError, match="warmup_epochs must be an int >= 0"):
        SanityGate(probe, ok, warmup_epochs=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no checks given"):
        SanityGate(probe, [])
    with pytest.raises(TypeError, match="is not a check.*checks.Custom"):
        SanityGate(probe, [lambda ctx: True])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="needs a probe"):
        SanityGate(None, ok)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="guard_mode must be 'min' or 'max'"):
        SanityGate(probe, ok, guard_mode="lowest")
    with pytest.raises(ValueError, match="every_n_epochs must be an int >= 1"):
        SanityGate(probe, ok, every_n_epochs=0)
    with pytest.raises(ValueError, match="two checks are named"):
        SanityGate(probe, [checks.Finite(), checks.Finite()])


def test_a_value_the_monitor_did_not_update_is_not_read_as_fresh(tmp_path) -> None:  # type: ignore[no-untyped-def]
    class EveryOther(DeadReLUMonitor):
        def on_validation_epoch_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
            if trainer.current_epoch % 2 == 0:
                super().on_validation_epoch_end(trainer, pl_module)

    monitor = EveryOther({"xai/dead_relu/all": [0.1]})
    gate = SanityGate(
        tiny_probe(), [checks.DeadUnits(0.5, missing="skip")], action="warn", verbose=False, report_dir=str(tmp_path)
    )
    fit([monitor, gate], 4, tmp_path)
    dead = [e["checks"][0] for e in gate.report]
    assert [c["skipped"] for c in dead] == [False, True, False, True]
    assert "was not updated this epoch" in dead[1]["reason"]
    assert [e["passed"] for e in gate.report] == [True] * 4
    assert dead[0]["value"] == pytest.approx(0.1)


def test_shortcut_example_is_stopped_and_clean_run_passes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_trainers", "shortcut.py")
    spec = importlib.util.spec_from_file_location("shortcut_example", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shortcut = module.main(["--logdir", str(tmp_path / "logs")])
        clean = module.main(["--clean", "--epochs", "3", "--logdir", str(tmp_path / "logs")])
    assert shortcut["stopped"] and shortcut["stopped_epoch"] == 2
    assert "spurious_region/saliency" in shortcut["message"]
    corner = [e["checks"][0]["value"] for e in shortcut["report"]]
    assert all(v > 0.08 for v in corner)  # the model reads the watermark corner
    assert not clean["stopped"] and clean["epochs_run"] == 3
    assert all(e["passed"] for e in clean["report"])
    assert all(e["checks"][0]["value"] < 0.06 for e in clean["report"])
