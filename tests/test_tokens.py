"""Token ids: attributed at their embedding's output, one value per token, equal to Captum's layer methods."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl

from lightning_xai import ProbeSet
from lightning_xai import functional as F
from lightning_xai.callbacks import AttributionMonitor, FeatureDriftMonitor
from lightning_xai.engine import AttributionEngine

from .fixtures import trainer

captum = pytest.importorskip("captum.attr")

VOCAB, T = 12, 6


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(VOCAB, 5)
        self.pos_emb = nn.Embedding(T, 5)
        self.rnn = nn.GRU(5, 7, batch_first=True)


class TextNet(nn.Module):
    """Two embeddings (tokens, positions) and a GRU; the mask comes from the ids or is given."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = Encoder()
        self.fc = nn.Linear(7, 3)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor = None) -> torch.Tensor:  # type: ignore[assignment]
        pos = self.encoder.pos_emb(torch.arange(ids.shape[1]))
        h, _ = self.encoder.rnn(self.encoder.tok_emb(ids) + pos)
        m = (ids != 0 if attention_mask is None else attention_mask).float().unsqueeze(-1)
        return self.fc((h * m).sum(1) / m.sum(1).clamp(min=1))


def _ids(n: int = 4) -> torch.Tensor:
    ids = torch.randint(1, VOCAB, (n, T), generator=torch.Generator().manual_seed(2))
    ids[1, 4:] = 0
    ids[2, 3:] = 0
    return ids


def _layer(method: str, net: TextNet, ids: torch.Tensor, y: torch.Tensor, extra=None) -> torch.Tensor:
    emb = net.encoder.tok_emb
    extra = {} if extra is None else {"additional_forward_args": extra}
    if method == "integrated_gradients":
        a = captum.LayerIntegratedGradients(net, emb).attribute(ids, baselines=torch.zeros_like(ids), target=y, n_steps=16, **extra)
    elif method == "input_x_gradient":
        a = captum.LayerGradientXActivation(net, emb).attribute(ids, target=y, **extra)
    else:
        a = captum.LayerGradientXActivation(net, emb, multiply_by_inputs=False).attribute(ids, target=y, **extra).abs()
    return a.sum(-1)


@pytest.mark.parametrize("method", ["integrated_gradients", "input_x_gradient", "saliency"])
def test_token_maps_equal_captum_layer_methods_summed_over_the_embedding(method):
    net, ids, y = TextNet(), _ids(), torch.tensor([0, 1, 2, 0])
    opts = {"n_steps": 16} if method == "integrated_gradients" else {}
    got = F.attribute(net, ids, y, method, embedding="encoder.tok_emb", **opts)
    assert got.shape == ids.shape
    assert torch.allclose(got, _layer(method, net, ids, y), atol=1e-5)
    # found by itself: the embedding that reads the ids (the positions' embedding reads a range)
    assert torch.allclose(F.attribute(net, ids, y, method, **opts), got, atol=1e-7)
    # with an attention mask riding along, in a dict
    mask = (ids != 0).long()
    named = F.attribute(net, {"ids": ids, "attention_mask": mask}, y, method, **opts)
    assert list(named) == ["ids"]
    assert torch.allclose(named["ids"], _layer(method, net, ids, y, (mask,)), atol=1e-5)


def test_integrated_gradients_from_another_pad_id():
    net, ids, y = TextNet(), _ids(), torch.tensor([0, 1, 2, 0])
    got = F.attribute(net, ids, y, "integrated_gradients", n_steps=16, pad_id=3)
    ref = captum.LayerIntegratedGradients(net, net.encoder.tok_emb).attribute(
        ids, baselines=torch.full_like(ids, 3), target=y, n_steps=16
    ).sum(-1)
    assert torch.allclose(got, ref, atol=1e-5)


def test_occlusion_replaces_one_token_by_the_pad_id():
    net, ids, y = TextNet(), _ids(), torch.tensor([0, 1, 2, 0])
    got = F.attribute(net, ids, y, "occlusion")
    with torch.no_grad():
        f0 = net(ids).gather(1, y[:, None])[:, 0]
        ref = torch.stack(
            [f0 - net(torch.where(torch.arange(T) == j, 0, ids)).gather(1, y[:, None])[:, 0] for j in range(T)], 1
        )
    assert got.dtype == torch.float32 and torch.allclose(got, ref, atol=1e-6)


def test_no_embedding_is_a_clear_error():
    with pytest.raises(ValueError, match="no embedding"):
        F.attribute(TextNet(), _ids(), 0, "saliency", embedding="encoder.pos_emb")


def test_text_probe_kind_padding_and_the_engine():
    ids = _ids()
    probe = ProbeSet(ids, targets=torch.tensor([0, 1, 2, 0]))
    assert probe.kind == "text"
    assert probe.padding().sum().item() == 5 and probe.padding(pad_id=3).sum().item() == int((ids == 3).sum())
    named = ProbeSet({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert named.padding().sum().item() == 0
    net = TextNet()
    maps = AttributionEngine().attributions(net, probe, F.resolve_methods(["saliency", "integrated_gradients"]), target="true")
    assert maps["saliency"].shape == ids.shape
    assert torch.allclose(maps["saliency"], _layer("saliency", net, ids, probe.targets), atol=1e-5)


class LitText(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = TextNet()

    def forward(self, ids):  # type: ignore[no-untyped-def]
        return self.net(ids)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        ids, y = batch
        return nn.functional.cross_entropy(self(ids), y)

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        pass

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_monitors_leave_padding_out(tmp_path):
    ids = _ids(8)
    y = torch.arange(8) % 3
    probe = ProbeSet(ids[:4], targets=y[:4])
    monitor = AttributionMonitor(probe, methods=["saliency"], target="true")
    drift = FeatureDriftMonitor(probe, method="saliency", target="true")
    model = LitText()
    tr = trainer(tmp_path, [monitor, drift], max_epochs=1, logger=False)
    tr.fit(model, DataLoader(TensorDataset(ids, y), batch_size=4), DataLoader(TensorDataset(ids, y), batch_size=4))
    maps = monitor.last_attributions["saliency"]
    assert maps.shape == (4, T)
    expected = F.summarize(maps, ~probe.padding())
    assert tr.callback_metrics["xai/attr/saliency/gini"].item() == pytest.approx(expected["gini"], rel=1e-5)
    assert expected["gini"] != pytest.approx(F.summarize(maps)["gini"], rel=1e-3)


def test_token_mass_check_measures_the_share_on_given_tokens():
    from lightning_xai import checks

    net, ids, y = TextNet(), _ids(), torch.tensor([0, 1, 2, 0])
    probe = ProbeSet(ids, targets=y)
    token = int(ids[0, 0])
    (result,) = checks.run([checks.TokenMass([token], "saliency", max_mass=1.0)], net, probe, target="true")
    maps = _layer("saliency", net, ids, y).abs().masked_fill(ids == 0, 0.0)
    rows = (ids == token).any(1)
    expected = ((maps * (ids == token)).sum(1) / maps.sum(1))[rows].mean()
    assert result.passed and result.value == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="token ids"):
        checks.run([checks.TokenMass([1])], nn.Linear(3, 2), ProbeSet(torch.randn(2, 3)))


class _FloatIds(nn.Module):
    """``net`` on ids given as whole-number floats: what Captum's perturbation methods can feed."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.round().long())


@pytest.mark.parametrize("method", ["feature_ablation", "kernel_shap", "lime", "shapley_sampling"])
def test_token_replacing_methods_equal_captum_on_the_ids(method):
    """Ablation and the samplers leave a token out by replacing it with the pad id (one feature per token)."""
    from .testers import captum_fed_lime

    net, ids, y = TextNet().eval(), _ids(4), torch.tensor([0, 1, 2, 1])
    on_floats, x = _FloatIds(net), _ids(4).float()
    if method == "feature_ablation":
        ours = F.attribute(net, ids, y, method)
        ref = captum.FeatureAblation(on_floats).attribute(x, baselines=0.0, target=y)
    elif method == "kernel_shap":  # 2**6 coalitions of 6 tokens: exact, as Captum's ShapleyValues
        ours = F.attribute(net, ids, y, method, n_samples=64)
        ref = captum.ShapleyValues(on_floats).attribute(x, baselines=0.0, target=y)
    elif method == "lime":  # Captum fed our coalitions, similarity and ridge
        ours = F.attribute(net, ids, y, method, n_samples=48, seed=5)
        z = torch.rand(48, T, generator=torch.Generator().manual_seed(5)) < 0.5
        ref = captum_fed_lime(on_floats, z).attribute(x, baselines=0.0, target=y, n_samples=48)
    else:
        ours = F.attribute(net, ids, y, method, n_samples=2, seed=7)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(7)  # Captum's permutations come from the global stream
            ref = captum.ShapleyValueSampling(on_floats).attribute(x, baselines=0.0, target=y, n_samples=2)
    assert ours.shape == ids.shape
    torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=1e-4)


def test_token_feature_mask_in_the_inputs_structure_groups_tokens():
    """A dict probe of ids and attention mask: a feature mask given in the inputs' structure groups the ids'
    positions (here pairs of tokens), as a mask of the ids alone does."""
    from .test_sample_rows import Tokens

    ids = torch.tensor([[3, 4, 5, 6], [1, 2, 7, 0]])
    probe = {"ids": ids, "attention_mask": (ids != 0).long()}

    class Dict(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = Tokens()

        def forward(self, ids, attention_mask):  # type: ignore[no-untyped-def]
            return self.net(ids)

    pairs = torch.tensor([0, 0, 1, 1])
    model, y = Dict(), torch.tensor([0, 2])
    got = F.attribute(model, probe, y, "feature_ablation", feature_mask={"ids": pairs})["ids"]
    want = F.attribute(model.net, ids, y, "feature_ablation", feature_mask=pairs)
    torch.testing.assert_close(got, want)
    assert torch.equal(got[:, 0], got[:, 1]) and torch.equal(got[:, 2], got[:, 3])  # one value per pair
