"""Token ids: integer inputs read by an ``nn.Embedding`` are attributed at the embedding's output.

Ids have no gradient and no path between them, so a method explains the embedding's output instead
(the model is run on its ids, and the embedding's output is replaced by the vectors the method sets),
and each token's value is the sum over the embedding dimension: one value per token. The embedding is
found by itself (the ``nn.Embedding`` that reads one of the inputs) or named with ``embedding=``.

The baseline of a token is ``pad_id`` (default 0): integrated gradients go from the padded sequence's
embedding to the real one's, and occlusion, ablation and the samplers replace tokens by the padding token.
Per method, the maps equal Captum's layer methods on that embedding, summed over its last dimension:

- ``integrated_gradients``: ``LayerIntegratedGradients(model, emb)`` with ``baselines`` the pad ids;
- ``input_x_gradient``: ``LayerGradientXActivation(model, emb)``;
- ``saliency``: ``|LayerGradientXActivation(model, emb, multiply_by_inputs=False)|`` (the gradient's
  absolute value, summed);
- ``occlusion``: the output drop when the token is replaced by ``pad_id`` (windows of whole tokens);
- ``feature_ablation``, ``kernel_shap``, ``lime``, ``shapley_sampling``: on the ids themselves, one
  feature per token, a token left out being replaced by ``pad_id`` (as Captum's ``FeatureAblation``,
  ``KernelShap``... on the ids given as whole-number floats with ``baselines=pad_id``; a
  ``feature_mask`` over the positions groups tokens);
- ``smoothgrad`` and ``gradient_shap``: noise and paths in the embedding space.

Several inputs with token ids: the methods that replace tokens attribute one input at a time, the
others as they are (occlusion's rule for several inputs).
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ._guard import explaining, named_modules
from .structured import attribute_structured, call_model, input_entries, take_rows

__all__ = ["find_embedding", "token_inputs", "attribute_tokens", "has_token_inputs"]


def has_token_inputs(model: nn.Module, inputs: Any, embedding: Union[None, str, nn.Module] = None) -> bool:
    """True when ``inputs`` hold an integer tensor of ids and ``model`` has an embedding to read them."""
    if not any(not t.is_floating_point() and t.dtype != torch.bool and t.dim() >= 2 for _, t in input_entries(inputs)):
        return False
    return embedding is not None or any(isinstance(m, nn.Embedding) for m in model.modules())


def find_embedding(model: nn.Module, embedding: Union[None, str, nn.Module] = None) -> Tuple[str, nn.Module]:
    """The embedding that token ids are attributed at: a dotted name, a module, or the model's one ``nn.Embedding``."""
    modules = named_modules(model)
    embeddings = [n for n, m in modules.items() if isinstance(m, nn.Embedding)]
    if isinstance(embedding, str):
        if embedding not in modules or embedding == "":
            raise ValueError(f"embedding {embedding!r} not found; the model's embeddings: {', '.join(embeddings) or 'none'}")
        return embedding, modules[embedding]
    if isinstance(embedding, nn.Module):
        for name, m in modules.items():
            if m is embedding:
                return name, m
        raise ValueError(f"the embedding module {type(embedding).__name__} is not part of {type(model).__name__}")
    if embedding is not None:
        raise TypeError(f"embedding must be None, a dotted name or an nn.Module, got {embedding!r}")
    if not embeddings:
        raise ValueError(
            f"{type(model).__name__} takes integer inputs but has no nn.Embedding: pass embedding=<dotted name> of the "
            "layer that reads the ids, or give floating-point inputs"
        )
    return embeddings[0], modules[embeddings[0]]


#: per model: ``{(embedding, the inputs' layout): (key, embedding's name)}``, found once
_FOUND: "weakref.WeakKeyDictionary[nn.Module, Dict[Any, Tuple[Any, str, nn.Module]]]" = weakref.WeakKeyDictionary()


def _layout(inputs: Any) -> Tuple[Any, ...]:
    return (type(inputs).__name__,) + tuple((k, t.dtype, tuple(t.shape[1:])) for k, t in input_entries(inputs))


def token_inputs(model: nn.Module, inputs: Any, embedding: Union[None, str, nn.Module] = None) -> Tuple[Any, str, nn.Module]:
    """``(key, name, module)``: which input the embedding reads (its key in the structure, ``None`` for one
    tensor), found by running the model on the first sample with a hook on the embedding (once per model,
    embedding and layout of the inputs)."""
    cache_key = (embedding if embedding is None or isinstance(embedding, str) else id(embedding), _layout(inputs))
    found = _FOUND.get(model, {}).get(cache_key)
    if found is not None and _still_there(model, found[1], found[2]):
        return found
    found = _find_token_input(model, inputs, embedding)
    _FOUND.setdefault(model, {})[cache_key] = found
    return found


def _still_there(model: nn.Module, name: str, module: nn.Module) -> bool:
    """Whether ``module`` is still the model's ``name`` (a user may have replaced it since)."""
    try:
        return model.get_submodule(name) is module
    except AttributeError:  # a compiled submodule's eager name: look it up the long way
        return named_modules(model).get(name) is module


def _find_token_input(model: nn.Module, inputs: Any, embedding: Union[None, str, nn.Module]) -> Tuple[Any, str, nn.Module]:
    name, emb = find_embedding(model, embedding)
    candidates: List[Tuple[str, nn.Module]]
    if embedding is None:  # several embeddings: the first one that reads an input
        candidates = [(n, m) for n, m in named_modules(model).items() if isinstance(m, nn.Embedding)]
    else:
        candidates = [(name, emb)]
    seen: Dict[str, Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: seen.setdefault(n, args[0])) for n, m in candidates]
    try:
        with explaining(model), torch.no_grad():
            call_model(model, take_rows(inputs, slice(0, 1)))
    finally:
        for h in handles:
            h.remove()
    for n, m in candidates:
        got = seen.get(n)
        if got is None:
            continue
        for key, t in input_entries(inputs):
            if not t.is_floating_point() and tuple(got.shape) == tuple(t[:1].shape) and torch.equal(got, t[:1].to(got.device)):
                return key, n, m
    raise ValueError(
        f"no embedding of {type(model).__name__} reads one of the integer inputs as it is "
        f"(embeddings tried: {', '.join(n for n, _ in candidates)}); pass embedding=<dotted name> of the one that does"
    )


class _AtEmbedding(nn.Module):
    """``model`` on its ids, with the embedding's output replaced by the ``"embedded"`` argument."""

    def __init__(self, model: nn.Module, emb: nn.Module, template: Any, names: Dict[str, Any]) -> None:
        super().__init__()
        self._orig_mod = model
        self.emb, self.template, self.names = emb, template, names

    def forward(self, embedded: Tensor, **kw: Tensor) -> Any:
        values = {self.names[s]: t for s, t in kw.items()}
        if isinstance(self.template, dict):
            full: Any = {k: values[k] for k in self.template}
        elif isinstance(self.template, (tuple, list)):
            full = tuple(values[i] for i in range(len(self.template)))
        else:
            full = values[None]
        handle = self.emb.register_forward_hook(lambda mod, args, out: embedded)
        try:
            return call_model(self._orig_mod, full)
        finally:
            handle.remove()


class _IdsAsFloat(nn.Module):
    """``model`` taking its ids as floats (whole numbers), so that occlusion can put ``pad_id`` in a window."""

    def __init__(self, model: nn.Module, key: Any, dtype: torch.dtype) -> None:
        super().__init__()
        self._orig_mod = model
        self.key, self.dtype = key, dtype

    def forward(self, *args: Tensor, **kw: Tensor) -> Any:
        if self.key is None:
            return self._orig_mod(args[0].round().to(self.dtype))
        if isinstance(self.key, str):
            kw = dict(kw)
            kw[self.key] = kw[self.key].round().to(self.dtype)
            return self._orig_mod(**kw)
        parts = list(args)
        parts[self.key] = parts[self.key].round().to(self.dtype)
        return self._orig_mod(*parts)


#: the methods that explain token ids by replacing tokens with ``pad_id`` (on the ids, not the embedding)
REPLACING = ("occlusion", "feature_ablation", "kernel_shap", "lime", "shapley_sampling")


def _replace_tokens(
    fn: Callable[..., Any], method_name: str, model: nn.Module, inputs: Any, target: Any, key: Any, pad_id: int,
    takes_shard: bool, **options: Any,
) -> Any:
    """A method that replaces features by a baseline, on the ids themselves: a token left out (an occlusion
    window, an ablated feature, a coalition's absent player) is replaced by ``pad_id``."""
    ids = dict(input_entries(inputs))[key]
    if ids.numel() and int(ids.abs().max()) >= 2**24:
        raise ValueError(f"token ids >= 2**24 cannot be replaced exactly by {method_name}; use another method")
    as_float = ids.to(torch.float32)  # whole numbers below 2**24 are exact
    wrapped = _IdsAsFloat(model, key, ids.dtype)
    token_opts: Dict[str, Any] = {"baseline": float(pad_id)}
    if method_name == "occlusion":
        token_opts["window"] = options.get("window") or 1
        if options.get("stride") is not None:
            token_opts["stride"] = options["stride"]
    if key is None:
        return fn(wrapped, as_float, target, **{**options, **token_opts})
    if isinstance(inputs, dict):
        swapped: Any = {k: (as_float if k == key else t) for k, t in inputs.items()}
    else:
        swapped = tuple(as_float if i == key else t for i, t in enumerate(inputs))
    return attribute_structured(
        fn, wrapped, swapped, target, per_input=True, takes_shard=takes_shard, per_input_options={key: token_opts},
        **options,
    )


def attribute_tokens(
    fn: Callable[..., Any],
    model: nn.Module,
    inputs: Any,
    target: Any = None,
    /,
    *,
    method_name: str = "",
    takes_shard: bool = False,
    takes_baseline: bool = False,
    embedding: Union[None, str, nn.Module] = None,
    pad_id: int = 0,
    **options: Any,
) -> Any:
    """``fn`` on the embedding's output for the token ids in ``inputs``; one value per token.

    Returns the inputs' structure with ``(N, T)`` maps for the ids (a tensor for a probe of ids alone).

    Example:
        >>> import torch
        >>> from lightning_xai import functional as F
        >>> net = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Flatten(), torch.nn.Linear(6, 2))
        >>> F.attribute(net, torch.tensor([[1, 4], [2, 0]]), 1, "integrated_gradients").shape
        torch.Size([2, 2])
    """
    key, _, emb = token_inputs(model, inputs, embedding)
    entries = input_entries(inputs)
    ids = dict(entries)[key]
    if method_name in REPLACING:
        return _replace_tokens(fn, method_name, model, inputs, target, key, pad_id, takes_shard, **options)
    with explaining(model):  # once for the whole call: the method's own explaining nests in it for free
        with torch.no_grad():
            embedded = emb(ids).detach()
            pad = emb(torch.full_like(ids[:1], int(pad_id))).detach()  # (1, T, D): the same for every row
        names = {f"x{i}": k for i, (k, _) in enumerate(entries)}
        structure: Dict[str, Tensor] = {"embedded": embedded}
        structure.update({s: dict(entries)[k] for s, k in names.items()})
        wrapped = _AtEmbedding(model, emb, inputs, names)
        opts = dict(options)
        if takes_baseline and opts.get("baseline") is None:
            # integrated gradients (and other path methods): from the padded sequence; other float inputs from 0
            floats = [t for _, t in input_entries(structure) if t.is_floating_point()]
            row = [pad.reshape(1, -1)] + [torch.zeros((1, math.prod(t.shape[1:])), dtype=t.dtype, device=t.device) for t in floats[1:]]
            opts["baseline"] = torch.cat(row, dim=1) if len(row) > 1 else pad.reshape(1, -1)
        maps = attribute_structured(fn, wrapped, structure, target, takes_shard=takes_shard, **opts)
    per_token = maps["embedded"].sum(-1)
    values = {k: maps[s] for s, k in names.items() if s in maps}
    values[key] = per_token
    if key is None:
        return per_token
    if isinstance(inputs, dict):
        return {k: values[k] for k in inputs if k in values}
    return tuple(values.get(i) for i in range(len(inputs)))
