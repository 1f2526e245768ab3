"""Models with several inputs: a tuple of tensors (``model(*inputs)``) or a dict (``model(**inputs)``).

Floating-point tensors are *attributed*; the others (attention masks, integer ids, bool flags) *ride
along*: each row of them goes to the model with its own row of the attributed inputs, unchanged.

Every method works on structured inputs through :func:`attribute_structured`, which hands the method one
flat ``(N, D)`` tensor (the attributed inputs, flattened and concatenated) and a model that splits it
back, adds the riding rows and calls the model: methods (built-in, Captum's, a user's) run unchanged,
and integrated gradients, SmoothGrad and the samplers perturb all attributed inputs together, as Captum
does with tuple inputs: by default every value of every input is one feature (Captum's default), and a
``feature_mask`` in the inputs' structure groups them (:func:`flat_feature_mask`; an image input's
superpixel ``grid`` does not apply). Occlusion occludes one input at a time with the others as they
are (Captum's rule for tuple inputs), with its window applied to each input's own shape.

With riding tensors, each row a method evaluates needs its own sample's riding row. The built-in methods
say which samples every model call evaluates (:func:`sample_rows`), so they run batched as on one tensor.
A method that does not say (Captum's, a user's) runs one probe row at a time (each call's rows are the
same sample, so its riding row is broadcast); SmoothGrad keeps its place in the whole probe's noise
stream (``shard``), so the maps equal one batched call's.

Attributions come back in the inputs' structure: a tuple with one entry per input (``None`` for a riding
input), a dict with an entry per attributed input.

Layer methods (Grad-CAM) make one map per row at the layer (:func:`attribute_at_layer`); upsampled, it goes
to the attributed inputs the layer's output depends on (found once per layer by autograd connectivity,
:func:`inputs_feeding`); an input the layer does not see gets no map: ``None`` in a tuple, no entry in a
dict, as a riding input.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ._guard import explaining, forked_rng
from ._rows import declared_rows, handing, sample_rows

__all__ = [
    "Inputs",
    "is_structured",
    "input_entries",
    "input_names",
    "input_rows",
    "take_rows",
    "map_tensors",
    "call_model",
    "inputs_to",
    "inputs_device",
    "attribute_structured",
    "attribute_at_layer",
    "inputs_feeding",
    "flat_feature_mask",
    "structure_like",
    "sample_rows",
]

#: a tensor, a tuple of tensors (``model(*inputs)``) or a dict of tensors (``model(**inputs)``)
Inputs = Union[Tensor, Tuple[Tensor, ...], Dict[str, Tensor]]


def is_structured(x: Any) -> bool:
    """True for a tuple/list or dict of tensors (several model inputs)."""
    return isinstance(x, (tuple, list, Mapping))


def input_entries(x: Any) -> List[Tuple[Any, Tensor]]:
    """``[(key, tensor)]``: the index for tuples, the key for dicts, ``None`` for one tensor."""
    if isinstance(x, Mapping):
        return list(x.items())
    if isinstance(x, (tuple, list)):
        return list(enumerate(x))
    return [(None, x)]


def input_names(x: Any) -> List[str]:
    """Tag-safe names of the entries: dict keys, ``input0, input1, ...`` for tuples."""
    return [str(k) if isinstance(x, Mapping) else f"input{k}" for k, _ in input_entries(x)]


def structure_like(x: Any, values: Mapping[Any, Any]) -> Any:
    """``x``'s structure holding ``values[key]`` (missing keys: ``None`` in a tuple, left out of a dict)."""
    if isinstance(x, Mapping):
        return {k: values[k] for k in x if k in values}
    if isinstance(x, (tuple, list)):
        return tuple(values.get(i) for i in range(len(x)))
    return values[None]


def map_tensors(fn: Callable[[Tensor], Any], x: Any) -> Any:
    """``fn`` applied to every tensor of the structure (``None`` entries kept)."""
    if isinstance(x, Mapping):
        return {k: (None if v is None else fn(v)) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(None if v is None else fn(v) for v in x)
    return fn(x)


def input_rows(x: Any) -> int:
    """The number of samples (the first dimension, the same for every tensor)."""
    return int(next(t for _, t in input_entries(x) if t is not None).shape[0])


def take_rows(x: Any, rows: Union[slice, Tensor]) -> Any:
    """Rows of every tensor of the structure."""
    return map_tensors(lambda t: t[rows], x)


def call_model(model: Callable[..., Any], x: Any) -> Any:
    """``model(*x)`` for a tuple, ``model(**x)`` for a dict, ``model(x)`` for a tensor."""
    if isinstance(x, Mapping):
        return model(**x)
    if isinstance(x, (tuple, list)):
        return model(*x)
    return model(x)


def inputs_to(x: Any, dtype: torch.dtype) -> Any:
    """The floating-point tensors cast to ``dtype`` (the others unchanged)."""
    return map_tensors(lambda t: t.to(dtype) if t.is_floating_point() else t, x)


def inputs_device(x: Any) -> torch.device:
    return next(t for _, t in input_entries(x) if t is not None).device


class _RowsUnknown(Exception):
    """A batched call of a model with riding inputs did not say which samples it evaluates."""


class _Flat(nn.Module):
    """``model`` called on one flat ``(M, D)`` tensor of the attributed inputs, with the riding ones added:
    one row broadcast (``aligned=False``), or each row's own sample's (``aligned=True``: the method declares
    the samples with :func:`sample_rows`).

    The model is registered as ``_orig_mod`` so that layer names stay the model's own.
    """

    def __init__(
        self, model: nn.Module, template: Any, keys: Sequence[Any], shapes: Sequence[Tuple[int, ...]],
        riding: Mapping[Any, Tensor], aligned: bool = False,
    ) -> None:
        super().__init__()
        self._orig_mod = model
        self.template, self.keys, self.shapes, self.riding = template, list(keys), list(shapes), dict(riding)
        self.sizes = [math.prod(s) for s in shapes]
        self.aligned = aligned
        self.n = next((int(t.shape[0]) for t in self.riding.values()), 0)

    def forward(self, flat: Tensor) -> Any:
        m = flat.shape[0]
        values: Dict[Any, Tensor] = {}
        parts = [flat] if len(self.keys) == 1 else flat.split(self.sizes, dim=1)
        for key, part, shape in zip(self.keys, parts, self.shapes):
            values[key] = part.reshape((m,) + tuple(shape))
        rows = None
        if self.aligned and self.riding:  # each row's own sample's riding rows, as the method declared them
            rows = declared_rows()
            size = -1 if rows is None else (len(range(*rows.indices(self.n))) if isinstance(rows, slice) else rows.numel())
            if size != m:
                raise _RowsUnknown
        for key, t in self.riding.items():
            if rows is not None:
                values[key] = t[rows] if isinstance(rows, slice) else t.index_select(0, rows.to(t.device))
            else:
                values[key] = t.expand((m,) + tuple(t.shape[1:])) if t.shape[0] == 1 else t
        full = structure_like(self.template, values)
        if isinstance(self.template, (tuple, list)):
            full = tuple(values[i] for i in range(len(self.template)))
        return call_model(self._orig_mod, full)


def flat_feature_mask(mask: Any, inputs: Any) -> Tensor:
    """Feature masks of several inputs (Captum's ``feature_mask`` for tuple inputs) as one ``(1, D)`` mask over
    the flat row that the methods see: each attributed input's mask (one sample's shape, or one that
    broadcasts to it) flattened, in the inputs' order. Ids are shared across inputs, so one id in two
    inputs is one feature spanning both, as in Captum.

    ``mask`` has the inputs' structure: a dict with a mask per attributed key, a tuple with one per input
    (``None`` for riding ones) or one per attributed input, in order.

    Example:
        >>> import torch
        >>> inputs = (torch.zeros(3, 1, 2, 2), torch.zeros(3, 2), torch.ones(3, 2, dtype=torch.long))
        >>> flat_feature_mask((torch.tensor([[0, 0], [1, 1]]), torch.tensor([2, 0])), inputs)
        tensor([[0, 0, 1, 1, 2, 0]])
    """
    from .perturbation import feature_mask

    entries = input_entries(inputs)
    attributed = [(k, t) for k, t in entries if t.is_floating_point()]
    keys = [k for k, _ in attributed]
    if isinstance(mask, Mapping) != isinstance(inputs, Mapping):
        raise ValueError(
            f"feature_mask= of several inputs takes the inputs' structure ({type(inputs).__name__} of masks); got a "
            f"{type(mask).__name__}"
        )
    given = dict(input_entries(mask))
    if isinstance(mask, (tuple, list)) and len(mask) == len(keys) != len(entries):
        given = dict(zip(keys, mask))  # only the attributed inputs, in order (Captum's tuple)
    names = dict(zip([k for k, _ in entries], input_names(inputs)))
    missing = [names[k] for k in keys if given.get(k) is None]
    unknown = [str(k) for k, v in given.items() if k not in keys and v is not None]
    if missing or unknown:
        raise ValueError(
            f"feature_mask= of several inputs needs one mask per attributed input ({', '.join(names[k] for k in keys)}) "
            f"and none for the others; missing: {', '.join(missing) or '-'}; not attributed: {', '.join(unknown) or '-'}"
        )
    parts = []
    for key, t in attributed:
        try:
            parts.append(feature_mask(t[:1], mask=given[key]).reshape(1, -1))
        except ValueError as err:
            raise ValueError(f"feature_mask of input {names[key]!r}: {err}") from None
    return torch.cat(parts, dim=1)


def _row_target(target: Any, i: int, n: int) -> Any:
    if isinstance(target, Tensor) and target.numel() == n and n > 1:
        return target.reshape(-1)[i : i + 1]
    return target


def _row_by_row(
    fn: Callable[..., Any], model: nn.Module, inputs: Any, keys: Sequence[Any], shapes: Sequence[Tuple[int, ...]],
    fixed: Mapping[Any, Tensor], flat: Tensor, target: Any, opts: Mapping[str, Any], takes_shard: bool, first: int,
    total: int,
) -> Tensor:
    """``fn`` on one probe row at a time, its riding row broadcast over whatever rows the method makes."""
    n = flat.shape[0]
    parts = []
    for i in range(n):
        wrapped = _Flat(model, inputs, keys, shapes, {k: t[i : i + 1] for k, t in fixed.items()})
        extra = {"shard": (first + i, total)} if takes_shard else {}
        parts.append(fn(wrapped, flat[i : i + 1], _row_target(target, i, n), **opts, **extra))
    return torch.cat(parts)


def attribute_structured(
    fn: Callable[..., Any],
    model: nn.Module,
    inputs: Any,
    target: Any = None,
    /,
    *,
    per_input: bool = False,
    takes_shard: bool = False,
    shard: Optional[Tuple[int, int]] = None,
    per_input_options: Optional[Mapping[Any, Mapping[str, Any]]] = None,
    layer_maps: bool = False,
    **options: Any,
) -> Any:
    """``fn(model, x, target, **options)`` on structured ``inputs``; maps in the inputs' structure.

    Args:
        fn: any attribution function of the signature ``f(model, inputs, target, **options)``.
        per_input: attribute one input at a time, the others as they are (occlusion's rule).
        takes_shard: the method takes ``shard=(start, total)`` (SmoothGrad): rows run one at a time keep
            their place in the whole probe's random numbers.
        shard: this call's rows are rows ``start..`` of a ``total``-row probe.
        per_input_options: with ``per_input``, options for one input (by key) over ``options``.
        layer_maps: the method returns one map per row at a layer (Grad-CAM with ``upsample=False``): the
            maps of all rows come back as one tensor, not in the inputs' structure.

    Example:
        >>> import torch
        >>> from lightning_xai import functional as F
        >>> class Two(torch.nn.Module):
        ...     def forward(self, a, b):
        ...         return (2 * a).sum(1) + (3 * b).sum(1)
        >>> maps = attribute_structured(F.input_x_gradient, Two(), (torch.ones(2, 3), torch.ones(2, 2)))
        >>> maps[0].tolist(), maps[1].tolist()
        ([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]], [[3.0, 3.0], [3.0, 3.0]])
    """
    entries = input_entries(inputs)
    attributed = [(k, t) for k, t in entries if t.is_floating_point()]
    riding = {k: t for k, t in entries if not t.is_floating_point()}
    if not attributed:
        raise ValueError(
            "the inputs hold no floating-point tensor to attribute (token ids are attributed at their "
            "embedding's output: pass embedding=)"
        )
    n = input_rows(inputs)
    first, total = (0, n) if shard is None else (int(shard[0]), int(shard[1]))
    if is_structured(options.get("feature_mask")) and not per_input:
        options = {**options, "feature_mask": flat_feature_mask(options["feature_mask"], inputs)}
    results: Dict[Any, Tensor] = {}
    groups = [[kt] for kt in attributed] if per_input else [attributed]
    for group in groups:
        keys = [k for k, _ in group]
        shapes = [tuple(t.shape[1:]) for _, t in group]
        # one input at a time keeps its own shape (occlusion's windows are the input's); together: one flat tensor.
        # Made outside inference mode, so that the method is handed this very tensor (a method copies one made
        # in inference mode, and its row declarations would then not count)
        with torch.inference_mode(False):
            flat = group[0][1] if per_input else torch.cat([t.reshape(n, -1) for _, t in group], dim=1)
            if flat.is_inference():
                flat = flat.clone()
        opts = dict(options)
        if per_input and is_structured(opts.get("feature_mask")):  # one input at a time: that input's own mask
            opts["feature_mask"] = dict(input_entries(opts["feature_mask"])).get(keys[0])
        if per_input and per_input_options:
            opts.update(per_input_options.get(keys[0], {}))
        fixed = dict(riding)
        if per_input:
            fixed.update({k: t for k, t in attributed if k not in keys})
        extra = {"shard": (first, total)} if takes_shard and shard is not None else {}
        if not fixed:
            out = fn(_Flat(model, inputs, keys, shapes, {}), flat, target, **opts, **extra)
        else:
            out = None
            if n > 1:  # batched, where the method says which samples each call evaluates
                try:
                    with handing(flat):
                        out = fn(_Flat(model, inputs, keys, shapes, fixed, aligned=True), flat, target, **opts, **extra)
                except _RowsUnknown:
                    out = None
            if out is None:
                out = _row_by_row(fn, model, inputs, keys, shapes, fixed, flat, target, opts, takes_shard, first, total)
        if layer_maps and isinstance(out, Tensor) and out.shape[:1] == flat.shape[:1]:
            return out
        if not isinstance(out, Tensor) or out.shape != flat.shape:
            raise ValueError(
                f"on structured inputs a method must return maps shaped like its inputs; got "
                f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__} for {tuple(flat.shape)} "
                "(a layer method other than grad_cam: pass upsample=False for the layer's maps)"
            )
        pieces = [out] if per_input else out.split([math.prod(s) for s in shapes], dim=1)
        for key, part, shape in zip(keys, pieces, shapes):
            results[key] = part.reshape((n,) + shape)
    return structure_like(inputs, results)


#: ``{layer: {(input keys, shapes, dtypes): keys of the inputs feeding it}}``: connectivity, once per layer
_FEEDING: "weakref.WeakKeyDictionary[nn.Module, Dict[Tuple[Any, ...], List[Any]]]" = weakref.WeakKeyDictionary()


def inputs_feeding(model: nn.Module, inputs: Any, layer: nn.Module) -> List[Any]:
    """Keys of the attributed (floating-point) inputs that ``layer``'s output depends on, in order.

    Found by autograd connectivity on the first row: the inputs that are on the autograd graph of the
    layer's output (every call of the layer in one forward), whatever their shapes. The forward runs
    as an explanation does (eval mode, parameters frozen, buffers and random streams put back), once
    per layer and input structure: the answer is cached.

    Example:
        >>> import torch
        >>> class ImageAndMeta(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.conv, self.meta = torch.nn.Conv2d(1, 2, 3), torch.nn.Linear(4, 2)
        ...     def forward(self, image, meta):
        ...         return self.conv(image).mean((2, 3)) + self.meta(meta)
        >>> net = ImageAndMeta()
        >>> inputs_feeding(net, (torch.ones(2, 1, 5, 5), torch.ones(2, 4)), net.conv)
        [0]
        >>> inputs_feeding(net, {"image": torch.ones(2, 1, 5, 5), "meta": torch.ones(2, 4)}, net.meta)
        ['meta']
    """
    entries = input_entries(inputs)
    signature = tuple((k, tuple(t.shape[1:]), t.dtype) for k, t in entries)
    cached = _FEEDING.setdefault(layer, {})
    if signature in cached:
        return list(cached[signature])
    outputs: List[Tensor] = []

    def hook(module: nn.Module, args: object, output: Any) -> None:
        outputs.extend(t for t in (output if isinstance(output, (tuple, list)) else [output]) if isinstance(t, Tensor))

    with explaining(model), forked_rng(inputs_device(inputs)):
        row = {k: t[:1].detach().clone().requires_grad_(t.is_floating_point()) for k, t in entries}
        attributed = [k for k, t in entries if t.is_floating_point()]
        handle = layer.register_forward_hook(hook)
        try:
            call_model(model, structure_like(inputs, row))
        finally:
            handle.remove()
        on_graph = [o for o in outputs if o.requires_grad]
        grads: Sequence[Optional[Tensor]] = [None] * len(attributed)
        if on_graph and attributed:
            total = torch.stack([o.sum() for o in on_graph]).sum()
            grads = torch.autograd.grad(total, [row[k] for k in attributed], allow_unused=True)
    keys = [k for k, g in zip(attributed, grads) if g is not None]
    cached[signature] = keys
    return list(keys)


def attribute_at_layer(
    fn: Callable[..., Any],
    model: nn.Module,
    inputs: Any,
    target: Any = None,
    /,
    *,
    module: nn.Module,
    layer_name: str,
    resize: Callable[[Tensor, Tensor], Tensor],
    upsample: bool = True,
    **options: Any,
) -> Any:
    """A layer method (``fn(..., upsample=False)`` returns one map per row at the layer ``module``, named
    ``layer_name``) on structured inputs.

    With ``upsample=False`` the layer's maps come back as they are, one tensor. Otherwise each attributed
    input the layer depends on (:func:`inputs_feeding`) gets the map resized to it by ``resize(map,
    input)``, in the inputs' structure; the inputs the layer does not see get no map (``None`` in a tuple,
    no entry in a dict), as riding inputs.
    """
    maps = attribute_structured(fn, model, inputs, target, layer_maps=True, upsample=False, **options)
    if not upsample:
        return maps
    fed = inputs_feeding(model, inputs, module)
    if not fed:
        raise ValueError(
            f"the layer {layer_name!r} depends on none of the attributed (floating-point) inputs "
            f"{input_names(inputs)}, so its map cannot be upsampled to one; pass upsample=False for the layer's map"
        )
    tensors = dict(input_entries(inputs))
    results: Dict[Any, Tensor] = {}
    for key in fed:
        try:
            results[key] = resize(maps, tensors[key])
        except ValueError as err:
            name = input_names(inputs)[[k for k, _ in input_entries(inputs)].index(key)]
            raise ValueError(f"input {name!r} feeds the layer {layer_name!r}: {err}") from None
    return structure_like(inputs, results)
