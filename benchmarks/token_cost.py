"""Token attribution cost over its physical limit: a text classifier on token ids, with Captum in the same run.

Token ids are attributed at the embedding's output (``lightning_xai.functional.tokens``). The physical
limit of a method there is the passes it needs from the embedding up, done by a plain batched loop in
chunks of the probe size: model frozen in eval mode, the embedding's output replaced by the rows the
method evaluates (a forward hook), ``out.gather(target)``, ``torch.autograd.grad`` with respect to
those rows. The rows themselves (interpolations from the padding's embedding) are built before the
clock starts, as the image benchmark's limit builds its repeated inputs.

    saliency, input_x_gradient   1 x (forward from the embedding + backward to it) of the probe
    integrated_gradients         n_steps x (forward from the embedding + backward to it) of the probe

Ours (``lightning_xai.functional``), the engine (``AttributionEngine``: the callbacks' path, a fresh
engine each time) and Captum's layer methods on the embedding (``LayerIntegratedGradients``,
``LayerGradientXActivation``, summed over the embedding dimension as ours is) run on the same model,
ids and targets, with the same rows per pass, interleaved; medians are reported.

The model: a small transformer encoder classifier (token and position embeddings of width 64, two
encoder layers of 4 heads, mean over the tokens, a linear layer; 0.2M parameters), sequences of 64
token ids from a vocabulary of 2000.

Run:  .venv/bin/python benchmarks/token_cost.py [--small] [--probe 64] [--steps 32] [--threads 1]
"""

from __future__ import annotations

from typing import Any, Callable, Dict

import torch
from torch import nn

from _common import base_parser, captum_wanted, emit, interleaved, over_limit, setup

from lightning_xai import ProbeSet, functional as F
from lightning_xai.engine import AttributionEngine

METHODS = ["integrated_gradients", "saliency", "input_x_gradient"]


class TextEncoder(nn.Module):
    """Token + position embeddings, ``layers`` transformer encoder layers, mean over tokens, linear."""

    def __init__(self, vocab: int, length: int, width: int = 64, layers: int = 2, classes: int = 4) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, width, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(1, length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.tok_emb(ids) + self.pos[:, : ids.shape[1]])
        return self.head(h.mean(1))


def _frozen(model: nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def limit_loop(model: TextEncoder, ids: torch.Tensor, rows: torch.Tensor, target: torch.Tensor) -> None:
    """Forward from the embedding (its output replaced by ``rows``) + backward to it, in chunks of the probe."""
    _frozen(model)
    n = ids.shape[0]
    for s in range(0, rows.shape[0], n):
        x = rows[s : s + n].detach().requires_grad_(True)
        handle = model.tok_emb.register_forward_hook(lambda m, i, o: x)
        try:
            out = model(ids).gather(1, target.view(-1, 1)).sum()
        finally:
            handle.remove()
        torch.autograd.grad(out, x)


def build(method: str, model: TextEncoder, ids: torch.Tensor, t: torch.Tensor, args: Any) -> Dict[str, Callable[[], Any]]:
    with torch.no_grad():
        embedded = model.tok_emb(ids)
        pad = model.tok_emb(torch.zeros_like(ids))
    variants: Dict[str, Callable[[], Any]] = {}
    if method == "integrated_gradients":
        alphas = torch.linspace(0.0, 1.0, args.steps, device=ids.device)
        rows = torch.cat([pad + a * (embedded - pad) for a in alphas])
        variants["ours"] = lambda: F.attribute(model, ids, t, "integrated_gradients", n_steps=args.steps)
        options: Dict[str, Any] = {"n_steps": args.steps}
    else:
        rows = embedded
        variants["ours"] = lambda: F.attribute(model, ids, t, method)
        options = {}
    variants["limit"] = lambda: limit_loop(model, ids, rows, t)
    calls = F.resolve_methods({method: options})
    probe = ProbeSet(ids.cpu())
    variants["engine"] = lambda: AttributionEngine().attributions(model, probe, calls, target="predicted")
    if args.captum:
        variants["captum"] = captum_variant(method, model, ids, t, args)
    return variants


def captum_variant(method: str, model: TextEncoder, ids: torch.Tensor, t: torch.Tensor, args: Any) -> Callable[[], Any]:
    from captum import attr as ca

    n = ids.shape[0]

    def run() -> Any:
        _frozen(model)
        if method == "integrated_gradients":
            a = ca.LayerIntegratedGradients(model, model.tok_emb).attribute(
                ids, baselines=torch.zeros_like(ids), target=t, n_steps=args.steps, method="gausslegendre",
                internal_batch_size=n,
            )
        else:
            a = ca.LayerGradientXActivation(model, model.tok_emb, multiply_by_inputs=method == "input_x_gradient").attribute(ids, target=t)
            a = a.abs() if method == "saliency" else a
        return a.sum(-1)

    return run


def main(argv: Any = None) -> Dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--probe", type=int, default=64)
    p.add_argument("--length", type=int, default=64, help="tokens per sequence")
    p.add_argument("--vocab", type=int, default=2000)
    p.add_argument("--steps", type=int, default=32, help="integrated gradients steps")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--no-captum", dest="captum", action="store_false")
    args = p.parse_args(argv)
    setup(args)
    if args.small:
        args.probe, args.length, args.steps = min(args.probe, 16), min(args.length, 32), min(args.steps, 8)
    args.captum = captum_wanted(args)
    torch.manual_seed(args.seed)
    model = TextEncoder(args.vocab, args.length).to(args.device).eval()
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(1, args.vocab, (args.probe, args.length), generator=g)
    ids[:, -args.length // 4 :] = 0  # a padded tail, as real batches have
    ids = ids.to(args.device)
    with torch.no_grad():
        t = model(ids).argmax(1)
    times = {method: interleaved(build(method, model, ids, t, args), args.repeats, args.device) for method in args.methods}
    results, text = over_limit(times)
    params = sum(q.numel() for q in model.parameters())
    config = {
        "model": f"transformer encoder ({params} params), vocab {args.vocab}", "input": [args.probe, args.length],
        "ig_steps": args.steps, "repeats": args.repeats, "device": str(args.device),
        "statistic": "median, interleaved", "clock": args.clock,
    }
    emit("token_cost", {"config": config, "results": results}, text)
    return results


if __name__ == "__main__":
    main()
