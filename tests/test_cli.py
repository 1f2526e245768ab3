"""LightningCLI: every callback (probe included) configured from YAML; the example config runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl

from lightning_xai import ProbeSet, ProbeSpec, checks
from lightning_xai.callbacks import AttributionMonitor, DeadReLUMonitor, FeatureDriftMonitor, SanityGate

from .fixtures import Classifier, SmallCNN, image_data, quadrant_masks, read_events, trainer

pytest.importorskip("jsonargparse")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "example_trainers", "cli.py")
CONFIG = os.path.join(ROOT, "example_trainers", "digits_cli.yaml")


def test_example_config_runs_and_logs_every_callback(tmp_path):
    """``python example_trainers/cli.py fit --config example_trainers/digits_cli.yaml``, shortened."""
    cmd = [
        sys.executable, CLI, "fit", "--config", CONFIG,
        "--trainer.max_epochs=2", "--trainer.limit_train_batches=6", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log_dir = tmp_path / "digits_cli" / "version_0"
    ea = read_events(str(log_dir))
    tags = ea.Tags()
    expected_scalars = [
        "xai/attr/saliency/gini", "xai/attr/integrated_gradients/entropy", "xai/attr/grad_cam/top10_mass",
        "xai/drift/saliency/spearman/ref", "xai/drift/saliency/ndcg/ref", "xai/drift/saliency/topk_overlap/prev",
        "xai/dead_relu/all", "xai/dead_relu/features.0", "xai/dead_relu/features.3",
        "xai/check/finite", "xai/check/dead_units", "xai/check/completeness",
        "xai/check/drift/saliency/ndcg/ref", "xai/check/random_logit/saliency", "xai/gate/passed",
    ]
    for tag in expected_scalars:
        assert tag in tags["scalars"], (tag, sorted(t for t in tags["scalars"] if t.startswith("xai")))
    steps = {tag: [e.step for e in ea.Scalars(tag)] for tag in expected_scalars}
    assert steps["xai/attr/saliency/gini"] == [6, 12]  # once per validation epoch
    assert steps["xai/drift/saliency/topk_overlap/prev"] == [12]  # 'prev' from the second epoch
    for tag in ("xai/attr/saliency", "xai/attr/integrated_gradients", "xai/attr/grad_cam", "xai/drift/saliency/trajectory"):
        assert len(ea.Images(tag)) == 2, tag
    assert "xai/dead_relu_onrate/features.0" in tags["histograms"]
    # the example's check set passes (its gate never stops the example)
    assert [e.value for e in ea.Scalars("xai/gate/passed")] == [1.0, 1.0]
    # LightningCLI saved the resolved config next to the events, probes included
    saved = (log_dir / "config.yaml").read_text()
    assert "lightning_xai.ProbeSpec" in saved and "lightning_xai.checks.RelevanceMass" not in saved


def _cli_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("xai_example_cli", CLI)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_example_config_builds_the_callbacks_it_says(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [CLI])
    cli = _cli_module().main(
        ["--config", CONFIG, f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}"],
        run=False,
    )
    cbs = {type(cb).__name__: cb for cb in cli.trainer.callbacks}
    attr, drift, dead, gate = (cbs[n] for n in ("AttributionMonitor", "FeatureDriftMonitor", "DeadReLUMonitor", "SanityGate"))
    for cb in (attr, drift, dead, gate):
        assert isinstance(cb.probe, ProbeSpec)
        assert (cb.probe.n, cb.probe.seed, cb.probe.source) == (16, 0, "val")
    assert list(attr.methods) == ["saliency", "integrated_gradients", "grad_cam"]
    assert drift.method == "saliency" and tuple(drift.metrics) == ("spearman", "ndcg", "topk_overlap") and drift.grid == (4, 4)
    assert dead.source == "probe" and dead.warn_above == 0.5
    assert gate.action == "stop" and gate.patience == 1
    assert [type(c).__name__ for c in gate.checks] == ["Finite", "DeadUnits", "Completeness", "Drift", "RandomLogit"]
    assert gate.checks[4].max_similarity == 0.5
    # every callback's constructor is typed well enough for jsonargparse to build it from YAML
    assert len({cb.state_key for cb in cli.trainer.callbacks if hasattr(cb, "probe")}) == 4


def test_every_callback_argument_is_typed_for_jsonargparse():
    from jsonargparse import ArgumentParser

    for cls in (AttributionMonitor, FeatureDriftMonitor, DeadReLUMonitor, SanityGate, ProbeSpec):
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls, "cb", fail_untyped=True)
        import inspect

        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        known = {a.dest.split(".", 1)[1].split(".")[0] for a in parser._actions if a.dest.startswith("cb.")}
        assert set(params) <= known, (cls.__name__, set(params) - known)


# ---------------------------------------------------------------------------- probes drawn from specs
def _masked_data(n: int = 32) -> TensorDataset:
    """Batches ``(x, y, mask)``: the mask (the class quadrant) is only for the probe."""
    x, y = image_data(n).tensors
    return TensorDataset(x, y, quadrant_masks(y))


class MaskedData(pl.LightningDataModule):
    def train_dataloader(self):
        return DataLoader(_masked_data(), batch_size=16)

    def val_dataloader(self):
        return DataLoader(_masked_data(), batch_size=16)


def test_every_callback_draws_its_probe_spec_from_the_datamodule(tmp_path):
    spec = ProbeSpec(n=8, seed=3, mask_key=2)
    expected = ProbeSet.from_dataset(_masked_data(), 8, seed=3, mask_key=2)
    cbs = [
        AttributionMonitor(spec, methods=["saliency"]),
        FeatureDriftMonitor(spec, method="saliency", metrics=["spearman"]),
        DeadReLUMonitor(spec),
        SanityGate(spec, [checks.RelevanceMass("saliency", min_mass=0.0), checks.DeadUnits(1.0)]),
    ]
    tr = trainer(tmp_path, cbs, max_epochs=1)
    tr.fit(Classifier(SmallCNN()), datamodule=MaskedData())
    for cb in cbs:
        assert isinstance(cb.probe, ProbeSet) and cb.probe.indices == expected.indices, type(cb).__name__
        assert torch.equal(cb.probe.masks, expected.masks)
    assert len(cbs[1]._names) == 16 and cbs[1]._names[:2] == ["ch0[0,0]", "ch0[0,1]"]  # set once drawn
    for tag in ("xai/attr/saliency/gini", "xai/drift/saliency/spearman/ref", "xai/dead_relu/all",
                "xai/check/relevance_mass/saliency", "xai/gate/passed"):
        assert tag in tr.callback_metrics, tag


def test_checks_needing_the_probe_are_validated_when_the_spec_is_drawn(tmp_path):
    # RelevanceMass needs masks; a spec drawing from data without masks fails at setup, naming the fix
    gate = SanityGate(ProbeSpec(n=8), [checks.RelevanceMass("saliency")])
    tr = trainer(tmp_path, [gate], max_epochs=3)

    class NoMasks(MaskedData):
        def val_dataloader(self):
            return DataLoader(image_data(32), batch_size=16)

    with pytest.raises(ValueError, match="needs ground-truth masks in the probe"):
        tr.fit(Classifier(SmallCNN()), datamodule=NoMasks())
    assert tr.global_step == 0  # before any training step

    # loaders passed straight to fit(): drawn, and checked, when the first validation epoch starts
    gate = SanityGate(ProbeSpec(n=8), [checks.RelevanceMass("saliency")])
    tr = trainer(tmp_path, [gate], max_epochs=3)
    loader = DataLoader(image_data(32), batch_size=16)
    with pytest.raises(ValueError, match="needs ground-truth masks in the probe"):
        tr.fit(Classifier(SmallCNN()), loader, loader)
    assert tr.current_epoch == 0 and isinstance(gate.probe, ProbeSet)


def test_drift_reference_tensor_with_a_spec_is_checked_when_drawn(tmp_path):
    drift = FeatureDriftMonitor(ProbeSpec(n=8), method="saliency", reference=torch.ones(5))  # 16 cells expected
    tr = trainer(tmp_path, [drift], max_epochs=1)
    with pytest.raises(ValueError, match="reference tensor has 5 values; an importance vector for this probe"):
        tr.fit(Classifier(SmallCNN()), datamodule=MaskedData())
    with pytest.raises(ValueError, match="no such file"):
        FeatureDriftMonitor(ProbeSpec(n=8), reference=str(tmp_path / "missing.pt"))


def test_drift_reference_file_with_a_spec_is_read_when_drawn(tmp_path):
    first = FeatureDriftMonitor(ProbeSpec(n=8), method="saliency", metrics=["spearman"])
    trainer(tmp_path / "a", [first], max_epochs=1).fit(Classifier(SmallCNN()), datamodule=MaskedData())
    first.save_reference(tmp_path / "ref.pt")
    later = FeatureDriftMonitor(ProbeSpec(n=8), method="saliency", metrics=["spearman"], reference=str(tmp_path / "ref.pt"))
    assert later.reference is None  # read once the probe is drawn
    tr = trainer(tmp_path / "b", [later], max_epochs=1)
    tr.fit(Classifier(SmallCNN()), datamodule=MaskedData())
    assert torch.equal(later.reference["importance"], first.history[-1]["importance"])
    assert "xai/drift/saliency/spearman/ref" in tr.callback_metrics


def test_checkpointed_probe_is_compared_when_a_spec_is_drawn_later():
    from types import SimpleNamespace

    monitor = AttributionMonitor(ProbeSpec(n=4, seed=0), methods=["saliency"])
    key = monitor.state_key
    loader = DataLoader(image_data(32), batch_size=8)
    other = ProbeSet.from_dataset(image_data(32), 4, seed=5)
    monitor.load_state_dict({"probe": other.state_dict(), "vmax": {"saliency": 0.5}})  # before the draw
    assert monitor.state_dict()["probe"] == other.state_dict()  # kept, not lost, until drawn
    with pytest.warns(UserWarning, match="the checkpoint was written with a different probe"):
        monitor._resolve_probe_spec(SimpleNamespace(datamodule=None, val_dataloaders=loader), nn.Linear(1, 1))
    assert isinstance(monitor.probe, ProbeSet) and monitor.state_key == key  # the key does not change when drawn
    same = AttributionMonitor(ProbeSpec(n=4, seed=5), methods=["saliency"])
    same.load_state_dict({"probe": other.state_dict()})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same._resolve_probe_spec(SimpleNamespace(datamodule=None, val_dataloaders=loader), nn.Linear(1, 1))
    assert same.probe.indices == other.indices


@pytest.mark.parametrize("package", ["pytorch_lightning", "lightning.pytorch"])
def test_both_packages_cli_build_every_callback_from_yaml(tmp_path, monkeypatch, package):
    import importlib

    lp = pytest.importorskip(package)
    cli_module = importlib.import_module(f"{package}.cli")
    import yaml

    with open(CONFIG) as f:
        config = yaml.safe_load(f)
    small = {"trainer": {"callbacks": config["trainer"]["callbacks"], "logger": False, "default_root_dir": str(tmp_path)}}
    path = tmp_path / "callbacks.yaml"
    path.write_text(yaml.safe_dump(small))

    class Tiny(lp.LightningModule):
        def __init__(self, width: int = 4) -> None:
            super().__init__()
            self.net = nn.Linear(width, 2)

    monkeypatch.setattr(sys, "argv", ["cli"])
    cli = cli_module.LightningCLI(Tiny, args=["--config", str(path)], run=False)
    names = [type(cb).__name__ for cb in cli.trainer.callbacks]
    for name in ("AttributionMonitor", "FeatureDriftMonitor", "DeadReLUMonitor", "SanityGate"):
        assert name in names, names
    assert all(isinstance(cb, lp.Callback) for cb in cli.trainer.callbacks)
