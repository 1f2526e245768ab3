"""The attribution engine: what the callbacks and checks ask for, computed once, without Lightning.

Given a model, a probe, methods (:class:`~lightning_xai.functional.MethodCall`), a target rule, a
dtype, a chunking policy and a shard (this process's rank, the world size and a ``gather``
function), :meth:`AttributionEngine.attributions` returns the probe's maps:

- **cached** per (method, options, probe, target, dtype, step): the first caller computes, the others
  read; :meth:`~AttributionEngine.start_epoch` empties the cache, so maps never outlive their weights;
- **shared**: methods flagged ``shared_pass`` asked together share one forward+backward pass, and
  with ``target="predicted"`` that pass also gives the probe's outputs;
- **sharded**: each rank explains a contiguous share of the probe and ``gather`` assembles the whole
  (every rank runs the same number of passes);
- **chunked**: at most :class:`Chunking`'s rows per pass; an out-of-memory error halves it and retries.

Nothing here imports Lightning: a trainer-free loop can use the engine as the callbacks do.

Example:
    >>> import torch
    >>> from lightning_xai import ProbeSet, functional as F
    >>> from lightning_xai.engine import AttributionEngine
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> probe = ProbeSet(torch.randn(6, 4), targets=torch.tensor([0, 1, 2, 0, 1, 2]))
    >>> engine = AttributionEngine()
    >>> maps = engine.attributions(net, probe, F.resolve_methods(["saliency", "integrated_gradients"]))
    >>> {k: tuple(v.shape) for k, v in maps.items()}
    {'saliency': (6, 4), 'integrated_gradients': (6, 4)}
    >>> _ = engine.attributions(net, probe, F.resolve_methods("saliency"))  # read from the cache
    >>> engine.computed["saliency"]
    1
"""

from __future__ import annotations

from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from . import functional as F
from .functional.methods import MethodCall
from .probe import ProbeSet

__all__ = [
    "AttributionEngine",
    "Chunking",
    "Shard",
    "TargetRule",
    "check_target_rule",
    "resolve_target",
    "target_key",
    "first_output",
    "label_sum",
]

#: ``"predicted"``, ``"true"``, a class index, a tensor of indices, or ``fn(outputs, targets) -> indices``
TargetRule = Union[str, int, Tensor, Callable[[Tensor, Optional[Tensor]], Any]]


# ----------------------------------------------------------------------------------------------
# targets: one definition
# ----------------------------------------------------------------------------------------------
def check_target_rule(target: Any, probe: Optional[ProbeSet] = None) -> None:
    """Raise a ``ValueError``/``TypeError`` naming the fix when ``target`` is not a valid rule."""
    if isinstance(target, str):
        if target not in ("predicted", "true"):
            raise ValueError(f"target must be 'predicted', 'true', a class index or a callable; got {target!r}")
        if target == "true" and probe is not None and probe.targets is None:
            raise ValueError(
                "target='true' needs a probe with targets: build it with ProbeSet(inputs, targets) "
                "or from a dataset whose items carry labels"
            )
    elif isinstance(target, Tensor):
        if target.is_floating_point():
            raise TypeError(f"a target tensor must hold integer class indices, got dtype {target.dtype}")
    elif isinstance(target, bool) or not (isinstance(target, int) or callable(target)):
        raise TypeError(f"target must be 'predicted', 'true', an int class index or a callable; got {target!r}")
    elif isinstance(target, int) and target < 0:
        raise ValueError(f"target class index must be >= 0, got {target}")


def target_key(target: Any) -> Any:
    """A hashable, process-independent key for a target rule (callables by qualified name)."""
    if isinstance(target, (str, int)):
        return target
    if isinstance(target, Tensor):
        return F.options_key(target)
    return ("callable", getattr(target, "__module__", ""), getattr(target, "__qualname__", type(target).__qualname__))


def first_output(out: Any, output: F.OutputSpec = None) -> Tensor:
    """The explained tensor of what a model's forward returned (:func:`~lightning_xai.functional.select_model_output`):
    the tensor itself with ``output=None`` (a tuple, dict or object is then an error naming ``output=``)."""
    return F.select_model_output(out, output)


def resolve_target(target: Any, outputs: Tensor, targets: Optional[Tensor] = None) -> Optional[Tensor]:
    """The class explained for each probe sample under ``target``, or None for single-output models.

    Example:
        >>> import torch
        >>> out = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
        >>> resolve_target("predicted", out), resolve_target("true", out, torch.tensor([0, 0])), resolve_target(1, out)
        (tensor([1, 0]), tensor([0, 0]), tensor([1, 1]))
    """
    if outputs.dim() == 1 or outputs.shape[1] == 1:
        return None
    n, classes = outputs.shape[0], outputs.shape[1]
    if isinstance(target, str) and target == "predicted":
        return outputs.argmax(1)
    if isinstance(target, str) and target == "true":
        if targets is None:
            raise ValueError("target='true' needs a probe with targets: build it with ProbeSet(inputs, targets)")
        if targets.dim() == 2 and targets.shape[1] != classes:  # multi-hot rows: one weight per class
            raise ValueError(f"multi-hot targets have {targets.shape[1]} classes, the model returns {classes}")
        return targets.to(outputs.device).long()
    if isinstance(target, int) and not isinstance(target, bool):
        return torch.full((n,), target, dtype=torch.long, device=outputs.device)
    if isinstance(target, Tensor):
        t = target.to(outputs.device).long().reshape(-1)
    elif callable(target):
        t = torch.as_tensor(target(outputs, None if targets is None else targets.to(outputs.device)))
        t = t.to(outputs.device).long().reshape(-1)
    else:
        raise TypeError(f"target must be 'predicted', 'true', an int, a tensor or a callable; got {target!r}")
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n or int(t.max()) >= classes or int(t.min()) < 0:
        raise ValueError(
            f"the target {'callable' if callable(target) else 'tensor'} gave {t.tolist()[:8]}...; it must give "
            f"one class index in 0..{classes - 1} per probe sample ({n})"
        )
    return t


def _tokens_key(tokens: Mapping[str, Any]) -> Any:
    """A hashable key of ``embedding=``/``pad_id=`` (a module by its type: names are the usual form)."""
    return tuple(sorted((k, v if isinstance(v, (str, int, type(None))) else type(v).__qualname__) for k, v in tokens.items()))


_LABELS_KEY = "__labels__"


def _with_labels(x: Any, weights: Tensor) -> Any:
    """The inputs with the multi-hot labels added as one more (riding) input."""
    labels = weights.long()
    if isinstance(x, dict):
        return {**x, _LABELS_KEY: labels}
    if isinstance(x, (tuple, list)):
        return (*x, labels)
    return (x, labels)


class _SumOfLabels(nn.Module):
    """``model`` whose output is the sum of the logits of each row's labels (the last input, multi-hot)."""

    def __init__(self, model: nn.Module, template: Any) -> None:
        super().__init__()
        self._orig_mod = model
        self.kind = "dict" if isinstance(template, dict) else "tuple" if isinstance(template, (tuple, list)) else "tensor"

    def forward(self, *args: Tensor, **kw: Tensor) -> Tensor:
        if self.kind == "dict":
            labels = kw.pop(_LABELS_KEY)
            out = self._orig_mod(**kw)
        else:
            *inputs, labels = args
            out = self._orig_mod(*inputs)
        return (out * labels.to(out.dtype)).sum(1)

    def strip(self, maps: Any) -> Any:
        """The maps of the model's own inputs (the labels' entry left out)."""
        if self.kind == "tensor":
            return maps[0]
        if self.kind == "tuple":
            return tuple(maps[:-1])
        return {k: v for k, v in maps.items() if k != _LABELS_KEY}


def label_sum(model: nn.Module, inputs: Any, labels: Tensor) -> Tuple[nn.Module, Any, Callable[[Any], Any]]:
    """What explains multi-hot ``labels``: a model returning the sum of each row's labelled logits, the
    inputs with the labels riding along (each row keeps its own through every method), and the function
    that takes the labels' entry off the maps (what the engine does for ``target="true"``).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 3, bias=False)
        >>> model, x, strip = label_sum(net, torch.ones(1, 2), torch.tensor([[1, 0, 1]]))
        >>> bool(torch.allclose(model(*x), net(torch.ones(1, 2))[:, [0, 2]].sum(1)))
        True
    """
    wrapped = _SumOfLabels(model, inputs)
    return wrapped, _with_labels(inputs, labels), wrapped.strip


# ----------------------------------------------------------------------------------------------
# chunking and sharding
# ----------------------------------------------------------------------------------------------
class Chunking:
    """How many probe rows go through one pass, and what an out-of-memory error taught.

    ``rows()``: a method's own ``chunk_size`` option, else ``chunk_size``, halved after an
    out-of-memory error, else automatic: the probe size, capped at the training batch size seen in
    the run (``batch_rows``), so that explaining never holds more activations than a training step.

    Example:
        >>> c = Chunking()
        >>> c.batch_rows = 8
        >>> c.rows(n=32), Chunking(4).rows(n=32)
        (8, 4)
    """

    def __init__(self, chunk_size: Optional[int] = None) -> None:
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        self.chunk_size = chunk_size
        #: the chunk size in use: ``chunk_size``, halved after an out-of-memory error
        self.current: Optional[int] = chunk_size
        #: rows of the run's training batches (None: not seen yet; 0: unknown layout)
        self.batch_rows: Optional[int] = None

    def rows(self, calls: Iterable[MethodCall] = (), n: int = 0) -> Optional[int]:
        for call in calls:
            if call.options.get("chunk_size") is not None:
                return int(call.options["chunk_size"])
        if self.current is not None:
            return self.current
        if self.batch_rows and self.batch_rows < n:
            return self.batch_rows
        return None

    def run(self, fn: Callable[[int], Any], chunk: Optional[int], rows: int) -> Any:
        """``fn(chunk)`` with out-of-memory halving; a chunk size that had to be halved is kept."""
        result, used = F.with_oom_retry(fn, chunk, rows)
        if used < (chunk or rows):
            self.current = used if self.current is None else min(self.current, used)
        return result


@dataclass(frozen=True)
class Shard:
    """This process's part of a sharded probe: ``rank`` of ``world``, and how to gather the parts.

    ``gather(t)`` returns every rank's ``t`` stacked along a new first axis (Lightning's
    ``strategy.all_gather``); every rank passes a tensor of the same shape (the engine pads).
    """

    rank: int = 0
    world: int = 1
    gather: Optional[Callable[[Tensor], Tensor]] = None

    def bounds(self, n: int) -> Tuple[int, int]:
        """Rows ``[start, stop)`` of an ``n``-row probe that this rank explains (contiguous)."""
        per = -(-n // max(1, self.world))
        return min(n, self.rank * per), min(n, (self.rank + 1) * per)

    def rows(self, n: int) -> slice:
        start, stop = self.bounds(n)
        return slice(start, stop) if stop > start else slice(0, 1)  # an empty shard computes one row, dropped

    def assemble(self, part: Tensor, n: int) -> Tensor:
        """The whole probe's maps from this rank's ``part`` (a collective when ``world > 1``)."""
        if self.world <= 1 or self.gather is None:
            return part
        start, stop = self.bounds(n)
        per = -(-n // self.world)
        part = part if stop > start else part[:0]
        pad = torch.zeros((per - part.shape[0],) + tuple(part.shape[1:]), dtype=part.dtype, device=part.device)
        full = self.gather(torch.cat([part, pad]))
        return full.reshape((-1,) + tuple(part.shape[1:]))[:n]


# ----------------------------------------------------------------------------------------------
# the engine
# ----------------------------------------------------------------------------------------------
class AttributionEngine:
    """Attributions and probe outputs, computed once per (method, options, probe, target, dtype, step).

    Also the meeting point of the probe forward: a *tap* (``add_tap(key, fingerprint, factory)``,
    ``factory(model) -> context manager``) watches the one probe forward of the epoch instead of
    running its own; what its ``__enter__`` returned is stored under ``key``.
    """

    def __init__(self) -> None:
        self._store: Dict[Hashable, Any] = {}
        self._used = False
        #: how many times each method was actually computed (tests and benchmarks read it)
        self.computed: Counter = Counter()
        self._taps: Dict[Hashable, Tuple[str, Callable[[Any], Any]]] = {}
        #: (method, options, target) already tried on one probe sample (:meth:`trial`)
        self._tried: set = set()

    # ------------------------------------------------------------------ the store
    def start_epoch(self) -> None:
        """Called by every callback when validation starts; the first call after any use clears."""
        if self._used:
            self._store.clear()
            self._used = False

    def get(self, key: Hashable) -> Any:
        self._used = True
        return self._store.get(key)

    def put(self, key: Hashable, value: Any) -> None:
        self._used = True
        self._store[key] = value

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        value = self.get(key)
        if value is None:
            value = compute()
            self.put(key, value)
        return value

    def __contains__(self, key: Hashable) -> bool:
        return key in self._store

    def add_tap(self, key: Hashable, fingerprint: str, factory: Callable[[Any], Any]) -> None:
        self._taps[key] = (fingerprint, factory)

    def remove_tap(self, key: Hashable) -> None:
        self._taps.pop(key, None)

    def taps_for(self, fingerprint: str) -> List[Tuple[Hashable, Callable[[Any], Any]]]:
        return [(k, f) for k, (fp, f) in self._taps.items() if fp == fingerprint]

    # ------------------------------------------------------------------ keys
    @staticmethod
    def outputs_key(probe: ProbeSet, dtype: torch.dtype, step: int = 0, output: Any = None) -> Any:
        key = ("__outputs__", probe.fingerprint(), str(dtype), int(step))
        return key if output is None else key + (F.output_key(output),)

    @staticmethod
    def attribution_key(
        call: MethodCall, probe: ProbeSet, target: Any, dtype: torch.dtype, step: int = 0, output: Any = None
    ) -> Any:
        key = ("attr", call.key, probe.fingerprint(), target_key(target), str(dtype), int(step))
        return key if output is None else key + (F.output_key(output),)

    # ------------------------------------------------------------------ outputs
    def outputs(
        self, model: nn.Module, probe: ProbeSet, *, dtype: torch.dtype = torch.float32,
        chunking: Optional[Chunking] = None, step: int = 0, output: F.OutputSpec = None,
    ) -> Tensor:
        """The model's outputs on the probe (eval mode, no grad), once per step; taps watch this pass.

        ``output`` selects the explained tensor when the model returns a tuple, dict or object."""
        chunking = chunking or Chunking()
        key = self.outputs_key(probe, dtype, step, output)

        def compute() -> Tensor:
            x = probe.inputs_for(model)
            taps = self.taps_for(probe.fingerprint())
            n = F.input_rows(x)

            def attempt(c: int) -> Tuple[Tensor, List[Tuple[Any, Any]]]:
                with ExitStack() as stack:  # fresh watchers for each attempt: a retry never double-counts
                    watchers = [(k, stack.enter_context(factory(model))) for k, factory in taps]
                    out = torch.cat(
                        [first_output(F.call_model(model, F.take_rows(x, slice(s, s + c))), output) for s in range(0, n, c)]
                    )
                return out, watchers

            with F.computing_in(model, dtype, F.inputs_device(x).type) as in_dtype, F.explaining(model), torch.no_grad():
                x = F.inputs_to(x, in_dtype)
                out, watchers = chunking.run(attempt, chunking.current, n)
            for k, watcher in watchers:
                self.put(k, watcher)
            return out.detach()

        return self.get_or_compute(key, compute)

    # ------------------------------------------------------------------ trial
    def trial(
        self, model: nn.Module, probe: ProbeSet, calls: Mapping[str, MethodCall], *, target: Any = "predicted",
        dtype: torch.dtype = torch.float32, output: F.OutputSpec = None, tokens: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Run each method once on the probe's first sample, once per (method, options, target): what fails
        here would fail at every epoch. A failure is re-raised with the method's name as ``err.method``."""
        tokens = dict(tokens or {})
        tried = lambda c: (id(model), c.key, target_key(target), F.output_key(output), _tokens_key(tokens))  # noqa: E731
        todo = {m: c for m, c in calls.items() if tried(c) not in self._tried}
        if not todo:
            return
        x = F.take_rows(probe.inputs_for(model), slice(0, 1))
        with F.computing_in(model, dtype, F.inputs_device(x).type) as in_dtype:
            x = F.inputs_to(x, in_dtype)
            with F.explaining(model), torch.no_grad():
                out = first_output(F.call_model(model, x), output)
            t = resolve_target(target, out, None if probe.targets is None else probe.targets[:1])
            explained = F.with_output(model, output)
            if t is not None and t.dim() == 2:  # multi-label: the sum of the true labels' logits
                explained = _SumOfLabels(explained, x)
                x, t = _with_labels(x, t), None
            for name, call in todo.items():
                try:
                    if call.method.shared_pass and not F.is_structured(x) and x.is_floating_point():
                        opts = {k: v for k, v in call.options.items() if k in ("layer", "upsample")}
                        F.attribute_many(explained, x, t, [name], **opts)
                    else:
                        call(explained, x, t, chunk_size=1, **tokens)
                except Exception as err:
                    err.method = name  # type: ignore[attr-defined]
                    raise
                self._tried.add(tried(call))

    # ------------------------------------------------------------------ attributions
    def attributions(
        self,
        model: nn.Module,
        probe: ProbeSet,
        calls: Mapping[str, MethodCall],
        *,
        target: Any = "predicted",
        dtype: torch.dtype = torch.float32,
        chunking: Optional[Chunking] = None,
        shard: Shard = Shard(),
        step: int = 0,
        output: F.OutputSpec = None,
        tokens: Optional[Mapping[str, Any]] = None,
    ) -> Dict[str, Any]:
        """``{name: maps}`` of the whole probe for each method call (see the module docstring); ``output``
        selects the explained tensor when the model returns a tuple, dict or object; ``tokens`` holds
        ``embedding=`` and ``pad_id=`` for probes of token ids."""
        chunking = chunking or Chunking()
        tokens = dict(tokens or {})
        keys = {m: self.attribution_key(c, probe, target, dtype, step, output) for m, c in calls.items()}
        if tokens:
            keys = {m: k + (_tokens_key(tokens),) for m, k in keys.items()}
        result = {m: self.get(k) for m, k in keys.items() if k in self}
        missing = {m: c for m, c in calls.items() if m not in result}
        if missing:
            x = probe.inputs_for(model)
            with F.computing_in(model, dtype, F.inputs_device(x).type) as in_dtype:
                x = F.inputs_to(x, in_dtype)
                computed = self._compute(model, probe, x, missing, target, dtype, chunking, shard, step, output, tokens)
            for m, a in computed.items():
                self.put(keys[m], a)
                self.computed[m] += 1
                result[m] = a
        return {m: result[m] for m in calls}

    def _compute(
        self, model: nn.Module, probe: ProbeSet, x: Tensor, missing: Mapping[str, MethodCall], target: Any,
        dtype: torch.dtype, chunking: Chunking, shard: Shard, step: int, output: F.OutputSpec = None,
        tokens: Optional[Mapping[str, Any]] = None,
    ) -> Dict[str, Any]:
        tokens = dict(tokens or {})
        # the methods see a model whose forward returns the explained tensor; taps watch the model itself
        explained = F.with_output(model, output)
        n = F.input_rows(x)
        rows = shard.rows(n)
        xs = F.take_rows(x, rows)
        resolved: List[Optional[Tensor]] = []

        def shard_target() -> Optional[Tensor]:
            if not resolved:
                out = self.outputs(model, probe, dtype=dtype, chunking=chunking, step=step, output=output)
                resolved.append(resolve_target(target, out, probe.targets))
            t = resolved[0]
            return None if t is None else t[rows]

        result: Dict[str, Any] = {}
        if isinstance(target, str) and target == "true" and probe.multilabel:
            # multi-label: each sample's true labels together, the sum of their logits (the labels ride along)
            weights = shard_target()
            assert weights is not None and weights.dim() == 2
            explained = _SumOfLabels(explained, xs)
            xs = _with_labels(xs, weights)
            x = xs
        # several inputs: each method on its own (the shared pass takes one tensor)
        shared = (
            [] if F.is_structured(x) or not x.is_floating_point() else [m for m, c in missing.items() if c.method.shared_pass]
        )
        if shared:
            cam = missing.get("grad_cam")
            cam_opts = {} if cam is None else cam.options
            options = dict(layer=cam_opts.get("layer"), upsample=cam_opts.get("upsample", True))
            calls = [missing[m] for m in shared]
            outputs_key = self.outputs_key(probe, dtype, step, output)
            if target == "predicted" and shard.world == 1 and outputs_key not in self:
                # one forward for both: the pass's own outputs give the predicted class and are kept as
                # this step's probe outputs; taps watch this pass (not with Grad-CAM: a layer followed by
                # an in-place op makes it run the forward again)
                taps = self.taps_for(probe.fingerprint()) if "grad_cam" not in shared else []

                def attempt(c: int) -> Any:
                    with ExitStack() as stack:
                        watchers = [(k, stack.enter_context(factory(model))) for k, factory in taps]
                        out = F.attribute_many(explained, xs, "predicted", shared, return_outputs=True, chunk_size=c, **options)
                    return out, watchers

                (maps, outputs), watchers = chunking.run(attempt, chunking.rows(calls, n), n)
                self.put(outputs_key, outputs)
                for k, watcher in watchers:
                    self.put(k, watcher)
            else:
                ts = shard_target()
                maps = chunking.run(
                    lambda c: F.attribute_many(explained, xs, ts, shared, chunk_size=c, **options),
                    chunking.rows(calls, n), xs.shape[0],
                )
            for m in shared:
                result[m] = shard.assemble(maps[m], n)
        for m, call in missing.items():
            if m in result:
                continue
            ts = None if isinstance(explained, _SumOfLabels) else shard_target()
            chunk = chunking.rows([call], n)
            extra: Dict[str, Any] = {"shard": (rows.start, n)} if shard.world > 1 else {}
            extra.update(tokens)
            rows_here = F.input_rows(xs)
            a = chunking.run(lambda c: call(explained, xs, ts, chunk_size=c, **extra), chunk, rows_here)
            if F.input_rows(a) != rows_here:
                raise ValueError(
                    f"method {m!r} returned maps of shape {F.map_tensors(lambda t: tuple(t.shape), a)} for "
                    f"{rows_here} inputs; it must return one map per input row"
                )
            if isinstance(explained, _SumOfLabels):
                a = explained.strip(a)
            result[m] = F.map_tensors(lambda t: shard.assemble(t.detach(), n), a)
        return result
