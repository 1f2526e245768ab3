"""DESIGN.md invariants: observing never perturbs training, in every context Lightning calls from."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

import pytorch_lightning as pl

from lightning_xai import ProbeSet
from lightning_xai import functional as F
from lightning_xai.callbacks import AttributionMonitor

from .fixtures import LitClassifier, SmallCNN, image_data, trained_batchnorm, trainer

ALL = list(F.METHODS)


def _fit(tmp_path, with_callback: bool):
    pl.seed_everything(7)
    ds = image_data(64)
    model = LitClassifier(SmallCNN())
    callbacks = []
    if with_callback:
        probe = ProbeSet.from_dataset(ds, n=8, seed=1)
        callbacks = [AttributionMonitor(probe, methods=ALL)]
    tr = trainer(tmp_path, callbacks, max_epochs=3)
    tr.fit(model, DataLoader(ds, batch_size=16, shuffle=True), DataLoader(ds, batch_size=32))
    return model, torch.random.get_rng_state()


def test_training_with_monitor_gives_bit_identical_weights(tmp_path):
    without, rng_without = _fit(tmp_path / "a", with_callback=False)
    with_cb, rng_with = _fit(tmp_path / "b", with_callback=True)
    a, b = without.state_dict(), with_cb.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # includes BatchNorm running stats
    assert torch.equal(rng_without, rng_with)  # the global RNG stream was not consumed


def _snapshot(model: torch.nn.Module):
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "hooks": {
            k: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for k, m in model.named_modules()
        },
        "rng": torch.random.get_rng_state(),
        "grad_mode": torch.is_grad_enabled(),
    }


def _assert_same(before, after):
    for k in before["params"]:
        assert torch.equal(before["params"][k], after["params"][k]), k
    for k, g in before["grads"].items():
        assert (g is None) == (after["grads"][k] is None), k
        if g is not None:
            assert torch.equal(g, after["grads"][k]), k
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["hooks"] == after["hooks"]
    assert torch.equal(before["rng"], after["rng"])
    assert before["grad_mode"] == after["grad_mode"]


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("context", ["plain", "no_grad", "inference_mode"])
def test_methods_leave_model_untouched(method, context):
    torch.manual_seed(0)
    model = trained_batchnorm(SmallCNN()).train()  # train mode: BN would move, dropout would draw
    model.fc.weight.requires_grad_(False)  # a frozen layer stays frozen
    x = torch.rand(4, 1, 8, 8)
    model(x).sum().backward()  # existing parameter grads must survive untouched
    before = _snapshot(model)
    ctx = {"plain": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}[context]
    with ctx():
        attr = F.attribute(model, x, 1, method)
    assert attr.shape == x.shape and torch.isfinite(attr).all()
    _assert_same(before, _snapshot(model))


class _Boom(RuntimeError):
    pass


@pytest.mark.parametrize("method", ALL)
def test_state_restored_when_a_method_raises_midway(method):
    torch.manual_seed(0)
    model = trained_batchnorm(SmallCNN()).train()
    calls = {"n": 0}

    def explode(module, args, output):  # a user's hook that fails on the 2nd forward
        calls["n"] += 1
        if calls["n"] == 2:
            raise _Boom("simulated failure inside the forward pass")

    handle = model.conv2.register_forward_hook(explode)
    x = torch.rand(6, 1, 8, 8)
    before = _snapshot(model)
    with pytest.raises(_Boom):
        F.attribute(model, x, 0, method, **({"chunk_size": 3} if method != "grad_cam" else {"chunk_size": 3}))
    after = _snapshot(model)
    _assert_same(before, after)
    handle.remove()


def test_validate_runs_under_inference_mode_and_logs(tmp_path):
    ds = image_data(32)
    probe = ProbeSet.from_dataset(ds, n=4, seed=0)
    monitor = AttributionMonitor(probe, methods=["saliency", "integrated_gradients"])
    seen = {}

    class Spy(pl.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            seen["inference_mode"] = torch.is_inference_mode_enabled()

    tr = trainer(tmp_path, [monitor, Spy()])
    tr.validate(LitClassifier(SmallCNN()), DataLoader(ds, batch_size=16))
    assert seen["inference_mode"]  # Lightning's default: the hook really ran under inference mode
    assert set(monitor.last_attributions) == {"saliency", "integrated_gradients"}
    assert "validate/xai/attr/saliency/gini" in tr.callback_metrics  # the stage's own tags


def test_nested_explaining_prepares_nothing_twice_and_a_late_task_still_prepares(monkeypatch):
    """``explaining`` nested in one of the same model (or a wrapper of it) only turns autograd on, and leaves
    everything as the outer one found it; a copy of the context made inside the block but run after it closed
    (an asyncio task started there) prepares the model itself."""
    import contextvars

    from lightning_xai.functional import _guard
    from lightning_xai.functional._guard import explaining

    saves = []
    save = _guard._buffers
    monkeypatch.setattr(_guard, "_buffers", lambda model: saves.append(model) or save(model))

    class Wrapper(torch.nn.Module):  # as the library's wrappers (and torch.compile's) hold the model
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self._orig_mod = model

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2), torch.nn.Dropout(0.5)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    seen = []

    def late() -> None:
        with explaining(net):
            seen.append((net.training, net[0].weight.requires_grad))

    with torch.inference_mode(), explaining(net):
        with explaining(Wrapper(net)):  # nested, through a wrapper: nothing saved again
            x = torch.ones(4, 3, requires_grad=True)
            net(x).sum().backward()
            seen.append((net.training, net[0].weight.requires_grad, x.grad is not None))
        copied = contextvars.copy_context()
    assert seen == [(False, False, True)] and saves == [net]
    assert net.training and net[0].weight.requires_grad and net[0].weight.grad is None
    copied.run(late)
    assert seen[-1] == (False, False) and net.training and saves == [net, net]  # the late one saved its own
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
