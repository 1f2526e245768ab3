"""Feature visualisation: known answers of activation maximisation, the monitor in a real Trainer,
training left bit-identical, errors before the first epoch."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import pytorch_lightning as pl

from lightning_xai import ProbeSet
from lightning_xai import functional as F
from lightning_xai.callbacks import FeatureVisualizationMonitor

from .fixtures import (
    MLP, Classifier, LitClassifier, SmallCNN, image_data, layouts_in, read_events, tabular_data, tabular_probe,
    trained_batchnorm, trainer,
)


# ------------------------------------------------------------------------------------------ known answers
def test_linear_model_points_along_the_class_weight_row():
    torch.manual_seed(0)
    net = nn.Linear(16, 5)
    l2 = 0.05
    x = F.activation_maximization(net, (16,), list(range(5)), l2=l2)
    cos = nn.functional.cosine_similarity(x, net.weight.detach(), dim=1)
    assert bool((cos >= 0.99).all()), cos
    # the optimum of w.x - l2 |x|^2 is w / (2 l2): reached, not only its direction
    torch.testing.assert_close(x, net.weight.detach() / (2 * l2), rtol=1e-2, atol=1e-3)


def _planted(pattern: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4))
    with torch.no_grad():
        net[0].weight[1, 0] = pattern
        net[0].bias[1] = 0.0
    return net


def _best_patch_cosine(image: torch.Tensor, pattern: torch.Tensor) -> float:
    patches = image.unfold(0, 3, 1).unfold(1, 3, 1).reshape(-1, 9)
    patches = patches - patches.mean(1, keepdim=True)
    p = (pattern - pattern.mean()).reshape(1, -1)
    return float(nn.functional.cosine_similarity(patches, p, dim=1).max())


L_SHAPE = torch.tensor([[1.0, -1, -1], [1, -1, -1], [1, 1, 1]])


@pytest.mark.parametrize("options,floor", [
    ({}, 0.99),
    ({"value_range": (0.0, 1.0), "jitter": 1}, 0.99),
    ({"parametrization": "fft", "jitter": 1}, 0.9),
])
def test_conv_unit_with_a_planted_kernel_shows_the_pattern(options, floor):
    pattern = L_SHAPE - L_SHAPE.mean()
    net = _planted(pattern)
    x = F.activation_maximization(net, (1, 8, 8), [("0", 1), ("0", 0)], steps=128, **options)
    planted, other = _best_patch_cosine(x[0, 0], pattern), _best_patch_cosine(x[1, 0], pattern)
    assert planted >= floor, (planted, other)
    assert planted > other + 0.05  # the random channel's picture does not show it
    scores = F.featvis_objective(net, x, [("0", 1), ("0", 0)])
    start = F.featvis_objective(net, torch.full((2, 1, 8, 8), 0.5 if options else 0.0), [("0", 1), ("0", 0)])
    assert bool((scores > start).all())  # the optimisation climbed


def test_targets_optimised_together_equal_each_alone():
    torch.manual_seed(0)
    net = trained_batchnorm(SmallCNN())
    targets = [2, ("conv2", 5), 0]
    together = F.activation_maximization(net, (1, 8, 8), targets, steps=32, jitter=1, parametrization="fft")
    for i, t in enumerate(targets):
        alone = F.activation_maximization(net, (1, 8, 8), t, steps=32, jitter=1, parametrization="fft")
        torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-4, atol=1e-5)


def test_same_seed_same_pictures_and_fft_stays_in_range():
    net = trained_batchnorm(SmallCNN())
    kw = dict(steps=16, jitter=1, blur=0.5, parametrization="fft", value_range=(-1.0, 2.0))
    a, b = (F.activation_maximization(net, (1, 8, 8), [0, 1], **kw) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, F.activation_maximization(net, (1, 8, 8), [0, 1], seed=1, **kw))
    assert float(a.min()) > -1.0 and float(a.max()) < 2.0
    p = F.activation_maximization(net, (1, 8, 8), [0], steps=16, blur=0.7, value_range=(0.0, 1.0))
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0


def _snapshot(model: nn.Module):
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "hooks": {k: (len(m._forward_hooks), len(m._forward_pre_hooks)) for k, m in model.named_modules()},
        "rng": torch.random.get_rng_state(),
    }


@pytest.mark.parametrize("context", ["plain", "no_grad", "inference_mode"])
def test_model_and_global_rng_untouched(context):
    torch.manual_seed(0)
    model = trained_batchnorm(SmallCNN()).train()  # train mode: BN would move, dropout would draw
    model.fc.weight.requires_grad_(False)
    model(torch.rand(4, 1, 8, 8)).sum().backward()  # existing grads must survive untouched
    before = _snapshot(model)
    ctx = {"plain": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}[context]
    with ctx():  # bn1 is followed by an in-place ReLU: its unit is read before the ReLU changes it
        x = F.activation_maximization(model, (1, 8, 8), [3, ("bn1", 2)], steps=8, jitter=1, parametrization="fft")
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()
    after = _snapshot(model)
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k
    for k, g in before["grads"].items():
        assert (g is None and after["grads"][k] is None) or torch.equal(g, after["grads"][k]), k
    for key in ("training", "requires_grad", "hooks"):
        assert before[key] == after[key], key
    assert torch.equal(before["rng"], after["rng"])


def test_functional_errors_name_the_fix():
    net = SmallCNN()
    with pytest.raises(ValueError, match=r"layer 'conv9' not found in SmallCNN; layers: conv1, bn1"):
        F.activation_maximization(net, (1, 8, 8), ("conv9", 0), steps=1)
    with pytest.raises(ValueError, match=r"channel 6 of layer 'conv1' is out of range: it has 6 channels \(valid 0..5\)"):
        F.activation_maximization(net, (1, 8, 8), ("conv1", 6), steps=1)
    with pytest.raises(ValueError, match=r"class 4 is out of range: SmallCNN returns 4 classes \(valid 0..3\)"):
        F.activation_maximization(net, (1, 8, 8), [1, 4], steps=1)
    with pytest.raises(ValueError, match="have none"):
        F.activation_maximization(MLP(), (6,), 0, jitter=1)
    with pytest.raises(ValueError, match="parametrization must be one of 'pixel', 'fft'"):
        F.activation_maximization(net, (1, 8, 8), 0, parametrization="dct")
    with pytest.raises(TypeError, match="class index"):
        F.activation_maximization(net, (1, 8, 8), "cat")


# ------------------------------------------------------------------------------------------ the monitor
def _fit(root, callbacks, epochs=3):
    pl.seed_everything(7)
    ds = image_data(64)
    model = LitClassifier(SmallCNN())
    tr = trainer(root, callbacks, max_epochs=epochs)
    tr.fit(model, DataLoader(ds, batch_size=16, shuffle=True), DataLoader(ds, batch_size=32))
    return model, torch.random.get_rng_state(), tr


def test_training_with_the_monitor_is_bit_identical(tmp_path):
    without, rng_without, _ = _fit(tmp_path / "a", [])
    monitor = FeatureVisualizationMonitor(units=[("net.conv2", 1), ("net.bn1", 0)], steps=8, jitter=1)
    with_cb, rng_with, _ = _fit(tmp_path / "b", [monitor])
    a, b = without.state_dict(), with_cb.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # weights and BatchNorm buffers
    assert torch.equal(rng_without, rng_with)
    assert set(monitor.last_images) == {"classes", "net.conv2", "net.bn1"}
    assert monitor.last_images["classes"].shape == (4, 1, 8, 8)


def test_monitor_logs_the_grids_on_schedule_with_a_fixed_range(tmp_path):
    monitor = FeatureVisualizationMonitor(units=[("net.conv2", 0), ("net.conv2", 3)], every_n_epochs=2, steps=4,
                                          class_names=["tl", "tr", "bl", "br"])
    _, _, tr = _fit(tmp_path, [monitor], epochs=4)
    ea = read_events(tr.logger.log_dir)
    images = ea.Tags()["images"]
    for tag in ("xai/featvis/classes", "xai/featvis/net.conv2", "xai/featvis/classes_by_epoch", "xai/filters/net.conv1"):
        assert tag in images, images
        assert [e.step for e in ea.Images(tag)] == [8, 16]  # epochs 1 and 3 (4 steps an epoch)
    first, last = ea.Images("xai/featvis/classes")
    assert (first.width, first.height) == (last.width, last.height)
    by_epoch = ea.Images("xai/featvis/classes_by_epoch")
    assert by_epoch[1].height > by_epoch[0].height  # one more row
    assert not [t for t in ea.Tags()["scalars"] if t.startswith("xai/")]  # pictures only
    layout = layouts_in(tr.logger.log_dir)[0]
    assert [c.title for c in layout.category] == ["Loss"]  # no dashboard section of its own
    lo, hi = monitor._range
    assert float(lo) == pytest.approx(float(image_data(64).tensors[0][:32].min()))  # the first validation batch
    assert monitor.state_dict()["value_range"][1] == hi


def test_tabular_prototypes_stay_in_the_probe_range(tmp_path):
    train, val = tabular_data()
    probe = tabular_probe(val)
    monitor = FeatureVisualizationMonitor(probe=probe, steps=32, lr=0.5)
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    tr.fit(Classifier(MLP(classes=2)), DataLoader(train, batch_size=16), DataLoader(val, batch_size=32))
    x = monitor.last_images["classes"]
    lo, hi = probe.inputs.min(0).values, probe.inputs.max(0).values
    assert x.shape == (2, 6) and bool(((x >= lo) & (x <= hi)).all())
    assert bool(((x == lo) | (x == hi)).any())  # the optimisation pushed some features to the edge
    assert "xai/featvis/classes" in read_events(tr.logger.log_dir).Tags()["images"]


def test_construction_errors():
    with pytest.raises(ValueError, match="a class index must be >= 0"):
        FeatureVisualizationMonitor(classes=[-1])
    with pytest.raises(TypeError, match="put \\(layer, channel\\) pairs in units="):
        FeatureVisualizationMonitor(classes=[("conv1", 0)])
    with pytest.raises(TypeError, match="put class indices in classes="):
        FeatureVisualizationMonitor(units=[3])
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        FeatureVisualizationMonitor(steps=0)
    with pytest.raises(ValueError, match="parametrization"):
        FeatureVisualizationMonitor(parametrization="dct")
    with pytest.raises(TypeError, match="filters"):
        FeatureVisualizationMonitor(filters=3)


class _Steps(pl.Callback):
    def __init__(self) -> None:
        self.n = 0

    def on_train_batch_start(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.n += 1


@pytest.mark.parametrize("make,message", [
    (lambda ds: FeatureVisualizationMonitor(units=[("net.conv7", 0)]), r"layer 'net.conv7' not found in LitClassifier"),
    (lambda ds: FeatureVisualizationMonitor(units=[("net.conv1", 6)]), r"it has 6 channels \(valid 0..5\)"),
    (lambda ds: FeatureVisualizationMonitor(filters="net.fc"), r"not a Conv2d layer of LitClassifier; Conv2d layers: net.conv1, net.conv2"),
    (lambda ds: FeatureVisualizationMonitor(classes=[1, 4], probe=ProbeSet(ds.tensors[0][:4])),
     r"class 4 is out of range: LitClassifier returns 4 classes \(valid 0..3\)"),
    (lambda ds: FeatureVisualizationMonitor(classes=[9]), r"class 9 is out of range: LitClassifier returns 4 classes"),
])
def test_bad_arguments_fail_at_setup_before_training(tmp_path, make, message):
    ds = image_data(32)
    model = LitClassifier(SmallCNN())
    model.example_input_array = ds.tensors[0][:2]  # without a probe, the class count comes from it
    steps = _Steps()
    tr = trainer(tmp_path, [make(ds), steps], max_epochs=1)
    with pytest.raises(ValueError, match=message):
        tr.fit(model, DataLoader(ds, batch_size=16), DataLoader(ds, batch_size=16))
    assert steps.n == 0


def test_without_probe_or_example_the_class_count_is_checked_on_the_first_validation_batch(tmp_path):
    ds = image_data(32)
    tr = trainer(tmp_path, [FeatureVisualizationMonitor(classes=[5])], max_epochs=1, num_sanity_val_steps=1)
    with pytest.raises(ValueError, match=r"class 5 is out of range: LitClassifier returns 4 classes"):
        tr.fit(LitClassifier(SmallCNN()), DataLoader(ds, batch_size=16), DataLoader(ds, batch_size=16))
    assert tr.global_step == 0  # the sanity check's batch, before any training step


def test_state_dict_round_trip_keeps_range_scale_and_history(tmp_path):
    monitor = FeatureVisualizationMonitor(steps=2, history=2)
    _fit(tmp_path, [monitor], epochs=3)
    state = monitor.state_dict()
    assert [e for e, _ in state["history"]] == [1, 2]  # the last two epochs
    fresh = FeatureVisualizationMonitor(steps=2, history=2)
    fresh.load_state_dict(state)
    assert fresh.state_key == monitor.state_key
    again = fresh.state_dict()
    assert again["input_shape"] == [1, 8, 8] and again["filter_vmax"] == state["filter_vmax"]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(again["history"], state["history"]))
    assert all(torch.equal(a, b) for a, b in zip(again["value_range"], state["value_range"]))


def test_pixel_ascent_is_torch_adam_on_the_input_with_an_l2_penalty():
    """The plain case, written with ``torch.optim.Adam``: the same numbers."""
    torch.manual_seed(0)
    net = trained_batchnorm(SmallCNN())
    l2, lr, steps = 1e-2, 0.05, 20
    ours = F.activation_maximization(net, (1, 8, 8), [1, 3], steps=steps, lr=lr, l2=l2, seed=5)
    start = 0.01 * torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    x = start.repeat(2, 1, 1, 1).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    for _ in range(steps):
        loss = -net(x).gather(1, torch.tensor([[1], [3]])).sum() + l2 * x.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.testing.assert_close(ours, x.detach(), rtol=1e-4, atol=1e-5)
