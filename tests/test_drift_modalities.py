"""Drift features of sequences and token ids: per channel x time bin, per vocabulary item, per position."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import ProbeSet
from lightning_xai import functional as F
from lightning_xai.callbacks import AttributionMonitor, FeatureDriftMonitor

from .fixtures import trainer
from .test_sequence_text_render import LitSignal
from .test_tokens import LitText, _ids

WORDS = ["<pad>", "good", "bad", "film", "plot", "cast", "dull", "fine", "grim", "nice", "sad", "zzz"]


def _fit(tmp_path, callbacks, model, x, y):  # type: ignore[no-untyped-def]
    tr = trainer(tmp_path, callbacks, max_epochs=1, logger=False)
    tr.fit(model, DataLoader(TensorDataset(x, y), batch_size=4), DataLoader(TensorDataset(x, y), batch_size=4))
    return tr


def test_sequence_importance_per_channel_and_time_bin(tmp_path):
    x, y = torch.randn(8, 2, 32, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 2
    drift = FeatureDriftMonitor(ProbeSet(x[:4], targets=y[:4]), method="saliency", target="true", grid=(2, 4))
    model = LitSignal()
    _fit(tmp_path, [drift], model, x, y)
    _, _, names = drift.trajectory()
    assert names[:3] == ["ch0[t0:4]", "ch0[t4:8]", "ch0[t8:12]"] and names[8] == "ch1[t0:4]" and len(names) == 16
    # known answer: the mean |saliency| over the probe of the 4 steps of each bin, per channel
    maps = F.attribute(model, x[:4], y[:4], "saliency")
    expected = maps.abs().double().mean(0).reshape(2, 8, 4).mean(-1).reshape(-1)
    assert torch.allclose(drift.history[0]["importance"], expected, atol=1e-12)


def test_token_importance_per_vocabulary_item(tmp_path):
    ids, y = _ids(8), torch.arange(8) % 3
    probe = ProbeSet(ids[:4], targets=y[:4], vocab=WORDS)
    drift = FeatureDriftMonitor(probe, method="saliency", target="true")
    model = LitText()
    _fit(tmp_path, [drift], model, ids, y)
    vocabulary = sorted({int(v) for v in ids[:4][ids[:4] != 0].tolist()})
    _, _, names = drift.trajectory()
    assert names == [WORDS[v] for v in vocabulary]
    # known answer: per sample, the attribution summed over the positions holding the token; then mean |.|
    maps = F.attribute(model, ids[:4], y[:4], "saliency").double()
    expected = []
    for v in vocabulary:
        per_sample = [sum(float(maps[i, t]) for t in range(ids.shape[1]) if int(ids[i, t]) == v) for i in range(4)]
        expected.append(sum(abs(s) for s in per_sample) / 4)
    assert drift.history[0]["importance"].tolist() == pytest.approx(expected, rel=1e-6)


def test_token_importance_per_position_leaves_padding_out(tmp_path):
    ids, y = _ids(8), torch.arange(8) % 3
    probe = ProbeSet(ids[:4], targets=y[:4])
    drift = FeatureDriftMonitor(probe, method="saliency", target="true", token_features="position")
    model = LitText()
    _fit(tmp_path, [drift], model, ids, y)
    assert drift.trajectory()[2] == [f"pos{i}" for i in range(ids.shape[1])]
    maps = F.attribute(model, ids[:4], y[:4], "saliency").masked_fill(probe.padding(), 0.0)
    assert torch.allclose(drift.history[0]["importance"], maps.abs().double().mean(0), atol=1e-12)


def test_a_dict_of_ids_and_mask_names_its_tokens(tmp_path):
    ids, y = _ids(8), torch.arange(8) % 3
    mask = (ids != 0).long()
    probe = ProbeSet({"ids": ids[:4], "attention_mask": mask[:4]}, targets=y[:4], vocab=WORDS)

    class Dict(LitText):
        def forward(self, ids, attention_mask=None):  # type: ignore[no-untyped-def]
            return self.net(ids, attention_mask)

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            ids, y = batch
            return torch.nn.functional.cross_entropy(self(ids, (ids != 0).long()), y)

    drift = FeatureDriftMonitor(probe, method="saliency", target="true")
    _fit(tmp_path, [drift], Dict(), ids, y)
    vocabulary = sorted({int(v) for v in ids[:4][ids[:4] != 0].tolist()})
    assert drift.trajectory()[2] == [f"ids/{WORDS[v]}" for v in vocabulary]


def test_bad_token_features_is_a_clear_error():
    with pytest.raises(ValueError, match="token_features must be 'vocabulary'.*or 'position'.*got 'words'"):
        FeatureDriftMonitor(ProbeSet(_ids(4)), method="saliency", token_features="words")


def test_token_bag_against_a_loop():
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 6, (5, 7), generator=g)
    maps = torch.randn(5, 7, generator=g)
    valid = ids != 0
    vocab = F.token_vocabulary(ids, valid)
    bag = F.token_bag(maps, ids, vocab, valid)
    for i in range(5):
        for j, v in enumerate(vocab.tolist()):
            want = sum(float(maps[i, t]) for t in range(7) if int(ids[i, t]) == v and bool(valid[i, t]))
            assert float(bag[i, j]) == pytest.approx(want, abs=1e-6)


def test_a_riding_integer_input_is_not_token_ids(tmp_path):
    """An integer mask of the metadata's shape (N, 3) rides along: the metadata's map keeps every value (its
    zeros are not padding), in the summaries and in drift, which has one feature per value of each input."""
    from .fixtures import structured_data, structured_model

    image, meta, y = structured_data(8).tensors
    mask = torch.ones(8, 3, dtype=torch.long)
    mask[0, 0] = mask[2, 1] = 0  # zeros in an (N, 3) integer input, where a pad id would be
    probe = ProbeSet((image[:4], meta[:4], mask[:4]), targets=y[:4])
    monitor = AttributionMonitor(probe, methods=["input_x_gradient"], target="true")
    drift = FeatureDriftMonitor(probe, method="input_x_gradient", target="true")
    tr = trainer(tmp_path, [monitor, drift], max_epochs=1, logger=False)
    ds = TensorDataset(image, meta, y)
    tr.fit(structured_model(), DataLoader(ds, batch_size=4), DataLoader(ds, batch_size=4))
    maps = monitor.last_attributions["input_x_gradient"]
    assert maps[2] is None  # the mask rides along
    expected = F.summarize(maps[1])["gini"]
    assert expected != pytest.approx(F.summarize(maps[1], mask[:4] != 0)["gini"], rel=1e-3)  # taking it for padding differs
    assert tr.callback_metrics["xai/attr/input_x_gradient/input1/gini"].item() == pytest.approx(expected, rel=1e-6)
    assert drift.trajectory()[2] == [f"input0/f{i}" for i in range(25)] + [f"input1/f{i}" for i in range(3)]
    assert torch.allclose(drift.history[0]["importance"][25:], maps[1].abs().double().mean(0))


def test_text_tab_lists_each_sentences_top_tokens(tmp_path):
    """The Text tab: per probe sentence, the tokens of largest |attribution| (signed), padding left out."""
    from lightning_xai.callbacks import AttributionMonitor as Monitor

    from .fixtures import texts_in

    ids, y = _ids(8), torch.arange(8) % 3
    probe = ProbeSet(ids[:4], targets=y[:4], vocab=WORDS)
    monitor = Monitor(probe, methods=["saliency"], target="true")
    model = LitText()
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    tr.fit(model, DataLoader(TensorDataset(ids, y), batch_size=4), DataLoader(TensorDataset(ids, y), batch_size=4))
    table = texts_in(tr.logger.log_dir, "xai/attr/saliency/top_tokens")[-1][1]
    maps = monitor.last_attributions["saliency"]
    lines = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| sample")]
    assert len(lines) == 4
    for i, line in enumerate(lines):  # known answer: the sentence's own non-padding tokens, by |saliency|
        keep = [t for t in range(ids.shape[1]) if int(ids[i, t]) != 0]
        order = sorted(keep, key=lambda t: -abs(float(maps[i, t])))[:5]
        expected = ", ".join(f"{WORDS[int(ids[i, t])]} ({float(maps[i, t]):+.3g})" for t in order)
        assert line.split(" | ")[2].rstrip(" |") == expected, (line, expected)
    assert "<pad>" not in table
