"""Models with riding inputs run batched: each row a method evaluates gets its own sample's riding row.

The reference is the definition: the method on each probe row alone (its riding row is then the only
one), concatenated. Batched and row-alone maps must agree, and the batched run must make the passes
of one tensor, not one set per row.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_xai import functional as F


class Masked(nn.Module):
    """An image and a vector; an integer mask (riding) switches logits off per sample."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4 + 3, 3)

    def forward(self, image: torch.Tensor, meta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = torch.cat([torch.tanh(self.conv(image)).flatten(1), meta], 1)
        return self.fc(h).masked_fill(mask == 0, -2.0) * (1 + mask.sum(1, keepdim=True))


class Tokens(nn.Module):
    """Token ids whose padding (id 0) the model masks out itself: the ids ride along to the model."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.tok_emb = nn.Embedding(9, 4, padding_idx=0)
        self.fc = nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = (ids != 0).float().unsqueeze(-1)
        return self.fc(torch.tanh((self.tok_emb(ids) * keep).sum(1) / keep.sum(1).clamp(min=1)))


def _inputs(n: int = 4):
    g = torch.Generator().manual_seed(2)
    mask = torch.ones(n, 3, dtype=torch.long)
    mask[0, 1] = mask[2, 0] = mask[3, 2] = 0
    return torch.randn(n, 1, 4, 4, generator=g), torch.randn(n, 3, generator=g), mask


DETERMINISTIC = {
    "saliency": {},
    "input_x_gradient": {},
    "integrated_gradients": {"n_steps": 6},
    "occlusion": {"window": 2},
    "feature_ablation": {},
}


def _row_alone(model, inputs, target, method, options):
    n = F.input_rows(inputs)
    rows = [F.attribute(model, F.take_rows(inputs, slice(i, i + 1)), target[i : i + 1], method, **options) for i in range(n)]
    if isinstance(rows[0], torch.Tensor):
        return torch.cat(rows)
    return tuple(None if r[0] is None else torch.cat([row[j] for row in rows]) for j, r in enumerate(zip(*rows)))


@pytest.mark.parametrize("method", list(DETERMINISTIC))
def test_batched_maps_equal_each_row_alone(method):
    model, inputs, target = Masked(), _inputs(), torch.tensor([0, 1, 2, 1])
    with F.count_passes() as batched:
        got = F.attribute(model, inputs, target, method, **DETERMINISTIC[method])
    want = _row_alone(model, inputs, target, method, DETERMINISTIC[method])
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            assert torch.allclose(g, w, atol=1e-6), method
    with F.count_passes() as alone:
        _row_alone(model, inputs, target, method, DETERMINISTIC[method])
    assert batched.forward_calls < alone.forward_calls, (batched.forward_calls, alone.forward_calls)


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "integrated_gradients"])
def test_token_ids_ride_batched(method):
    model = Tokens()
    ids = torch.tensor([[3, 4, 5, 0, 0], [1, 2, 0, 0, 0], [8, 7, 6, 5, 4]])
    target = torch.tensor([0, 2, 1])
    options = {"n_steps": 6} if method == "integrated_gradients" else {}
    with F.count_passes() as c:
        got = F.attribute(model, ids, target, method, **options)
    want = torch.cat([F.attribute(model, ids[i : i + 1], target[i : i + 1], method, **options) for i in range(3)])
    assert torch.allclose(got, want, atol=1e-6)
    # one pass per path step over the whole probe (plus the one-row look for the embedding), not per row
    steps = options.get("n_steps", 1)
    assert c.backward_calls == steps, c.backward_calls


def test_a_method_that_does_not_say_its_rows_runs_row_by_row():
    model, (image, meta, mask) = Masked(), _inputs()
    seen = []

    def whole_batch(m, x, target=None):  # evaluates all rows at once without saying which samples they are
        seen.append(x.shape[0])
        with torch.no_grad():
            return m(x).gather(1, target.view(-1, 1)) * torch.ones_like(x)

    target = torch.tensor([0, 1, 2, 1])
    got = F.attribute_structured(whole_batch, model, (image, meta, mask), target)
    # the batched attempt stops at its first model call; then each row alone, with its own mask
    assert seen == [4, 1, 1, 1, 1]
    with torch.no_grad():
        out = model(image, meta, mask).gather(1, target.view(-1, 1))
    assert torch.allclose(got[1], out * torch.ones_like(meta))


def test_callbacks_run_several_inputs_batched(tmp_path, monkeypatch):
    """In a real Trainer (validation under inference mode) the built-in methods run batched on a probe with a
    riding mask: never one row at a time."""
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_xai import ProbeSet
    from lightning_xai.callbacks import AttributionMonitor
    from lightning_xai.functional import structured

    from .fixtures import LitTwo, trainer, two_input_data

    one_at_a_time = structured._row_by_row

    def row_by_row(fn, model, inputs, keys, shapes, fixed, flat, *rest):  # type: ignore[no-untyped-def]
        assert flat.shape[0] == 1, "a built-in method ran one probe row at a time"  # (the one-sample setup trial)
        return one_at_a_time(fn, model, inputs, keys, shapes, fixed, flat, *rest)

    monkeypatch.setattr(structured, "_row_by_row", row_by_row)
    image, meta, mask, y = two_input_data(8)
    methods = {"saliency": {}, "integrated_gradients": {"n_steps": 4}, "occlusion": {}, "kernel_shap": {"n_samples": 16}}
    monitor = AttributionMonitor(ProbeSet((image[:4], meta[:4], mask[:4]), targets=y[:4]), methods=methods, target="true")
    ds = TensorDataset(image, meta, mask, y)
    trainer(tmp_path, [monitor], max_epochs=1, logger=False).fit(LitTwo(), DataLoader(ds, batch_size=4), DataLoader(ds, batch_size=4))
    assert sorted(monitor.last_attributions) == sorted(methods)


def test_a_method_that_calls_a_built_in_on_other_rows_runs_row_by_row():
    """Rows a built-in declares are rows of the inputs it was given: a user's method that hands it a slice or
    a reordering of its own inputs must not pair those rows with the probe's riding rows."""
    class Gate(nn.Module):
        def forward(self, x, mask):
            return (x * mask).sum(1, keepdim=True)

    def chunked(model, inputs, target=None):  # the user's own chunking
        return torch.cat([F.saliency(model, inputs[s:s + 2], target) for s in range(0, inputs.shape[0], 2)])

    def flipped(model, inputs, target=None):
        return F.input_x_gradient(model, inputs.flip(0), target).flip(0)

    x, mask = torch.ones(4, 3), torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    assert torch.equal(F.attribute(Gate(), (x, mask), None, chunked)[0], mask.float())
    assert torch.equal(F.attribute(Gate(), (x, mask), None, flipped)[0], mask.float())
