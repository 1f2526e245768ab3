"""Pictures of sequence (N, C, T) and token-id probes."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl

from lightning_xai import ProbeSet
from lightning_xai.callbacks import AttributionMonitor
from lightning_xai.renderers import RenderContext, SequenceRenderer, TextRenderer, renderer_for

from .fixtures import read_events, trainer


def test_kinds_pick_their_renderers():
    assert isinstance(renderer_for(ProbeSet(torch.randn(3, 2, 40))), SequenceRenderer)
    assert isinstance(renderer_for(ProbeSet(torch.randint(0, 5, (3, 7)))), TextRenderer)
    assert ProbeSet(torch.randn(3, 2, 40)).kind == "sequence"


def test_sequence_picture_marks_the_attributed_span():
    x = torch.randn(2, 2, 60)
    a = torch.zeros_like(x)
    a[:, :, 20:30] = 1.0
    img = SequenceRenderer().render(a, RenderContext(probe=ProbeSet(x), method="saliency"))
    assert img.dtype == np.uint8 and img.shape[1] == 480
    # the heat strip is brightest (viridis' yellow) over the attributed span only
    yellow = (img[..., 0] > 200) & (img[..., 1] > 200) & (img[..., 2] < 100)
    cols = np.nonzero(yellow[: img.shape[0] - 40].any(0))[0]
    assert cols.min() >= 20 * 480 // 60 - 1 and cols.max() <= 30 * 480 // 60 + 1


def test_text_picture_leaves_padding_out_and_uses_the_vocabulary():
    ids = torch.tensor([[1, 2, 0, 0], [3, 1, 2, 0]])
    probe = ProbeSet(ids, vocab=["<pad>", "a", "b", "c"])
    assert probe.tokens(0) == ["a", "b", "<pad>", "<pad>"]
    assert ProbeSet(ids, decode=lambda row: [f"t{v}" for v in row]).tokens(1) == ["t3", "t1", "t2", "t0"]
    values = torch.tensor([[1.0, 0.5, 9.0, 9.0], [0.2, 0.1, 0.3, 9.0]])
    shown = TextRenderer().render(values, RenderContext(probe=probe, method="ig", padding=probe.padding()))
    everything = TextRenderer().render(values, RenderContext(probe=probe, method="ig"))
    assert shown.shape[1] == everything.shape[1] == 480
    assert not np.array_equal(shown, everything)  # padding's large values set no colour


class LitSignal(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(2, 4, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.net(x)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        pass

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_monitor_logs_sequence_pictures_with_grad_cam(tmp_path):
    x, y = torch.randn(8, 2, 32), torch.arange(8) % 2
    monitor = AttributionMonitor(ProbeSet(x[:4], targets=y[:4]), methods=["saliency", "grad_cam"], target="true")
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    tr.fit(LitSignal(), DataLoader(TensorDataset(x, y), batch_size=4), DataLoader(TensorDataset(x, y), batch_size=4))
    ea = read_events(tr.logger.log_dir)
    assert {"xai/attr/saliency", "xai/attr/grad_cam"} <= set(ea.Tags()["images"])
