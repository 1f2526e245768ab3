"""Dead-ReLU statistics: the functional recorder (known answers, naming, cleanup) and DeadReLUMonitor."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch import nn

from .fixtures import (
    RELU_KINDS,
    ConvNet,
    DenseNet,
    NoReLUNet,
    dense_data,
    hooks_on,
    image_data,
    loader,
    read_events,
    trainer,
)
from lightning_xai import ProbeSet
from lightning_xai import functional as F
from lightning_xai.callbacks import AttributionMonitor, DeadReLUMonitor
from lightning_xai.callbacks._cache import cache_for


def _trainer(tmp_path, callbacks, epochs=1, logger=True, **kw):
    """The shared Trainer with this module's settings: logs to tmp_path/tb/version_0, Lightning's own
    sanity check (2 batches) and determinism setting."""
    kw = {"num_sanity_val_steps": 2, "deterministic": None, **kw}
    return trainer(tmp_path, callbacks, epochs, logger=logger, name="tb", version=0, **kw)


def _events(tmp_path):
    return read_events(tmp_path / "tb" / "version_0")


def _no_mode() -> bool:
    return torch._C._len_torch_function_stack() == 0


# ---------------------------------------------------------------------------------------------- functional
@pytest.mark.parametrize("kind", RELU_KINDS)
def test_k_of_n_dead_for_every_relu_kind(kind):
    net = DenseNet(n=10, dead=[1, 4, 7], kind=kind).eval()
    x = torch.rand(20, 6)
    s = F.dead_relu_stats(net, x)
    assert list(s.layers) == ["fc1"]  # named after the module whose output it rectifies
    fc1 = s.layers["fc1"]
    assert (fc1.units, fc1.dead, fc1.positions) == (10, 3, 20)
    assert fc1.dead_fraction == pytest.approx(0.3) and s.dead_fraction == pytest.approx(0.3)
    assert fc1.on_rate.tolist() == [0.0 if i in (1, 4, 7) else 1.0 for i in range(10)]
    assert fc1.mean_on_rate == pytest.approx(0.7)
    assert not hooks_on(net) and _no_mode()


@pytest.mark.parametrize("channels,dead", [(8, [0, 5]), (5, [1, 2, 3])])
def test_k_of_n_dead_channels_for_conv(channels, dead):
    net = ConvNet(channels=channels, dead=dead).eval()
    for size in (4, 7):  # any spatial size
        s = F.dead_relu_stats(net, torch.rand(3, 1, size, size))
        c = s.layers["conv"]
        assert c.unit == "channel" and c.units == channels and c.positions == 3 * size * size
        assert c.dead == len(dead) and s.dead_fraction == pytest.approx(len(dead) / channels)


def test_counts_match_a_direct_computation_on_random_weights():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 9), nn.ReLU6()
    )
    net.eval()
    x = torch.randn(7, 2, 6, 6)
    with torch.no_grad(), F.ReLURecorder(net) as rec:
        net(x[:3])
        net(x[3:])
        conv_act = torch.relu(net[1](net[0](x)))
        dense_act = TF.relu6(net[4](net[3](conv_act)))
    assert list(rec.counts) == ["0", "4"]  # conv -> bn -> relu is named after the conv
    c, d = rec.counts["0"], rec.counts["4"]
    assert torch.equal(c.positive, (conv_act > 0).sum((0, 2, 3)))
    assert torch.allclose(c.abs_sum, conv_act.abs().sum((0, 2, 3)).double())
    assert c.positions == 7 * 16
    assert torch.equal(d.positive, (dense_act > 0).sum(0)) and d.positions == 7
    # the ReDo score of Sokar et al.: mean |h| of a unit divided by the layer's mean of that
    s = rec.statistics(tau=0.5)
    mean_abs = dense_act.abs().mean(0).double()
    score = mean_abs / mean_abs.mean()
    assert torch.allclose(s.layers["4"].score, score)
    assert s.layers["4"].dormant == int((score <= 0.5).sum())
    assert s.dead == int((conv_act > 0).sum((0, 2, 3)).eq(0).sum() + (dense_act > 0).sum(0).eq(0).sum())


def test_dormant_fraction_known_answer_and_tau_zero_is_dead():
    # four units with constant activations 0, 0.1, 1, 2.9 -> layer mean 1.0 -> scores = the activations
    c = F.ReLUCounts(
        positive=torch.tensor([0, 5, 5, 5]),
        abs_sum=torch.tensor([0.0, 0.5, 5.0, 14.5], dtype=torch.float64),
        positions=5,
    )
    assert F.relu_statistics({"a": c}, tau=0.1).layers["a"].dormant == 2
    assert F.relu_statistics({"a": c}, tau=0.05).layers["a"].dormant == 1
    s0 = F.relu_statistics({"a": c}, tau=0.0)
    assert s0.layers["a"].dormant == s0.layers["a"].dead == 1
    assert F.relu_statistics({"a": c}, tau=1.0).dormant_fraction == 0.75
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        F.relu_statistics({"a": c}, tau=-0.1)


def test_all_is_dead_units_over_all_units_not_mean_of_fractions():
    a = F.ReLUCounts(torch.tensor([0, 1]), torch.tensor([0.0, 1.0], dtype=torch.float64), 1)  # 1/2 dead
    b = F.ReLUCounts(torch.zeros(8, dtype=torch.long), torch.zeros(8, dtype=torch.float64), 1)  # 8/8 dead
    s = F.relu_statistics({"a": a, "b": b})
    assert s.dead_fraction == pytest.approx(9 / 10)  # a mean of fractions would say 0.75


def test_nonfinite_activations_give_nan_not_a_verdict():
    net = DenseNet(n=4, dead=[0]).eval()
    x = torch.rand(5, 6)
    x[2, 0] = float("nan")
    s = F.dead_relu_stats(net, x)
    assert s.layers["fc1"].nonfinite > 0
    assert math.isnan(s.layers["fc1"].dead_fraction) and math.isnan(s.dead_fraction)


def test_sequence_outputs_count_the_last_dimension():
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 5)
            self.conv = nn.Conv1d(5, 4, 1)

        def forward(self, x):  # x: (N, L, 3)
            h = TF.relu(self.proj(x))  # (N, L, 5): units are the 5 features
            return torch.relu(self.conv(h.transpose(1, 2)))  # (N, 4, L): units are the 4 channels

    net = Seq()
    with torch.no_grad():
        net.proj.weight.fill_(1.0)
        net.proj.bias.copy_(torch.tensor([1.0, -9.0, 1.0, -9.0, 1.0]))
    s = F.dead_relu_stats(net, torch.rand(2, 7, 3))
    assert s.layers["proj"].unit == "feature" and s.layers["proj"].units == 5 and s.layers["proj"].positions == 14
    assert s.layers["proj"].dead == 2
    assert s.layers["conv"].unit == "channel" and s.layers["conv"].units == 4 and s.layers["conv"].positions == 14


def test_what_counts_as_a_relu():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.d, self.e = (nn.Linear(3, 4) for _ in range(5))
            self.tanh_like = nn.Hardtanh(-1.0, 1.0)  # not a rectifier
            self.clip = nn.Hardtanh(0.0, 2.0)  # a ReLU clipped at 2, like ReLU6
            self.score = nn.Linear(3, 1)

        def forward(self, x):
            h = TF.hardtanh(self.a(x), 0.0, 6.0) + TF.hardtanh(self.b(x)) + self.tanh_like(self.c(x))
            h = h + self.clip(self.d(x)) + TF.leaky_relu(self.e(x))
            return h.sum(1) + torch.relu(self.score(x).squeeze(1))  # (N,): one unit

    s = F.dead_relu_stats(Net(), torch.randn(5, 3))
    # the last one has no producing module (squeeze made a new tensor): the caller's 2nd functional ReLU
    assert list(s.layers) == ["a", "d", "relu1"]
    assert (s.layers["relu1"].units, s.layers["relu1"].positions) == (1, 5)


def test_naming_of_functional_and_shared_relus():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 4)
            self.fc2 = nn.Linear(4, 4)
            self.act = nn.ReLU()  # one ReLU module used after two layers
            self.block = nn.Linear(4, 4)

        def forward(self, x):
            x = self.act(self.fc1(x))
            x = self.act(self.fc2(x))
            x = torch.relu(self.block(x) + x)  # producer unknown (a sum): caller + index
            return x.relu_()  # rectifies a non-module tensor again: second call of the caller

    s = F.dead_relu_stats(Net(), torch.randn(3, 4))
    assert list(s.layers) == ["fc1", "fc2", "relu0", "relu1"]


def test_no_hooks_or_mode_left_after_an_exception_in_forward():
    net = DenseNet(kind="functional").eval()
    net.raise_when = (0, None)
    with pytest.raises(RuntimeError, match="exploded"):
        with F.ReLURecorder(net):
            net(torch.rand(2, 6))
    assert not hooks_on(net) and _no_mode()
    # and inside the block, the mode is only active while forward runs, even when forward raised
    rec = F.ReLURecorder(net)
    with rec:
        with pytest.raises(RuntimeError):
            net(torch.rand(2, 6))
        assert _no_mode()
    assert not rec.installed


def test_relus_outside_forward_are_not_counted_and_inference_mode_works():
    net = DenseNet(kind="torch", dead=[0]).eval()
    with torch.inference_mode(), F.ReLURecorder(net) as rec:
        out = net(torch.rand(4, 6))
        torch.relu(out)  # e.g. in a loss: not a layer of the model
    assert list(rec.counts) == ["fc1"] and rec.calls == 1


def test_reduced_state_sums_counts():
    net = DenseNet(n=5, dead=[2]).eval()
    with torch.no_grad(), F.ReLURecorder(net) as a:
        net(torch.rand(3, 6))
    with torch.no_grad(), F.ReLURecorder(net) as b:
        net(torch.rand(4, 6))
    la, lb = F.relu_layout(a.counts), F.relu_layout(b.counts)
    assert la == lb
    state = F.ReLUCountState(la)
    state.update(a.counts)
    state.update(b.counts)
    summed = state.compute()["fc1"]
    merged = F.merge_relu_counts([a.counts, b.counts])["fc1"]
    assert summed.positions == merged.positions == 7
    assert torch.equal(summed.positive, merged.positive)
    assert torch.allclose(summed.abs_sum, merged.abs_sum)


# ---------------------------------------------------------------------------------------------- callback: errors
def test_bad_arguments_raise_clear_errors():
    probe = ProbeSet(torch.rand(8, 6))
    with pytest.raises(ValueError, match="needs a probe"):
        DeadReLUMonitor()
    with pytest.raises(ValueError, match="does not use a probe"):
        DeadReLUMonitor(probe, source="validation")
    with pytest.raises(ValueError, match="source must be 'probe' or 'validation'"):
        DeadReLUMonitor(probe, source="train")
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        DeadReLUMonitor(probe, tau=-1)
    with pytest.raises(ValueError, match="warn_above must be None or a fraction"):
        DeadReLUMonitor(probe, warn_above=1.5)
    with pytest.raises(ValueError, match="every_n_epochs"):
        DeadReLUMonitor(source="validation", every_n_epochs=0)
    DeadReLUMonitor(source="validation")  # needs no probe


def test_probe_that_does_not_fit_fails_at_setup(tmp_path):
    mon = DeadReLUMonitor(ProbeSet(torch.rand(8, 5)))  # the model takes 6 features
    trainer = _trainer(tmp_path, [mon], logger=False)
    with pytest.raises(ValueError, match="do not fit DenseNet"):
        trainer.validate(DenseNet(), loader(dense_data()))


# ---------------------------------------------------------------------------------------------- callback: runs
@pytest.mark.parametrize("source", ["probe", "validation"])
def test_trainer_logs_the_tags_with_known_values(tmp_path, source):
    model = DenseNet(n=10, dead=[0, 3, 9], kind="functional", lr=0.0)
    probe = ProbeSet(torch.rand(16, 6)) if source == "probe" else None
    mon = DeadReLUMonitor(probe, source=source, tau=0.1)
    trainer = _trainer(tmp_path, [mon], epochs=2)
    trainer.fit(model, loader(dense_data()), loader(dense_data(seed=1)))
    ea = _events(tmp_path)
    tags = ea.Tags()
    for tag in ("xai/dead_relu/fc1", "xai/dead_relu/all", "xai/dead_relu_dormant/fc1", "xai/dead_relu_dormant/all",
                "xai/dead_relu_onrate_mean/fc1"):
        assert tag in tags["scalars"], tag
    dead = [e.value for e in ea.Scalars("xai/dead_relu/all")]
    assert dead == pytest.approx([0.3, 0.3])  # one value per validation epoch
    assert [e.value for e in ea.Scalars("xai/dead_relu/fc1")] == pytest.approx([0.3, 0.3])
    assert ea.Scalars("xai/dead_relu_dormant/all")[-1].value == pytest.approx(0.3)
    assert ea.Scalars("xai/dead_relu_onrate_mean/fc1")[-1].value == pytest.approx(0.7)
    hist = ea.Histograms("xai/dead_relu_onrate/fc1")
    assert len(hist) == 2
    h = hist[-1].histogram_value
    assert h.num == 10 and h.min == 0.0 and h.max == 1.0 and h.sum == pytest.approx(7.0)
    assert float(trainer.callback_metrics["xai/dead_relu/all"]) == pytest.approx(0.3)
    expected_positions = 16 if source == "probe" else len(dense_data(seed=1))  # sanity check not counted
    assert mon.last_summary.layers["fc1"].positions == expected_positions
    assert not any(model.hooks_in_training) and not hooks_on(model) and _no_mode()


def test_validation_source_matches_the_functional_count_over_the_validation_set(tmp_path):
    torch.manual_seed(3)
    model = DenseNet(n=12, kind="module")
    nn.init.normal_(model.fc1.weight, std=1.0)  # random: some units dead on some inputs only
    val = dense_data(n=40, seed=5)
    mon = DeadReLUMonitor(source="validation", tau=0.3)
    _trainer(tmp_path, [mon], logger=False).validate(model, loader(val, batch_size=7))
    ref = F.dead_relu_stats(model, val.tensors[0], tau=0.3)
    got = mon.last_summary
    assert got.layers["fc1"].positions == 40
    assert torch.allclose(got.layers["fc1"].on_rate, ref.layers["fc1"].on_rate)
    assert torch.allclose(got.layers["fc1"].score, ref.layers["fc1"].score)
    assert (got.dead, got.dormant) == (ref.dead, ref.dormant)


def test_validation_source_makes_zero_extra_forward_passes(tmp_path):
    def run(callbacks):
        torch.manual_seed(0)
        model = DenseNet(dead=[1])
        _trainer(tmp_path, callbacks, epochs=2, logger=False).fit(
            model, loader(dense_data()), loader(dense_data(seed=1))
        )
        return model.forward_calls, model.forward_rows

    mon = DeadReLUMonitor(source="validation")
    assert run([mon]) == run([])
    assert mon.last_summary is not None and mon.last_summary.dead == 1


def test_probe_source_shares_the_probe_forward_with_attribution(tmp_path):
    probe = ProbeSet(torch.rand(16, 6), targets=torch.arange(16) % 3)

    def run(callbacks, epochs=2):
        torch.manual_seed(0)
        model = DenseNet(dead=[1])
        trainer = _trainer(tmp_path, callbacks, epochs=epochs, logger=False, num_sanity_val_steps=0)
        trainer.fit(model, loader(dense_data()), loader(dense_data(seed=1)))
        return model.forward_calls

    base = run([])
    alone = run([DeadReLUMonitor(probe)])
    # alone: a 2-row fit check at setup + one probe forward per validation epoch
    assert alone - base == 1 + 2
    attr = run([AttributionMonitor(probe, methods=["saliency"], log_images=False)])
    for order in ("before", "after"):
        mon = DeadReLUMonitor(probe)
        a = AttributionMonitor(probe, methods=["saliency"], log_images=False)
        both = run([mon, a] if order == "before" else [a, mon])
        if order == "after":
            # only the setup check: the counts ride on the attribution pass's own forward
            assert both - attr == 1
        else:
            # counted first, on the probe forward that AttributionMonitor then reuses for its target:
            # one forward per epoch, which AttributionMonitor alone fuses into its gradient pass
            assert both - attr == 1 + 2
        assert mon.last_summary.dead == 1 and mon.last_summary.layers["fc1"].positions == 16


def test_observing_does_not_perturb_training(tmp_path):
    def run(callbacks):
        torch.manual_seed(0)
        model = DenseNet(dead=[1], dropout=0.3, lr=0.1)
        nn.init.normal_(model.fc1.weight)
        _trainer(tmp_path, callbacks, epochs=2, logger=False).fit(
            model, loader(dense_data()), loader(dense_data(seed=1))
        )
        return {k: v.clone() for k, v in model.state_dict().items()}

    ref = run([])
    probe = ProbeSet(torch.rand(8, 6))
    got = run([DeadReLUMonitor(probe, tau=0.1), DeadReLUMonitor(source="validation")])
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_no_relu_gives_one_warning_and_no_crash(tmp_path):
    model = NoReLUNet()
    mon = DeadReLUMonitor(source="validation")
    trainer = _trainer(tmp_path, [mon], epochs=3, logger=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, loader(dense_data()), loader(dense_data(seed=1)))
    ours = [w for w in caught if "no ReLU" in str(w.message)]
    assert len(ours) == 1
    assert "xai/dead_relu/all" not in trainer.callback_metrics
    assert mon.last_summary is not None and mon.last_summary.layers == {}


def test_warn_above(tmp_path):
    model = DenseNet(n=4, dead=[0, 1, 2])
    mon = DeadReLUMonitor(source="validation", warn_above=0.5)
    with pytest.warns(UserWarning, match=r"3/4 ReLU units \(75.0%\) are dead.*worst: fc1 3/4"):
        _trainer(tmp_path, [mon], logger=False).validate(model, loader(dense_data()))


@pytest.mark.parametrize("source", ["probe", "validation"])
def test_nothing_left_on_the_model_after_an_exception(tmp_path, source):
    model = DenseNet(kind="functional")
    probe = ProbeSet(torch.rand(5, 6)) if source == "probe" else None
    model.raise_when = (1, 5 if source == "probe" else None)  # epoch 1: the probe forward / a validation batch
    mon = DeadReLUMonitor(probe, source=source)
    trainer = _trainer(tmp_path, [mon], epochs=3, logger=False)
    with pytest.raises(RuntimeError, match="exploded"):
        trainer.fit(model, loader(dense_data()), loader(dense_data(seed=1)))
    assert mon.last_summary is not None  # epoch 0 ran
    assert not hooks_on(model) and _no_mode()
    assert mon._recorder is None and cache_for(trainer).taps_for(probe.fingerprint() if probe else "") == []


def test_validate_runs_under_inference_mode_and_every_n_epochs(tmp_path):
    model = ConvNet(channels=6, dead=[2])
    mon = DeadReLUMonitor(ProbeSet(torch.rand(4, 1, 5, 5)))
    trainer = _trainer(tmp_path, [mon], logger=False)
    trainer.validate(model, loader(image_data(12, 3, style="noise", size=6)))
    # outside fit the values go under the stage's own tags, never over what fit logged
    assert float(trainer.callback_metrics["validate/xai/dead_relu/conv"]) == pytest.approx(1 / 6)
    assert float(trainer.callback_metrics["validate/xai/dead_relu/all"]) == pytest.approx(1 / 6)
    assert "xai/dead_relu/all" not in trainer.callback_metrics

    # every_n_epochs schedules fit's validation runs; a validate() the user asks for always runs
    skip = DeadReLUMonitor(source="validation", every_n_epochs=2)
    trainer = _trainer(tmp_path, [skip], logger=False)
    trainer.validate(model, loader(image_data(12, 3, style="noise", size=6)))
    assert skip.last_summary is not None and "validate/xai/dead_relu/all" in trainer.callback_metrics
    assert skip.validation_runs == 0  # and it is not counted as one of fit's


def test_two_monitors_coexist_and_state_roundtrip():
    probe = ProbeSet(torch.rand(4, 6))
    a, b = DeadReLUMonitor(probe, tau=0.0), DeadReLUMonitor(probe, tau=0.1)
    assert a.state_key != b.state_key != DeadReLUMonitor(source="validation").state_key
    b.load_state_dict(a.state_dict())
    other = DeadReLUMonitor(ProbeSet(torch.rand(4, 6)))
    with pytest.warns(UserWarning, match="different probe"):
        other.load_state_dict(a.state_dict())


def test_histograms_without_tensorboard_warn_once(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    mon = DeadReLUMonitor(source="validation")
    trainer = _trainer(tmp_path, [mon], epochs=2, logger=CSVLogger(str(tmp_path)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(DenseNet(dead=[0]), loader(dense_data()), loader(dense_data(seed=1)))
    assert len([w for w in caught if "histograms are not logged" in str(w.message)]) == 1
    assert np.isclose(float(trainer.callback_metrics["xai/dead_relu/all"]), 0.1)


def test_early_stopping_can_monitor_the_dead_fraction(tmp_path):
    from pytorch_lightning.callbacks import EarlyStopping

    stop = EarlyStopping(monitor="xai/dead_relu/all", mode="min", patience=1, strict=True)
    trainer = _trainer(tmp_path, [DeadReLUMonitor(source="validation"), stop], epochs=6, logger=False)
    trainer.fit(DenseNet(dead=[0, 1], lr=0.0), loader(dense_data()), loader(dense_data(seed=1)))
    # the fraction stays 0.2 (lr=0): no improvement after epoch 0, so patience 1 stops after epoch 1
    assert trainer.current_epoch == 2 and stop.stopped_epoch == 1
    assert float(stop.best_score) == pytest.approx(0.2)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "2d", "3d", "float64", "nan", "in-slices"])
def test_fast_unit_counts_equal_the_plain_definition(layout):
    from lightning_xai.functional.dead_relu import _unit_counts

    g = torch.Generator().manual_seed(0)
    # "in-slices": large enough samples that the count is made a few samples at a time
    shape = {"2d": (64, 10), "3d": (8, 5, 7), "in-slices": (40, 3, 300, 200)}.get(layout, (16, 6, 9, 9))
    act = torch.relu(torch.randn(shape, generator=g))
    act[:, 2] = 0.0  # a dead unit
    if layout == "channels_last":
        act = act.contiguous(memory_format=torch.channels_last)
    if layout == "float64":
        act = act.double()
    if layout == "nan":
        act[3, 4, 1, 1] = float("nan")
    dims = [d for d in range(act.dim()) if d != 1]
    positive, total = _unit_counts(act, 1)
    assert positive.dtype == torch.int64
    assert torch.equal(positive, (act > 0).sum(dim=dims))  # NaN is not > 0
    torch.testing.assert_close(total, act.sum(dim=dims, dtype=total.dtype), equal_nan=True)
    assert positive[2] == 0


def test_fast_unit_counts_reuse_one_buffer_and_stay_exact_past_float32_integers():
    from lightning_xai.functional.dead_relu import _COUNT_SLICE, _unit_counts

    scratch: dict = {}
    g = torch.Generator().manual_seed(1)
    small = torch.relu(torch.randn(4, 3, 5, 5, generator=g))
    big = torch.relu(torch.randn(9, 8, 64, 64, generator=g))  # several samples per slice, several slices
    for act in (small, big, small):
        positive, _ = _unit_counts(act, 1, scratch)
        assert torch.equal(positive, (act > 0).sum(dim=(0, 2, 3)))
    buffer = scratch[torch.float32]
    assert buffer.numel() <= _COUNT_SLICE  # grown once, to one slice, and kept
    _unit_counts(big, 1, scratch)
    assert scratch[torch.float32] is buffer
    # made under inference mode (Lightning's validation), used outside it, and the other way round
    for first, then in ((torch.inference_mode, torch.no_grad), (torch.no_grad, torch.inference_mode)):
        scratch.clear()
        with first():
            _unit_counts(big, 1, scratch)
        with then():
            positive, _ = _unit_counts(big, 1, scratch)
        assert torch.equal(positive, (big > 0).sum(dim=(0, 2, 3)))
    # 257 x 65535 positive values in one unit: odd and above 2**24, so not a float32 integer
    act = torch.ones(257, 1, 256, 256)
    act[:, 0, 0, 0] = 0.0
    scratch.clear()
    positive, total = _unit_counts(act, 1, scratch)
    assert torch.float32 in scratch  # counted by the sliced sign sums, not the fallback
    assert positive.item() == 257 * 65535 and positive.dtype == torch.int64
