"""The run a user configured is the run they get, in every loop shape Lightning offers.

A matrix over Trainer settings (in the spirit of Lightning's own callback tests), each run with the
whole suite and without it: the callbacks run when the schedule says, and training is the same,
weights, buffers and RNG, with and without them. Then one test per failure seen in everyday use.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from lightning_xai import ProbeSet, checks
from lightning_xai import functional as F
from lightning_xai.callbacks import AttributionMonitor, DeadReLUMonitor, FeatureDriftMonitor, SanityGate

from .fixtures import LitClassifier, RecordingLogger, SmallCNN, image_data, read_events, trainer

DATA = image_data(64)


def _probe(n: int = 8) -> ProbeSet:
    return ProbeSet.from_dataset(DATA, n=n, seed=0)


def _suite(every: int = 1) -> List[Any]:
    probe = _probe()
    return [
        AttributionMonitor(probe, methods=["saliency", "grad_cam"], log_images=False, every_n_epochs=every),
        FeatureDriftMonitor(probe, method="saliency", metrics=["spearman"], every_n_epochs=every),
        DeadReLUMonitor(probe, every_n_epochs=every),
        SanityGate(probe, [checks.Drift("spearman", min_value=-1.0, method="saliency", against="prev"),
                           checks.Finite()], every_n_epochs=every, verbose=False),
    ]


class Counting(LitClassifier):
    """Counts its validation runs (not the sanity check) to compare with the callbacks' schedule."""

    def __init__(self) -> None:
        super().__init__(SmallCNN())  # BatchNorm buffers and Dropout: training uses the global RNG
        self.validations = 0

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self.validations += 1

    def test_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        pass

    def predict_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        return self(batch[0])


def _run(tmp_path, callbacks: List[Any], **kw: Any) -> Dict[str, Any]:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = Counting()
    tr = trainer(tmp_path, callbacks, **{"max_epochs": 4, **kw})
    tr.fit(model, DataLoader(DATA, batch_size=8), DataLoader(DATA, batch_size=32))
    return {"trainer": tr, "model": model, "state": {k: v.clone() for k, v in model.state_dict().items()},
            "rng": torch.get_rng_state()}


SHAPES = {
    "plain": {},
    "val_check_interval": {"val_check_interval": 0.5},
    "check_val_every_n_epoch": {"check_val_every_n_epoch": 2},
    "max_steps": {"max_steps": 20, "max_epochs": -1},
    "accumulate_grad_batches": {"accumulate_grad_batches": 2},
    "limit_val_batches": {"limit_val_batches": 1},
    "inference_mode_off": {"inference_mode": False},
    "sanity_check": {"num_sanity_val_steps": 2},
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_loop_shape_runs_on_schedule_and_never_perturbs(tmp_path, shape) -> None:  # type: ignore[no-untyped-def]
    plain = _run(tmp_path / "plain", [], **SHAPES[shape])
    suite = _suite(every=2)
    watched = _run(tmp_path / "watched", suite, **SHAPES[shape])
    for k, v in plain["state"].items():
        assert torch.equal(v, watched["state"][k]), k
    assert torch.equal(plain["rng"], watched["rng"])
    runs = watched["model"].validations
    assert runs >= 2
    for cb in suite:
        assert cb.validation_runs == runs  # every validation run of fit is counted, the sanity check is not
    monitor, drift, dead, gate = suite
    assert len(drift.history) == runs // 2  # every second validation run, whatever the loop
    assert len(gate.report) == runs // 2
    first = gate.report[0]["checks"][0]
    assert first["skipped"] and first["reason"].startswith("not yet applicable: no previous epoch")
    assert all(e["passed"] for e in gate.report)


@pytest.mark.filterwarnings("ignore:.*no TensorBoardLogger attached:UserWarning")  # a CSV logger, on purpose
def test_validate_test_and_predict_after_fit_leave_the_state_as_fit_left_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    suite = _suite()
    csv = CSVLogger(str(tmp_path), name="csv")
    run = _run(tmp_path, suite, max_epochs=2, logger=[csv])
    tr, model = run["trainer"], run["model"]
    monitor, drift, dead, gate = suite
    before = ([h["epoch"] for h in drift.history], len(gate.report), monitor.state_dict(), drift.validation_runs)
    tr.validate(model, DataLoader(DATA, batch_size=32), verbose=False)
    tr.test(model, DataLoader(DATA, batch_size=32), verbose=False)
    tr.predict(model, DataLoader(DATA, batch_size=32))
    after = ([h["epoch"] for h in drift.history], len(gate.report), monitor.state_dict(), drift.validation_runs)
    assert after == before
    # the stage's own tags: fit's PNG-less CSV rows are not overwritten, validate's and test's are their own
    with open(os.path.join(csv.log_dir, "metrics.csv")) as f:
        metrics = f.readline()
    assert "validate/xai/drift/saliency/spearman/prev" in metrics and "test/xai/attr/saliency/gini" in metrics


def test_a_drift_check_that_needs_history_passes_as_not_yet_applicable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    probe = _probe()
    drift = FeatureDriftMonitor(probe, method="saliency", metrics=["spearman"])
    gate = SanityGate(probe, [checks.Drift("spearman", min_value=-1.0, method="saliency", against="prev")])
    run = _run(tmp_path, [drift, gate], max_epochs=3)  # default action="stop": used to end after one epoch
    assert run["trainer"].current_epoch == 3 and not run["trainer"].should_stop
    assert [e["checks"][0]["passed"] for e in gate.report] == [True, True, True]
    assert gate.report[0]["checks"][0]["reason"] == "not yet applicable: no previous epoch to compare with yet"


def test_schedules_that_never_fire_warn_at_setup(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.warns(UserWarning, match=r"AttributionMonitor\(every_n_epochs=3\) never runs: this run validates 2 time"):
        _run(tmp_path, [AttributionMonitor(_probe(), every_n_epochs=3, log_images=False)], max_epochs=5,
             check_val_every_n_epoch=2)
    with pytest.warns(UserWarning, match="AttributionMonitor never runs: limit_val_batches=0"):
        _run(tmp_path, [AttributionMonitor(_probe(), log_images=False)], max_epochs=1, limit_val_batches=0)


class ForwardCounter(nn.Module):
    """A layer whose forward updates a buffer that drives its behaviour (a warm-up schedule)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * torch.clamp(self.calls.float() / 50.0, max=1.0)


class Scheduled(LitClassifier):
    def __init__(self) -> None:
        super().__init__(nn.Sequential(ForwardCounter(), SmallCNN()))


def test_buffers_a_forward_updates_are_restored_after_explaining(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def run(callbacks: List[Any]) -> Dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = Scheduled()
        trainer(tmp_path, callbacks, max_epochs=3).fit(model, DataLoader(DATA, batch_size=8), DataLoader(DATA, batch_size=32))
        return {k: v.clone() for k, v in model.state_dict().items()}

    plain = run([])
    watched = run(_suite() + [AttributionMonitor(_probe(), methods=["integrated_gradients", "occlusion"], log_images=False)])
    assert plain["net.0.calls"] == watched["net.0.calls"]  # the explanations' forwards were not counted
    for k, v in plain.items():
        assert torch.equal(v, watched[k]), k


class EagerOnly(pl.LightningModule):
    """A module torch.compile can trace (no self.log in the step), for ``fit(torch.compile(module))``."""

    def __init__(self, compile_net: bool = False) -> None:
        super().__init__()
        net = SmallCNN()
        self.net = torch.compile(net, backend="eager") if compile_net else net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        pass

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.05)


@pytest.mark.parametrize("how", ["eager", "whole", "submodule"])
def test_compiled_modules_give_the_eager_numbers(tmp_path, how) -> None:  # type: ignore[no-untyped-def]
    def run(mode: str) -> Any:
        torch.manual_seed(0)
        probe = _probe()
        monitor = AttributionMonitor(probe, methods={"saliency": {}, "grad_cam": {"layer": "net.conv2"}}, log_images=False)
        dead = DeadReLUMonitor(probe)
        gate = SanityGate(probe, [checks.ParameterRandomization("saliency", max_similarity=0.9)], verbose=False)
        model = EagerOnly(compile_net=mode == "submodule")
        tr = trainer(tmp_path / mode, [monitor, dead, gate], max_epochs=1)
        tr.fit(torch.compile(model, backend="eager") if mode == "whole" else model,
               DataLoader(DATA, batch_size=16), DataLoader(DATA, batch_size=32))
        return monitor.last_attributions, dead.last_summary, gate.last_results[0]

    ref, got = run("eager"), run(how)
    for k in ref[0]:
        torch.testing.assert_close(got[0][k], ref[0][k])
    assert got[1] is not None and sorted(got[1].layers) == sorted(ref[1].layers) == ["net.conv1", "net.conv2"]
    assert got[1].dead_fraction == ref[1].dead_fraction
    assert got[2].value == pytest.approx(ref[2].value) and got[2].value < 0.9  # the copy is really randomised


class OOMOverFour(SmallCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 4 and not self.training and torch.is_grad_enabled():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return super().forward(x)


def test_the_gate_uses_the_chunking_and_out_of_memory_halving(tmp_path) -> None:  # type: ignore[no-untyped-def]
    probe = _probe()
    gate = SanityGate(probe, [checks.ParameterRandomization("saliency", max_similarity=1.0, layers=1)], verbose=False)
    torch.manual_seed(0)
    tr = trainer(tmp_path, [gate], max_epochs=2)
    with pytest.warns(RuntimeWarning, match="out of memory while explaining"):
        tr.fit(LitClassifier(OOMOverFour()), DataLoader(DATA, batch_size=8), DataLoader(DATA, batch_size=32))
    assert all(e["passed"] for e in gate.report)  # halved, not a failed check
    assert gate.chunking.current is not None and gate.chunking.current <= 4


def test_a_report_that_cannot_be_written_warns_and_training_goes_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    gate = SanityGate(_probe(), [checks.Finite()], report_dir=blocker / "reports", verbose=False)
    with pytest.warns(UserWarning, match=r"could not write its report to .*a_file/reports.*Pass report_dir= a writable"):
        run = _run(tmp_path, [gate], max_epochs=2)
    assert run["trainer"].current_epoch == 2 and len(gate.report) == 2


def test_a_reused_callback_follows_the_new_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    probe = _probe()
    drift = FeatureDriftMonitor(probe, method="saliency", metrics=["spearman"])
    gate = SanityGate(probe, [checks.Finite()], verbose=False)
    _run(tmp_path / "one", [drift, gate], max_epochs=2, logger=True)
    first_report = gate.report_path
    _run(tmp_path / "two", [drift, gate], max_epochs=3, logger=True)
    assert [h["epoch"] for h in drift.history] == [0, 1, 2]  # a fresh history, not [0, 1, 0, 1, 2]
    assert len(gate.report) == 3 and gate.report_path != first_report
    assert str(tmp_path / "two") in str(gate.report_path) and os.path.exists(gate.report_path)


class LinearHead(LitClassifier):
    def __init__(self) -> None:
        super().__init__(nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4)))


@pytest.mark.parametrize("methods, message", [
    ({"grad_cam": {"layer": "net.1"}}, r"method 'grad_cam' .*fails on one probe sample .*cannot upsample"),
    ({"occlusion": {"window": 12}}, r"method 'occlusion' .*fails on one probe sample"),
])
def test_late_errors_come_at_setup(tmp_path, methods, message) -> None:  # type: ignore[no-untyped-def]
    tr = trainer(tmp_path, [AttributionMonitor(_probe(), methods=methods)], max_epochs=2)
    with pytest.raises(ValueError, match=message):
        tr.fit(LinearHead(), DataLoader(DATA, batch_size=8), DataLoader(DATA, batch_size=32))
    assert tr.global_step == 0  # before any training


def test_silent_values_speak(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # a NaN in the probe warns at setup
    inputs = _probe().inputs.clone()
    inputs[3, 0, 0, 0] = float("nan")
    with pytest.warns(UserWarning, match=r"1 of 8 probe samples hold NaN or infinity \(rows \[3\]\)"):
        _run(tmp_path / "nan", [AttributionMonitor(ProbeSet(inputs), methods=["saliency"], log_images=False)], max_epochs=1)

    # logger=False writes nothing into the working directory
    monkeypatch.chdir(tmp_path)
    os.makedirs("cwd")
    monkeypatch.chdir("cwd")
    run = _run(tmp_path / "quiet", [AttributionMonitor(_probe()), SanityGate(_probe(), [checks.Finite()])],
               max_epochs=1, logger=False)
    assert run["trainer"].current_epoch == 1 and os.listdir(".") == []

    # without TensorBoard: one warning, not one per kind of output
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(tmp_path / "csv", [AttributionMonitor(_probe())], max_epochs=2, logger=CSVLogger(str(tmp_path), name="c"))
    said = [str(w.message) for w in caught if "TensorBoardLogger" in str(w.message)]
    assert len(said) == 1 and "PNG files under" in said[0] and "text summaries" in said[0]


def test_two_attribution_monitors_log_their_summaries_apart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = AttributionMonitor(_probe(), methods=["saliency"], log_images=False)
    b = AttributionMonitor(_probe(), methods=["integrated_gradients"], log_images=False)
    run = _run(tmp_path, [a, b], max_epochs=1)
    tags = set(read_events(run["trainer"].logger.log_dir).Tags()["tensors"])
    assert {"xai/attr/summary/1", "xai/attr/summary/2"} <= tags


def test_trajectory_labels_under_val_check_interval(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen: Dict[str, Any] = {}
    real = F.heatmap_chart

    def spy(values, rows, columns, **kw):  # type: ignore[no-untyped-def]
        seen["columns"] = list(columns)
        return real(values, rows, columns, **kw)

    monkeypatch.setattr(F, "heatmap_chart", spy)
    drift = FeatureDriftMonitor(_probe(), method="saliency", metrics=["spearman"])
    _run(tmp_path, [drift], max_epochs=2, val_check_interval=0.5)
    assert seen["columns"] == ["0.0", "0.1", "1.0", "1.1"]


def test_resume_continues_the_validation_count(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pytorch_lightning.callbacks import ModelCheckpoint

    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True, every_n_epochs=1)
    drift = FeatureDriftMonitor(_probe(), method="saliency", metrics=["spearman"], every_n_epochs=2)
    _run(tmp_path / "a", [drift, ckpt], max_epochs=3, enable_checkpointing=True)
    resumed = FeatureDriftMonitor(_probe(), method="saliency", metrics=["spearman"], every_n_epochs=2)
    torch.manual_seed(0)
    tr = trainer(tmp_path / "b", [resumed], max_epochs=4)
    tr.fit(Counting(), DataLoader(DATA, batch_size=8), DataLoader(DATA, batch_size=32),
           ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    whole = FeatureDriftMonitor(_probe(), method="saliency", metrics=["spearman"], every_n_epochs=2)
    _run(tmp_path / "c", [whole], max_epochs=4)
    assert resumed.validation_runs == whole.validation_runs == 4
    assert [h["epoch"] for h in resumed.history] == [h["epoch"] for h in whole.history] == [1, 3]


@pytest.mark.filterwarnings("ignore:.*no TensorBoardLogger attached:UserWarning")  # a CSV logger, on purpose
def test_a_logger_records_the_stage_tags_apart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    log = RecordingLogger()
    run = _run(tmp_path, [AttributionMonitor(_probe(), methods=["saliency"], log_images=False)], max_epochs=1, logger=log)
    run["trainer"].validate(run["model"], DataLoader(DATA, batch_size=32), verbose=False)
    assert [s for s, _ in log.records["xai/attr/saliency/gini"]] == [8]
    assert "validate/xai/attr/saliency/gini" in log.records
