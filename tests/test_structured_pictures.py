"""Pictures of probes of several inputs: one panel per attributed input, side by side, in a real Trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl

from lightning_xai import ProbeSet, register_renderer
from lightning_xai import functional as F
from lightning_xai import renderers
from lightning_xai.callbacks import AttributionMonitor
from lightning_xai.renderers import (
    ImageRenderer,
    RenderContext,
    StructuredRenderer,
    TabularRenderer,
    TextRenderer,
    renderer_for,
)

from .fixtures import images_in, texts_in, trainer

VOCAB = ["<pad>", "the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far"]


class ImageMeta(nn.Module):
    """An image and a vector of metadata (attributed), and an integer mask over the classes (riding along)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.meta = nn.Linear(4, 3)
        self.fc = nn.Linear(2 * 6 * 6, 3)

    def forward(self, image: torch.Tensor, meta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.tanh(self.conv(image)).flatten(1)) + 10 * self.meta(meta)
        return h.masked_fill(mask == 0, -1.0)


class TokenNet(nn.Module):
    """Hugging-Face style: ``model(input_ids=..., attention_mask=...)``, an embedding, a mean over valid tokens."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.tok_emb = nn.Embedding(len(VOCAB), 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.float().unsqueeze(-1)
        return self.fc((self.tok_emb(input_ids) * m).sum(1) / m.sum(1).clamp(min=1))


class LitInputs(pl.LightningModule):
    """Batches ``(input, ..., y)``; with ``names`` the inputs are passed by keyword (``model(**inputs)``)."""

    def __init__(self, net: nn.Module, names=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.net, self.names = net, names

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self.net(*args, **kwargs)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        *xs, y = batch
        out = self(**dict(zip(self.names, xs))) if self.names else self(*xs)
        return nn.functional.cross_entropy(out, y)

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        pass

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _image_meta(n: int = 8):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(3)
    image, meta = torch.randn(n, 1, 6, 6, generator=g), torch.randn(n, 4, generator=g)
    return image, meta, torch.ones(n, 3, dtype=torch.long), torch.arange(n) % 3


def _tokens(n: int = 8):  # type: ignore[no-untyped-def]
    """Ids without the pad id: the padding is the attention mask's alone (``ids == 0`` would find none)."""
    ids = torch.randint(1, len(VOCAB), (n, 6), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0
    mask[2, 4:] = 0
    return ids, mask, torch.arange(n) % 3


def _fit(tmp_path, monitor, lit, data):  # type: ignore[no-untyped-def]
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    tr.fit(lit, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))
    return tr


def _context(monitor: AttributionMonitor, tr, lit, method: str, probe: ProbeSet, part: str, padding=None):  # type: ignore[no-untyped-def]
    """The context the monitor gave input ``part``'s panel at the run's one epoch: its kept scale and legend."""
    n = min(monitor.max_images, len(probe))
    return RenderContext(
        probe=probe, method=method, epoch=0, step=int(tr.global_step),
        labels=monitor._labels(tr, lit, n), mistakes=monitor._mistakes(tr, lit, n),
        scale=lambda values: monitor._vmax[f"{method}/{part}"],
        describe_scale=lambda: monitor._scale_legend(method, part), signed=monitor._signed[method],
        max_images=monitor.max_images, columns=monitor.GRID_COLUMNS, padding=padding,
    )


def test_image_and_metadata_panels_side_by_side_each_with_its_own_scale(tmp_path):
    image, meta, mask, y = _image_meta()
    probe = ProbeSet((image[:4], meta[:4], mask[:4]), targets=y[:4])
    monitor = AttributionMonitor(probe, methods=["saliency"], target="true")
    lit = LitInputs(ImageMeta())
    tr = _fit(tmp_path, monitor, lit, TensorDataset(image, meta, mask, y))
    ((step, got),) = images_in(tr.logger.log_dir, "xai/attr/saliency")
    assert step == tr.global_step

    # each attributed input keeps its own scale, set from its own values (the riding mask gets none)
    maps = monitor.last_attributions["saliency"]
    assert maps[2] is None
    assert {k for k in monitor._vmax if k.startswith("saliency")} == {"saliency/input0", "saliency/input1"}
    assert monitor._vmax["saliency/input0"] == pytest.approx(F.color_scale(maps[0].sum(1)))
    assert monitor._vmax["saliency/input1"] == pytest.approx(F.color_scale(F.global_importance(maps[1])))
    assert monitor._vmax["saliency/input1"] > 3 * monitor._vmax["saliency/input0"]  # the metadata weighs 10x
    # the text summary's row of each input shows that input's scale
    ((_, md),) = texts_in(tr.logger.log_dir, "xai/attr/summary")
    table = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| ")]
    rows = {r[0]: dict(zip(table[0], r)) for r in table[1:]}
    for part in ("input0", "input1"):
        assert float(rows[f"saliency/{part}"]["colour max"]) == pytest.approx(monitor._vmax[f"saliency/{part}"], rel=1e-3)

    # the logged picture is the image grid and the bar chart, each as its input alone draws it, side by side
    panels = [
        ImageRenderer().render(maps[0], _context(monitor, tr, lit, "saliency", ProbeSet(image[:4], targets=y[:4]), "input0")),
        TabularRenderer().render(maps[1], _context(monitor, tr, lit, "saliency", ProbeSet(meta[:4], targets=y[:4]), "input1")),
    ]
    assert np.array_equal(got, F.side_by_side(panels, ["input0", "input1"]))
    assert got.shape[1] == sum(p.shape[1] for p in panels) + 3 * F.render.PANEL_GAP > max(p.shape[1] for p in panels)
    assert got.shape[0] == F.render.PANEL_TITLE_H + max(p.shape[0] for p in panels)

    # a checkpoint keeps each input's scale, and a monitor loaded from it draws with them
    path = tmp_path / "last.ckpt"
    tr.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["callbacks"][monitor.state_key]
    resumed = AttributionMonitor(probe, methods=["saliency"], target="true")
    resumed.load_state_dict(state)
    assert resumed._vmax == monitor._vmax and resumed._vmax_epoch == monitor._vmax_epoch
    assert resumed._signed == monitor._signed
    # smaller maps later: the resumed input keeps its scale ("grow" never lowers it); a fresh monitor would not
    smaller = F.global_importance(maps[1]) / 2
    fresh = AttributionMonitor(probe, methods=["saliency"], target="true")
    assert resumed._scale(tr, "saliency", smaller, "input1") == monitor._vmax["saliency/input1"]
    assert fresh._scale(tr, "saliency", smaller, "input1") == pytest.approx(monitor._vmax["saliency/input1"] / 2)


def test_token_panel_leaves_the_attention_masks_padding_out(tmp_path):
    ids, mask, y = _tokens()
    probe = ProbeSet({"input_ids": ids[:4], "attention_mask": mask[:4]}, targets=y[:4], vocab=VOCAB)
    monitor = AttributionMonitor(probe, methods=["saliency"], target="true")
    lit = LitInputs(TokenNet(), names=["input_ids", "attention_mask"])
    tr = _fit(tmp_path, monitor, lit, TensorDataset(ids, mask, y))
    ((_, got),) = images_in(tr.logger.log_dir, "xai/attr/saliency")
    maps = monitor.last_attributions["saliency"]
    assert list(maps) == ["input_ids"]  # the attention mask rides along: no panel

    # the panel is TextRenderer's picture of the ids alone, with the mask's padding (ids == 0 finds none)
    alone = ProbeSet(ids[:4], targets=y[:4], vocab=VOCAB)
    assert not alone.padding().any()
    ctx = _context(monitor, tr, lit, "saliency", alone, "input_ids", padding=mask[:4] == 0)
    want = TextRenderer().render(maps["input_ids"], ctx)
    assert np.array_equal(got, F.side_by_side([want], ["input_ids"]))
    top, left = F.render.PANEL_TITLE_H, F.render.PANEL_GAP
    assert np.array_equal(got[top : top + want.shape[0], left : left + want.shape[1]], want)
    unpadded = TextRenderer().render(maps["input_ids"], _context(monitor, tr, lit, "saliency", alone, "input_ids"))
    assert unpadded.shape != want.shape or not np.array_equal(unpadded, want)  # the padded tokens would show
    assert set(monitor._vmax) == {"saliency/input_ids"}


def test_a_registered_renderer_for_structured_probes_wins(tmp_path):
    class Stripes:
        def __init__(self) -> None:
            self.probes = []

        def accepts(self, probe):  # type: ignore[no-untyped-def]
            return probe.kind == "structured"

        def render(self, attributions, ctx):  # type: ignore[no-untyped-def]
            self.probes.append(ctx.probe)
            picture = np.zeros((12, 20, 3), dtype=np.uint8)
            picture[:, ::2] = (200, 40, 10)
            return picture

    image, meta, mask, y = _image_meta()
    probe = ProbeSet((image[:4], meta[:4], mask[:4]), targets=y[:4])
    stripes = Stripes()
    register_renderer(stripes)
    try:
        assert renderer_for(probe) is stripes
        tr = _fit(tmp_path, AttributionMonitor(probe, methods=["saliency"], target="true"), LitInputs(ImageMeta()),
                  TensorDataset(image, meta, mask, y))
    finally:
        renderers.RENDERERS.remove(stripes)
    ((_, got),) = images_in(tr.logger.log_dir, "xai/attr/saliency")
    assert stripes.probes == [probe] and np.array_equal(got, stripes.render(None, RenderContext(probe, "s")))
    assert isinstance(renderer_for(probe), StructuredRenderer)


def test_an_input_without_a_renderer_gets_a_note_and_a_one_argument_scale_still_works():
    volume, meta = torch.rand(2, 1, 2, 3, 3), torch.rand(2, 4)  # a 3-d volume: no renderer draws it
    probe = ProbeSet({"volume": volume, "meta": meta})
    maps = {"volume": torch.rand(2, 1, 2, 3, 3), "meta": torch.rand(2, 4)}
    seen = []

    def scale(values):  # a user's context from before scales had parts: one shared scale
        seen.append(values.shape)
        return 2.0

    got = StructuredRenderer().render(maps, RenderContext(probe=probe, method="saliency", scale=scale))
    bars = TabularRenderer().render(maps["meta"], RenderContext(probe=ProbeSet(meta), method="saliency", scale=lambda v: 2.0))
    note = F.note_panel("no picture for shape (2, 1, 2, 3, 3)")
    assert np.array_equal(got, F.side_by_side([note, bars], ["volume", "meta"]))
    assert seen == [(4,)]
    # the context of one part calls a part-aware scale with the input's name
    parts = []
    ctx = RenderContext(probe=probe, method="saliency", scale=lambda v, part=None: parts.append(part) or 1.0)
    StructuredRenderer().render(maps, ctx)
    assert parts == ["meta"]
