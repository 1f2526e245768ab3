"""The whole suite together in one real Trainer: tags, dashboard, gate reading the monitors, shared work."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch.utils.data import DataLoader

from lightning_xai import ProbeSet, checks
from lightning_xai import functional as F
from lightning_xai.callbacks import AttributionMonitor, DeadReLUMonitor, FeatureDriftMonitor, SanityGate
from lightning_xai.callbacks._cache import cache_for

from .fixtures import LitClassifier, SmallCNN, image_data, read_events, trainer


def _suite(probe):
    return [
        AttributionMonitor(probe, methods=["saliency", "integrated_gradients", "grad_cam"]),
        FeatureDriftMonitor(probe, method="integrated_gradients"),
        DeadReLUMonitor(probe, source="probe"),
        SanityGate(
            probe,
            checks=[
                checks.DeadUnits(max_fraction=0.9),
                checks.Drift("spearman", min_value=-1.0, method="integrated_gradients", against="ref"),
                checks.Finite(),
            ],
            patience=5,
        ),
    ]


def test_whole_suite_in_one_trainer(tmp_path):
    ds = image_data(64)
    probe = ProbeSet.from_dataset(ds, n=8, seed=0)
    callbacks = _suite(probe)
    tr = trainer(tmp_path, callbacks, max_epochs=3)
    with F.count_passes() as passes:
        tr.fit(LitClassifier(SmallCNN()), DataLoader(ds, batch_size=32), DataLoader(ds, batch_size=32))
    ea = read_events(tr.logger.log_dir)
    scalars = set(ea.Tags()["scalars"])
    for tag in (
        "xai/attr/saliency/gini", "xai/drift/integrated_gradients/spearman/ref",
        "xai/drift/integrated_gradients/ndcg/prev", "xai/dead_relu/all", "xai/check/dead_units",
        "xai/check/finite", "xai/gate/passed", "val/loss",
    ):
        assert tag in scalars, tag
    assert {"xai/attr/saliency", "xai/attr/integrated_gradients", "xai/drift/integrated_gradients/trajectory"} <= set(
        ea.Tags()["images"]
    )
    tensors = set(ea.Tags()["tensors"])
    assert {"custom_scalars__config__", "xai/attr/summary", "xai/gate/report"} <= tensors
    # the dashboard has a section for each attached callback
    from tensorboard.plugins.custom_scalar import layout_pb2

    layout = layout_pb2.Layout()
    layout.ParseFromString(ea.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    titles = [c.title for c in layout.category]
    assert titles[0] == "Loss"
    assert {"Attribution summaries", "Drift", "Dead ReLU", "Sanity checks"} <= set(titles)
    # the gate read the monitors' real values (not "missing"), every epoch
    with open(os.path.join(tr.logger.log_dir, "xai_gate_report.json")) as f:
        report = json.load(f)
    assert [e["passed"] for e in report] == [True, True, True]
    dead = [c for e in report for c in e["checks"] if c["name"] == "dead_units"]
    assert all(not c["skipped"] and 0.0 <= c["value"] <= 1.0 for c in dead)
    assert dead[-1]["value"] == pytest.approx(float(tr.callback_metrics["xai/dead_relu/all"]))
    # one integrated-gradients computation per epoch, shared by AttributionMonitor and the drift monitor
    assert cache_for(tr).computed["integrated_gradients"] == 3
    ig_rows = 32 * len(probe) * 3  # n_steps x probe x epochs
    one_pass = len(probe) * 3  # saliency + grad_cam share one backward per epoch
    trial = 32 + 1 + 1  # at setup, each configured method once on one probe sample (IG shared by both monitors)
    assert passes.backward_rows == ig_rows + one_pass + trial


def test_gate_before_the_monitors_it_reads_is_an_error_at_setup(tmp_path):
    ds = image_data(32)
    probe = ProbeSet.from_dataset(ds, n=4)
    gate = SanityGate(probe, checks=[checks.DeadUnits(max_fraction=0.5)])
    tr = trainer(tmp_path, [gate, DeadReLUMonitor(source="validation")], max_epochs=1)
    with pytest.raises(ValueError, match="DeadReLUMonitor"):
        tr.fit(LitClassifier(SmallCNN()), DataLoader(ds, batch_size=32), DataLoader(ds, batch_size=32))


def test_method_options_that_share_names_with_arguments(tmp_path):
    ds = image_data(32)
    probe = ProbeSet.from_dataset(ds, n=4)
    monitor = AttributionMonitor(
        probe, methods={"integrated_gradients": {"method": "riemann_trapezoid", "n_steps": 8}}, target="true"
    )
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    model = LitClassifier(SmallCNN())
    tr.fit(model, DataLoader(ds, batch_size=32), DataLoader(ds, batch_size=32))
    ref = F.integrated_gradients(model.net.eval(), probe.inputs, probe.targets, method="riemann_trapezoid", n_steps=8)
    assert torch.allclose(monitor.last_attributions["integrated_gradients"], ref, atol=1e-6)
