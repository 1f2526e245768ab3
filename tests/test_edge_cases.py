"""Edge cases found in review: cache keys, ProbeSpec sources, targets, occlusion strides, shared forwards."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_xai import ProbeSet, ProbeSpec
from lightning_xai import functional as F
from lightning_xai.callbacks import AttributionMonitor, DeadReLUMonitor

from .fixtures import MLP, LitClassifier, SmallCNN, image_data, trainer


def test_tensor_options_with_equal_sums_are_different_cache_entries(tmp_path):
    ds = image_data(32)
    probe = ProbeSet.from_dataset(ds, n=4)
    b1 = torch.zeros(1, 1, 8, 8)
    b1[..., 0, 0] = 1.0
    b2 = torch.zeros(1, 1, 8, 8)
    b2[..., 7, 7] = 1.0  # same shape and sum as b1, another baseline
    a = AttributionMonitor(probe, methods={"integrated_gradients": {"baseline": b1, "n_steps": 8}}, target="true")
    b = AttributionMonitor(probe, methods={"integrated_gradients": {"baseline": b2, "n_steps": 8}}, target="true")
    assert a.state_key != b.state_key  # two instances with different options coexist
    tr = trainer(tmp_path, [a, b], max_epochs=1)
    model = LitClassifier(SmallCNN())
    tr.fit(model, DataLoader(ds, batch_size=32), DataLoader(ds, batch_size=32))
    for monitor, base in ((a, b1), (b, b2)):
        ref = F.integrated_gradients(model.net.eval(), probe.inputs, probe.targets, baseline=base, n_steps=8)
        assert torch.allclose(monitor.last_attributions["integrated_gradients"], ref, atol=1e-6)


def test_probe_spec_from_the_train_loader_passed_to_fit(tmp_path):
    ds = image_data(48)
    monitor = AttributionMonitor(ProbeSpec(n=5, seed=3, source="train"), methods=["saliency"])
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    tr.fit(LitClassifier(SmallCNN()), DataLoader(ds, batch_size=16), DataLoader(image_data(16, seed=1), batch_size=16))
    assert monitor.probe.indices == ProbeSet.from_dataset(ds, 5, seed=3).indices


def test_probe_spec_from_a_module_that_builds_its_data_in_setup(tmp_path):
    class Lit(LitClassifier):
        def setup(self, stage):
            self.ds = image_data(40)

        def train_dataloader(self):
            return DataLoader(self.ds, batch_size=20)

        def val_dataloader(self):
            return DataLoader(self.ds, batch_size=20)

    monitor = AttributionMonitor(ProbeSpec(n=4, seed=0), methods=["saliency"])
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    tr.fit(Lit(SmallCNN()))
    assert monitor.probe.indices == ProbeSet.from_dataset(image_data(40), 4, seed=0).indices


def test_a_class_target_on_a_single_output_model_is_an_error_at_setup(tmp_path):
    x = torch.randn(16, 6)
    ds = torch.utils.data.TensorDataset(x, torch.zeros(16, dtype=torch.long))
    monitor = AttributionMonitor(ProbeSet(x[:4]), methods=["saliency"], target=2)
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    with pytest.raises(ValueError, match="target=2 picks a class, but LitClassifier returns one output per sample"):
        tr.fit(LitClassifier(MLP(features=6, classes=1)), DataLoader(ds, batch_size=8), DataLoader(ds, batch_size=8))


def test_occlusion_stride_larger_than_the_window_is_refused():
    with pytest.raises(ValueError, match="stride .* is larger than the window"):
        F.occlusion(nn.Linear(4, 1), torch.randn(2, 4), window=1, stride=2)


def test_callable_targets_give_a_state_key_stable_across_processes():
    probe = ProbeSet(torch.rand(2, 1, 8, 8))

    def second_best(out, y):
        return out.topk(2, 1).indices[:, 1]

    key = AttributionMonitor(probe, target=second_best).state_key
    assert "second_best" in key and str(id(second_best)) not in key


def test_dead_relu_counts_are_right_beside_grad_cam_on_a_layer_followed_by_an_inplace_relu(tmp_path):
    ds = image_data(32)
    probe = ProbeSet.from_dataset(ds, n=8)
    net = SmallCNN()  # conv1 -> bn1 -> ReLU(inplace=True): Grad-CAM on conv1 re-runs its forward
    attr = AttributionMonitor(probe, methods={"grad_cam": {"layer": "net.conv1"}, "saliency": {}})
    dead = DeadReLUMonitor(probe, source="probe")
    tr = trainer(tmp_path, [attr, dead], max_epochs=1)
    model = LitClassifier(net)
    tr.fit(model, DataLoader(ds, batch_size=32), DataLoader(ds, batch_size=32))
    direct = F.dead_relu_stats(model.eval(), probe.inputs)
    assert set(dead.last_summary.layers) == set(direct.layers)
    for name, layer in direct.layers.items():
        assert dead.last_summary.layers[name].positions == layer.positions, name
        assert dead.last_summary.layers[name].dead == layer.dead, name
