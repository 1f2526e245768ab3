"""SanityGate, DeadReLUMonitor and FeatureVisualizationMonitor on probes of several inputs; the gate's
checks on multi-label (multi-hot) targets. Values are checked against Captum's maps and numbers
computed by hand on the same model and inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl

from lightning_xai import ProbeSet, checks
from lightning_xai import functional as F
from lightning_xai.callbacks import DeadReLUMonitor, FeatureVisualizationMonitor, SanityGate

from .fixtures import LitMulti, LitTwo, TwoBranchReLU, multi_hot, read_events, trainer, two_input_data

captum = pytest.importorskip("captum.attr")


def _spearman_rows(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """scipy's Spearman of each row of |a| and |b| (image maps summed over channels first); a constant row
    (a masked class's all-zero map) scores 1 against a constant row, else 0 (``map_similarity``'s rule)."""
    pa, pb = a.abs().detach(), b.abs().detach()
    if pa.dim() == 4:
        pa, pb = pa.sum(1), pb.sum(1)
    out = []
    for x, y in zip(pa.flatten(1).numpy(), pb.flatten(1).numpy()):
        flat = (np.ptp(x) == 0, np.ptp(y) == 0)
        out.append(float(all(flat)) if any(flat) else spearmanr(x, y)[0])
    return np.array(out)


def _value(gate: SanityGate, name: str) -> float:
    return next(r.value for r in gate.last_results if r.name == name)


# ---------------------------------------------------------------------------------------------- DeadReLUMonitor
def test_dead_relu_counts_on_a_dict_probe_equal_counts_by_hand(tmp_path):
    g = torch.Generator().manual_seed(0)
    image, meta, y = torch.rand(12, 1, 5, 5, generator=g), torch.rand(12, 3, generator=g), torch.arange(12) % 3
    probe = ProbeSet({"image": image[:8], "meta": meta[:8]}, targets=y[:8])
    monitor = DeadReLUMonitor(probe)
    model = TwoBranchReLU(dead_channels=[1], dead_units=[0, 4])
    ds = TensorDataset(image, meta, y)
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    tr.fit(model, DataLoader(ds, batch_size=6), DataLoader(ds, batch_size=6))

    seen = {}  # by hand: each ReLU's output on the probe, read by forward hooks
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, o.detach().clone()))
             for n, m in (("conv", model.conv_relu), ("meta", model.meta_relu))]
    with torch.no_grad():
        model.eval()(image=image[:8], meta=meta[:8])
    for h in hooks:
        h.remove()
    dead = {"conv": int((seen["conv"] <= 0).all(dim=(0, 2, 3)).sum()), "meta": int((seen["meta"] <= 0).all(0).sum())}
    summary = monitor.last_summary
    assert summary is not None and sorted(summary.layers) == ["conv", "meta"]
    assert {k: s.dead for k, s in summary.layers.items()} == dead == {"conv": 1, "meta": 2}
    assert (summary.layers["conv"].units, summary.layers["meta"].units) == (4, 6)
    assert float(tr.callback_metrics["xai/dead_relu/all"]) == pytest.approx(3 / 10)
    # the functional form takes a tuple of inputs too
    assert F.dead_relu_stats(model, (image[:8], meta[:8]), batch_size=3).dead == 3


# ---------------------------------------------------------------------------------------------- the gate, several inputs
def _two_input_run(tmp_path, gate_checks, target="true"):  # type: ignore[no-untyped-def]
    image, meta, mask, y = two_input_data(8)
    probe = ProbeSet((image[:6], meta[:6], mask[:6]), targets=y[:6])
    gate = SanityGate(probe, gate_checks, target=target, action="warn", verbose=False)
    model = LitTwo()
    ds = TensorDataset(image, meta, mask, y)
    trainer(tmp_path, [gate], max_epochs=1).fit(model, DataLoader(ds, batch_size=4), DataLoader(ds, batch_size=4))
    return gate, model, probe


def test_gate_checks_on_a_tuple_probe_equal_captum_and_hand_computed_values(tmp_path):
    region = torch.tensor([1.0, 0.0, 1.0, 0.0])
    gate, model, probe = _two_input_run(tmp_path, [
        checks.ParameterRandomization("saliency", max_similarity=1.0, layers=["net.fc"], seed=3),
        checks.RandomLogit("saliency", max_similarity=1.0, seed=5),
        checks.Completeness(max_error=1.0, n_steps=16),
        checks.SpuriousRegion(region, "saliency", max_mass=1.0, input=1),
        checks.Finite(["saliency", "integrated_gradients"]),
    ])
    image, meta, mask = probe.inputs
    y = probe.targets
    net = model.net.eval()
    sal = lambda m, t: captum.Saliency(m).attribute((image, meta), target=t, additional_forward_args=(mask,), abs=True)  # noqa: E731
    ref = sal(net, y)

    # parameter randomisation: the same re-initialised copy, Captum's maps, scipy's Spearman per input, mean over inputs
    clone = F.randomized_copy(model, ["net.fc"], generator=torch.Generator().manual_seed(3)).net.eval()
    rand = sal(clone, y)
    want = np.mean([(_spearman_rows(ref[0], rand[0]) + _spearman_rows(ref[1], rand[1])) / 2])
    assert _value(gate, "parameter_randomization/saliency") == pytest.approx(want, abs=1e-6)

    # random logit: the same other classes, drawn from the check's seed
    other = (y + torch.randint(1, 3, (6,), generator=torch.Generator().manual_seed(5))) % 3
    alt = sal(net, other)
    want = np.mean((_spearman_rows(ref[0], alt[0]) + _spearman_rows(ref[1], alt[1])) / 2)
    assert _value(gate, "random_logit/saliency") == pytest.approx(want, abs=1e-6)

    # completeness: Captum's integrated gradients over both inputs against f(x) - f(0), the mask riding along
    ig = captum.IntegratedGradients(net).attribute((image, meta), target=y, additional_forward_args=(mask,), n_steps=16)
    total = ig[0].flatten(1).sum(1) + ig[1].sum(1)
    with torch.no_grad():
        d = net(image, meta, mask).gather(1, y[:, None])[:, 0] - net(0 * image, 0 * meta, mask).gather(1, y[:, None])[:, 0]
    want = float((total - d).abs().sum() / d.abs().sum())
    assert _value(gate, "completeness") == pytest.approx(want, rel=1e-4, abs=1e-7)

    # the region lies in the metadata input: the share of that input's |saliency|
    want = float(((ref[1] * region).sum(1) / ref[1].sum(1)).mean())
    assert _value(gate, "spurious_region/saliency") == pytest.approx(want, abs=1e-6)
    assert _value(gate, "finite") == 0.0 and all(r.passed for r in gate.last_results)


@pytest.mark.parametrize("check,match", [
    (lambda: checks.RelevanceMass("saliency"), "a probe of several inputs .* holds no masks.*SpuriousRegion"),
    (lambda: checks.PointingGame("saliency"), "holds no masks"),
    (lambda: checks.SpuriousRegion(torch.ones(4), "saliency"), "needs input= to say which one"),
    (lambda: checks.SpuriousRegion(torch.ones(4), "saliency", input=2), "holds integers, which ride along"),
    (lambda: checks.SpuriousRegion(torch.ones(4), "saliency", input=5), r"input=5 is not one of its inputs.*\[0, 1\]"),
    (lambda: checks.ParameterRandomization("saliency", similarity="ssim"), "compared input by input; use similarity='spearman'"),
    (lambda: checks.Completeness(baseline=torch.zeros(1, 6, 6)), "give a number .* or None"),
])
def test_checks_that_need_one_input_say_why_at_setup(tmp_path, check, match):
    with pytest.raises(ValueError, match=match):
        _two_input_run(tmp_path, [check()])


def test_a_region_check_on_one_input_refuses_input_at_setup():
    probe = ProbeSet(torch.rand(4, 3), torch.arange(4) % 2)
    with pytest.raises(ValueError, match="names one of several inputs, but the probe has one; drop input="):
        checks.run([checks.SpuriousRegion(torch.ones(3), input=0)], torch.nn.Linear(3, 2), probe)


def test_token_mass_on_a_dict_probe_takes_the_ids_maps():
    class Tokens(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.emb, self.fc = torch.nn.Embedding(9, 4), torch.nn.Linear(4, 2)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            h = torch.tanh(self.emb(input_ids)) * attention_mask.unsqueeze(-1).float()
            return self.fc(h.sum(1))

    net = Tokens()
    ids = torch.randint(1, 9, (4, 5), generator=torch.Generator().manual_seed(1))
    ids[1, 3:] = 0
    mask = (ids != 0).long()
    y = torch.tensor([0, 1, 1, 0])
    token = int(ids[0, 0])
    probe = ProbeSet({"input_ids": ids, "attention_mask": mask}, targets=y)
    (result,) = checks.run([checks.TokenMass([token], "saliency", max_mass=1.0)], net, probe, target="true")
    grad = captum.LayerGradientXActivation(net, net.emb, multiply_by_inputs=False)
    maps = grad.attribute(ids, target=y, additional_forward_args=(mask,)).abs().sum(-1).masked_fill(ids == 0, 0.0)
    rows = (ids == token).any(1)
    want = ((maps * (ids == token)).sum(1) / maps.sum(1))[rows].mean()
    assert result.value == pytest.approx(float(want), rel=1e-5)


def test_the_gate_on_several_inputs_leaves_training_bit_identical(tmp_path):
    def fit(with_gate: bool):  # type: ignore[no-untyped-def]
        pl.seed_everything(7)
        image, meta, mask, y = two_input_data(16)
        probe = ProbeSet((image[:4], meta[:4], mask[:4]), targets=y[:4])
        gate = SanityGate(probe, [
            checks.ParameterRandomization("smoothgrad", max_similarity=1.0, layers=2),
            checks.RandomLogit("saliency", max_similarity=1.0),
            checks.Completeness(max_error=1.0, n_steps=8),
        ], action="warn", verbose=False)
        model = LitTwo()
        ds = TensorDataset(image, meta, mask, y)
        trainer(tmp_path / str(with_gate), [gate] if with_gate else [], max_epochs=2).fit(
            model, DataLoader(ds, batch_size=4, shuffle=True), DataLoader(ds, batch_size=8)
        )
        return model.state_dict(), torch.random.get_rng_state(), gate

    without, rng_without, _ = fit(False)
    with_gate, rng_with, gate = fit(True)
    assert len(gate.report) == 2  # the gate did evaluate
    assert without.keys() == with_gate.keys() and all(torch.equal(without[k], with_gate[k]) for k in without)
    assert torch.equal(rng_without, rng_with)


# ---------------------------------------------------------------------------------------------- multi-label targets
def _label_sum(net):  # type: ignore[no-untyped-def]
    return lambda x, w: (net(x) * w.float()).sum(1)


def test_every_gate_check_explains_the_labels_of_a_multi_label_probe(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(10, 5), multi_hot(10)
    y[0] = 1  # a sample carrying every class: random-logit has no other class for it and leaves it out
    probe = ProbeSet(x[:6], targets=y[:6])
    region = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])

    def make():  # type: ignore[no-untyped-def]
        return [
            checks.ParameterRandomization("saliency", max_similarity=1.0, layers=1, seed=2),
            checks.RandomLogit("saliency", max_similarity=1.0, seed=4),
            checks.Completeness(max_error=1.0, n_steps=16),
            checks.SpuriousRegion(region, "saliency", max_mass=1.0),
            checks.Finite(["saliency"]),
        ]

    gate = SanityGate(probe, make(), target="true", action="warn", verbose=False)
    model = LitMulti()
    ds = TensorDataset(x, y)
    trainer(tmp_path, [gate], max_epochs=1).fit(model, DataLoader(ds, batch_size=4), DataLoader(ds, batch_size=4))
    net, xs, ys = model.net.eval(), x[:6], y[:6]
    ref = captum.Saliency(_label_sum(net)).attribute(xs, additional_forward_args=(ys,), abs=True)

    want = {}
    clone = F.randomized_copy(net, ["2"], generator=torch.Generator().manual_seed(2)).eval()
    rand = captum.Saliency(_label_sum(clone)).attribute(xs, additional_forward_args=(ys,), abs=True)
    want["parameter_randomization/saliency"] = _spearman_rows(ref, rand).mean()
    draw = torch.rand(6, 4, generator=torch.Generator().manual_seed(4)).masked_fill(ys > 0, -1.0)
    other, rows = draw.argmax(1), (ys == 0).any(1)
    assert rows.tolist() == [False] + [True] * 5
    alt = captum.Saliency(net).attribute(xs, target=other, abs=True)
    want["random_logit/saliency"] = _spearman_rows(ref, alt)[rows.numpy()].mean()
    ig = captum.IntegratedGradients(_label_sum(net)).attribute(xs, additional_forward_args=(ys,), n_steps=16)
    with torch.no_grad():
        d = _label_sum(net)(xs, ys) - _label_sum(net)(0 * xs, ys)
    want["completeness"] = float((ig.sum(1) - d).abs().sum() / d.abs().sum())
    want["spurious_region/saliency"] = float(((ref * region).sum(1) / ref.sum(1)).mean())
    want["finite"] = 0.0

    standalone = {r.name: r.value for r in checks.run(make(), net, probe, target="true")}  # no engine: the checks' own
    for name, value in want.items():
        assert _value(gate, name) == pytest.approx(value, rel=1e-4, abs=1e-6), name
        assert standalone[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_several_inputs_and_multi_hot_targets_together():
    torch.manual_seed(1)

    class Joint(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(3, 4), torch.nn.Linear(2, 4)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.a(a)) * self.b(b)

    net = Joint()
    a, b, y = torch.randn(5, 3), torch.randn(5, 2), multi_hot(5)
    probe = ProbeSet({"a": a, "b": b}, targets=y)
    (result,) = checks.run([checks.Completeness(max_error=1.0, n_steps=8)], net, probe, target="true")

    def fwd(a, b, w):  # type: ignore[no-untyped-def]
        return (net(a, b) * w.float()).sum(1)

    ig = captum.IntegratedGradients(fwd).attribute((a, b), additional_forward_args=(y,), n_steps=8)
    with torch.no_grad():
        d = fwd(a, b, y) - fwd(0 * a, 0 * b, y)
    want = float(((ig[0].sum(1) + ig[1].sum(1)) - d).abs().sum() / d.abs().sum())
    assert result.value == pytest.approx(want, rel=1e-4, abs=1e-7)


# ---------------------------------------------------------------------------------------------- feature visualisation
class LinearTwo(pl.LightningModule):
    """``W_img . image + W_meta . meta + b`` over 3 classes; frozen (lr 0), so its optimum is known."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.img, self.meta = torch.nn.Linear(4, 3), torch.nn.Linear(2, 3)

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        return self.img(image.flatten(1)) + self.meta(meta)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        image, meta, y = batch
        return torch.nn.functional.cross_entropy(self(image, meta), y)

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        pass

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_feature_visualisation_optimises_several_floating_inputs_together(tmp_path):
    # ranges: the image's one pair [-50, 150] (centre 50); meta per feature [-100, 100] and [0, 200]
    image = torch.linspace(-50, 150, 6 * 4).reshape(6, 1, 2, 2)
    meta = torch.stack([torch.linspace(-100, 100, 6), torch.linspace(0, 200, 6)], 1)
    y = torch.arange(6) % 3
    l2 = 0.05
    monitor = FeatureVisualizationMonitor(probe=ProbeSet({"image": image, "meta": meta}, targets=y), l2=l2, steps=256)
    model = LinearTwo()
    ds = TensorDataset(image, meta, y)
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    tr.fit(model, DataLoader(ds, batch_size=3), DataLoader(ds, batch_size=3))
    got = monitor.last_images["classes"]
    assert sorted(got) == ["image", "meta"] and got["image"].shape == (3, 1, 2, 2) and got["meta"].shape == (3, 2)
    # the optimum of w.x - l2 |x - centre|^2 is centre + w / (2 l2), input by input (inside the ranges here)
    w_img, w_meta = model.img.weight.detach(), model.meta.weight.detach()
    torch.testing.assert_close(got["image"], 50 + w_img.reshape(3, 1, 2, 2) / (2 * l2), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(got["meta"], torch.tensor([0.0, 100.0]) + w_meta / (2 * l2), rtol=1e-2, atol=1e-2)
    tags = read_events(tr.logger.log_dir).Tags()["images"]
    assert {"xai/featvis/classes/image", "xai/featvis/classes/meta"} <= set(tags)


def test_feature_visualisation_refuses_integer_inputs_and_says_why():
    image, meta, mask, y = two_input_data(4)
    with pytest.raises(ValueError, match=r"integer inputs \(input2 of input0, input1, input2: token ids, masks\).*cannot be optimised"):
        FeatureVisualizationMonitor(probe=ProbeSet((image, meta, mask), targets=y))
    with pytest.raises(ValueError, match="hold integers .* cannot be optimised"):
        F.joint_inputs(torch.nn.Identity(), (image, mask))
