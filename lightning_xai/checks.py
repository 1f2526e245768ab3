"""Explanation sanity checks that :class:`~lightning_xai.callbacks.SanityGate` evaluates.

A check computes one number from the probe's attributions (or from values the monitors put in
``trainer.callback_metrics``) and compares it with a threshold. Calling it returns a
:class:`CheckResult` with ``value``, ``passed`` and a one-line ``reason``.

======================================  ============================================================
check                                   value (pass rule)
======================================  ============================================================
:class:`ParameterRandomization`         similarity of ``|maps|`` between the model and copies with
                                        re-initialised top layers, Adebayo et al. 2018 (<= max)
:class:`RandomLogit`                    similarity of the maps for the target and a random other
                                        class (<= max)
:class:`RelevanceMass`                  share of ``|attr|`` inside the probe's masks, Arras et al.
                                        2022 (>= min)
:class:`PointingGame`                   share of samples whose peak lies in the mask (>= min)
:class:`SpuriousRegion`                 share of ``|attr|`` inside a region, e.g. a watermark (<= max)
:class:`Completeness`                   integrated gradients' relative completeness error (<= max)
:class:`DeadUnits`                      ``xai/dead_relu/all`` from ``DeadReLUMonitor`` (<= max)
:class:`Drift`                          ``xai/drift/<method>/<metric>/<ref|prev>`` from
                                        ``FeatureDriftMonitor`` (>= min and/or <= max)
:class:`Finite`                         share of non-finite outputs and attributions (== 0)
:class:`Custom`                         your function of the :class:`CheckContext`
======================================  ============================================================

Arguments are validated when a check is built; what depends on the probe or the model (masks,
image inputs, layer names, class count) is validated when the gate is set up, or by :func:`run`.

Probes of several inputs (a tuple or dict of tensors): map comparisons are made input by input and
averaged over the attributed inputs; :class:`Completeness` sums every input; :class:`SpuriousRegion`
takes ``input=``; the mask checks, SSIM and a baseline tensor need one input and say so at setup.
Multi-label probes (``(N, classes)`` multi-hot targets with ``target="true"``): every check explains
the sum of each sample's labelled logits.
A NaN value never passes: the check fails and its reason says the value is NaN.

This module does not import Lightning; :func:`run` evaluates checks without a trainer.

Example:
    >>> import torch
    >>> from lightning_xai import ProbeSet, checks
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> masks = torch.zeros(6, 1, 4, 4); masks[..., 1:3, 1:3] = 1
    >>> probe = ProbeSet(torch.rand(6, 1, 4, 4), torch.arange(6) % 3, masks=masks)
    >>> results = checks.run([checks.RelevanceMass("saliency", min_mass=0.9), checks.Finite()], net, probe)
    >>> [(r.name, r.passed) for r in results]
    [('relevance_mass/saliency', False), ('finite', True)]
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from . import functional as F
from .engine import Chunking, first_output, label_sum, resolve_target
from .functional.methods import MethodCall, MethodLike
from .probe import ProbeSet

__all__ = [
    "CheckResult",
    "CheckContext",
    "CheckSetup",
    "Check",
    "ParameterRandomization",
    "RandomLogit",
    "RelevanceMass",
    "PointingGame",
    "SpuriousRegion",
    "TokenMass",
    "Completeness",
    "DeadUnits",
    "Drift",
    "Finite",
    "Custom",
    "DRIFT_METRICS",
    "json_number",
    "map_entries",
    "select_explained",
    "run",
    "validate",
]

#: Metrics that FeatureDriftMonitor logs under ``xai/drift/<method>/<metric>/{prev,ref}``.
DRIFT_METRICS: Tuple[str, ...] = F.DRIFT_METRICS
_DIVERGENCES = ("js_divergence",)

#: a method as every check takes it: anything :func:`lightning_xai.functional.get_method` accepts, or
#: ``{method: options}``
MethodSpec = Union[MethodLike, Mapping[Any, Mapping[str, Any]]]


# ----------------------------------------------------------------------------------------------
# results and context
# ----------------------------------------------------------------------------------------------
@dataclass
class CheckResult:
    """The outcome of one check on one epoch.

    Attributes:
        name: the check's name (the tag is ``xai/check/<name>``).
        value: the number the check computed (NaN when it could not).
        passed: whether the rule held. A skipped check counts as passed.
        reason: one line saying why.
        skipped: True when the check had nothing to evaluate and was told to skip (``missing="skip"``).
        details: extra numbers (per randomisation step, per sample ...), JSON-friendly.
        bound: the limit the value was held to (``Check._at_most``/``_at_least`` set it), or None for a
            check without one (``Finite``, a boolean ``Custom``); logged as ``xai/check/<name>/bound``.
        direction: ``"max"`` (the value must stay at or below ``bound``), ``"min"`` (at or above), or
            None without a bound.
    """

    name: str
    value: float
    passed: bool
    reason: str
    skipped: bool = False
    details: Dict[str, Any] = field(default_factory=dict)
    bound: Optional[float] = None
    direction: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-friendly dict (NaN and infinities as strings, as JSON has no literal for them)."""
        return {
            "name": self.name,
            "value": json_number(self.value),
            "passed": bool(self.passed),
            "skipped": bool(self.skipped),
            "reason": self.reason,
            "bound": None if self.bound is None else json_number(self.bound),
            "direction": self.direction,
            "details": {k: json_number(v) if isinstance(v, float) else v for k, v in self.details.items()},
        }


def json_number(v: float) -> Union[float, str]:
    """``v`` as JSON can hold it: finite numbers as they are, NaN and infinities as strings.

    Example:
        >>> json_number(0.5), json_number(float("nan"))
        (0.5, 'nan')
    """
    v = float(v)
    return v if math.isfinite(v) else str(v)


@dataclass
class CheckSetup:
    """What a check may validate against before training: the probe, the model, its classes, the callbacks."""

    probe: ProbeSet
    model: nn.Module
    classes: Optional[int] = None
    callbacks: Sequence[Any] = ()
    gate: Any = None


class CheckContext:
    """What a check sees when it is evaluated.

    Attributes:
        model: the model being explained (do not modify it; checks work on copies).
        probe: the :class:`~lightning_xai.ProbeSet`.
        target: ``(N,)`` class indices explained this epoch (None for single-output models), or
            ``(N, classes)`` multi-hot rows for multi-label probes with ``target="true"``: each sample's
            labelled logits are explained together (their sum), as the monitors do.
        metrics: values logged so far (``trainer.callback_metrics`` in a gate, ``{}`` standalone).
        trainer: the Lightning trainer inside a gate, else None.
        epoch: the current epoch inside a gate, else None.
        global_rank: the process rank (0 outside distributed runs).
    """

    def __init__(
        self,
        model: nn.Module,
        probe: ProbeSet,
        *,
        target: Any = "predicted",
        outputs: Optional[Tensor] = None,
        attribute: Optional[Callable[[MethodCall], Tensor]] = None,
        metrics: Optional[Mapping[str, Any]] = None,
        trainer: Any = None,
        chunk_size: Optional[int] = None,
        chunking: Optional[Chunking] = None,
        output: F.OutputSpec = None,
    ) -> None:
        F.check_output_spec(output)
        self.model = model
        #: which of the model's outputs is explained (``None``: the model returns one tensor)
        self.output = output
        self.probe = probe
        self.trainer = trainer
        self.metrics: Mapping[str, Any] = {} if metrics is None else metrics
        self.chunk_size = chunk_size
        #: rows per pass for the checks' own attributions, with out-of-memory halving (the gate's own)
        self.chunking = chunking if chunking is not None else Chunking(chunk_size)
        self._attribute = attribute
        self._outputs = outputs
        self._maps: Dict[Any, Tensor] = {}
        self.target: Optional[Tensor] = _resolve(target, self.outputs, probe.targets)

    @property
    def epoch(self) -> Optional[int]:
        return None if self.trainer is None else int(self.trainer.current_epoch)

    @property
    def global_rank(self) -> int:
        return 0 if self.trainer is None else int(self.trainer.global_rank)

    @property
    def inputs(self) -> Any:
        """The probe's inputs on the model's device and dtype: a tensor, or a tuple or dict of them for a
        probe of several inputs (``model(*inputs)``, ``model(**inputs)``)."""
        return self.probe.inputs_for(self.model)

    @property
    def outputs(self) -> Tensor:
        """The model's outputs on the probe (eval mode, no grad), computed once."""
        if self._outputs is None:
            with F.explaining(self.model), torch.no_grad():
                out = F.call_model(self.model, self.inputs)
            self._outputs = first_output(out, self.output).detach()
        return self._outputs

    def selected_outputs(self, inputs: Any = None) -> Tensor:
        """The explained output per sample for ``inputs`` (default: the probe): the target's logit, or
        the sum of the labelled logits for multi-hot targets."""
        if inputs is None:
            out = self.outputs
        else:
            with F.explaining(self.model), torch.no_grad():
                out = first_output(F.call_model(self.model, inputs), self.output)
        return select_explained(out.detach(), self.target)

    def explainer(self, method: MethodSpec) -> Callable[[nn.Module, Any, Optional[Tensor]], Any]:
        """``fn(model, inputs, target) -> maps`` for a method spec (to explain copies of the model).

        ``target`` holds class indices, or multi-hot rows whose labelled logits are explained together."""
        call = _parse_method(method)
        chunking = self.chunking

        output = self.output

        def explain(model: nn.Module, x: Any, t: Optional[Tensor]) -> Any:
            model = F.with_output(model, output)  # layer names stay the model's own
            strip: Optional[Callable[[Any], Any]] = None
            if t is not None and t.dim() == 2:  # multi-hot: the labels ride along with their rows
                model, x, strip = label_sum(model, x, t)
                t = None
            if not call.method.accepts("chunk_size"):
                maps = call(model, x, t)
            else:
                n = F.input_rows(x)
                maps = chunking.run(lambda c: call(model, x, t, chunk_size=c), chunking.rows([call], n), n)
            return maps if strip is None else strip(maps)

        return explain

    def attributions(self, method: MethodSpec) -> Any:
        """The probe's maps for ``method`` and the epoch's targets (shared with the monitors inside a gate):
        a tensor, or for a probe of several inputs the inputs' structure (``None`` for riding inputs)."""
        call = _parse_method(method)
        key = call.key
        if key not in self._maps:
            if self._attribute is not None:
                maps = self._attribute(call)
            else:
                maps = self.explainer(call)(self.model, self.inputs, self.target)
            rows = {int(t.shape[0]) for t in map_entries(maps).values()}
            if rows != {len(self.probe)}:
                raise ValueError(
                    f"the method {_method_label(method)} returned maps of shape "
                    f"{F.map_tensors(lambda t: tuple(t.shape), maps)} for {len(self.probe)} probe samples; it must "
                    "return one map per sample"
                )
            self._maps[key] = F.map_tensors(lambda t: t.detach(), maps)
        return self._maps[key]

    @property
    def computed_maps(self) -> List[Any]:
        """Every map computed through this context so far (tensors, or structures of them)."""
        return list(self._maps.values())


def map_entries(maps: Any) -> Dict[str, Tensor]:
    """``{input name: maps}`` of the attributed inputs (riding inputs, ``None``, left out); one tensor of
    maps is one entry named ``""``.

    Example:
        >>> import torch
        >>> sorted(map_entries((torch.ones(2, 3), None, torch.ones(2, 1))))
        ['input0', 'input2']
    """
    if not F.is_structured(maps):
        return {"": maps}
    names = dict(zip([k for k, _ in F.input_entries(maps)], F.input_names(maps)))
    return {names[k]: t for k, t in F.input_entries(maps) if t is not None}


def select_explained(out: Tensor, target: Optional[Tensor]) -> Tensor:
    """The explained output per sample: the target's logit, or for ``(N, classes)`` multi-hot targets the
    sum of the labelled logits (what ``target="true"`` explains on a multi-label probe).

    Example:
        >>> import torch
        >>> out = torch.tensor([[1., 2., 4.], [8., 16., 32.]])
        >>> select_explained(out, torch.tensor([2, 0])), select_explained(out, torch.tensor([[1, 0, 1], [0, 1, 1]]))
        (tensor([4., 8.]), tensor([ 5., 48.]))
    """
    if target is not None and target.dim() == 2:
        return (out * target.to(out.dtype)).sum(1)
    return F.select_output(out, target)


def _resolve(target: Any, outputs: Tensor, targets: Optional[Tensor]) -> Optional[Tensor]:
    """:func:`~lightning_xai.engine.resolve_target`, and multi-hot rows (a gate's resolved ``"true"``) as they are."""
    if isinstance(target, Tensor) and target.dim() == 2 and outputs.dim() == 2 and outputs.shape[1] > 1:
        if tuple(target.shape) != tuple(outputs.shape):
            raise ValueError(
                f"multi-hot targets of shape {tuple(target.shape)} do not fit outputs of shape {tuple(outputs.shape)}"
            )
        return target.to(outputs.device).long()
    return resolve_target(target, outputs, targets)


# ----------------------------------------------------------------------------------------------
# argument helpers
# ----------------------------------------------------------------------------------------------
def _parse_method(method: Any) -> MethodCall:
    """One method (with its options, checked) as a :class:`~lightning_xai.functional.MethodCall`."""
    if isinstance(method, MethodCall):
        return method
    if isinstance(method, Mapping) and len(method) != 1:
        raise ValueError(f"give one method per check, e.g. {{'integrated_gradients': {{'n_steps': 64}}}}; got {list(method)}")
    if isinstance(method, (list, tuple)):
        raise TypeError(f"give one method per check, not a list: {method!r}")
    return next(iter(F.resolve_methods(method).values()))


def _method_label(method: Any) -> str:
    return _parse_method(method).name


def _number(value: Any, what: str, low: Optional[float] = None, high: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    v = float(value)
    if (low is not None and v < low) or (high is not None and v > high):
        rng = f"between {low} and {high}" if low is not None and high is not None else (f">= {low}" if low is not None else f"<= {high}")
        raise ValueError(f"{what} must be {rng}, got {value!r}")
    return v


def _fmt(v: float) -> str:
    return f"{v:.4g}"


# ----------------------------------------------------------------------------------------------
# base
# ----------------------------------------------------------------------------------------------
class Check:
    """Base of the checks: a name, a ``setup`` that validates, an ``evaluate`` that returns a result.

    Subclasses implement :meth:`evaluate`; calling the check runs it and applies the NaN rule.
    """

    default_name = "check"

    def __init__(self, name: Optional[str] = None) -> None:
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ValueError(f"a check's name must be a non-empty string, got {name!r}")
        self.name = name if name is not None else self.default_name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def setup(self, setup: CheckSetup) -> None:
        """Validate against the probe and model; raise a ``ValueError`` naming the fix."""

    def evaluate(self, ctx: CheckContext) -> CheckResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, ctx: CheckContext) -> CheckResult:
        result = self.evaluate(ctx)
        if not result.skipped and math.isnan(result.value):
            result.passed = False
            if "NaN" not in result.reason:
                result.reason = f"{self.name} is NaN ({result.reason})"
        return result

    # threshold helpers --------------------------------------------------------------------------
    def _at_most(self, value: float, limit: float, what: str, **details: Any) -> CheckResult:
        return self._bounded(value, limit, "max", what, details)

    def _at_least(self, value: float, limit: float, what: str, **details: Any) -> CheckResult:
        return self._bounded(value, limit, "min", what, details)

    def _bounded(self, value: float, limit: float, direction: str, what: str, details: Dict[str, Any]) -> CheckResult:
        limit = float(limit)
        if math.isnan(value):
            reason = f"{self.name} is NaN: {what} could not be computed"
            return CheckResult(self.name, value, False, reason, details=details, bound=limit, direction=direction)
        ok = value <= limit if direction == "max" else value >= limit
        op = ("<=" if ok else ">") if direction == "max" else (">=" if ok else "<")
        reason = f"{self.name} = {_fmt(value)} {op} {direction} {_fmt(limit)} ({what})"
        return CheckResult(self.name, value, ok, reason, details=details, bound=limit, direction=direction)


def _mean(t: Tensor) -> float:
    """Mean over the probe; NaN if any sample is NaN (never silently dropped)."""
    return float(t.double().mean())


class _MethodCheck(Check):
    def __init__(self, method: MethodSpec, name: Optional[str]) -> None:
        _parse_method(method)
        self.method = method
        super().__init__(name if name is not None else f"{self.default_name}/{_method_label(method)}")

    def _need_input_resolution(self, what: str) -> None:
        """Refuse (at construction) a method whose maps have a layer's resolution: ``what`` is laid over
        the inputs, so the maps must have the inputs' shape."""
        call = _parse_method(self.method)
        if call.method.is_layer_resolution(call.options):
            fix = (
                "drop upsample=False" if "upsample" in call.options
                else "use a method whose maps have the inputs' shape (grad_cam upsamples its map to the inputs)"
            )
            raise ValueError(
                f"{self.name} lays {what} over each map, so it needs maps shaped like the inputs, but "
                f"{call.name} with these options gives maps at a layer's resolution: {fix}"
            )


# ----------------------------------------------------------------------------------------------
# randomisation
# ----------------------------------------------------------------------------------------------
class ParameterRandomization(_MethodCheck):
    """Model-parameter randomisation test (Adebayo et al. 2018): maps must change when the model does.

    Each step explains a deep copy of the model whose top layers are re-initialised (with their
    default initialisers, drawn from a private generator seeded by ``seed``; the model and the global
    RNG are untouched) and compares its ``|maps|`` with the model's (:func:`~lightning_xai.functional.map_similarity`).
    The value is the largest mean similarity over the steps: every step must change the explanation.

    Args:
        method: a method name, ``{name: options}``, or a callable ``fn(model, inputs, target) -> maps``.
        max_similarity: the largest mean similarity that passes.
        layers: ``None`` (every layer with parameters, from the output back), an int ``k`` (the top
            ``k``), or dotted layer names, top first.
        mode: ``"cascading"`` (randomise the top layer, then the top two, ...) or ``"independent"``
            (each layer alone).
        similarity: ``"spearman"`` (rank correlation) or ``"ssim"`` (image maps only).
        seed: seed of the private generator of the re-initialisation.

    On a probe of several inputs the maps are compared input by input and averaged over the attributed
    inputs (:func:`~lightning_xai.functional.map_similarity`); with multi-hot targets
    (``target="true"`` on a multi-label probe) every copy explains the sum of the labelled logits.

    Cost: one deep copy of the model (one per layer in ``"independent"`` mode) and one attribution
    pass per step, on every rank. Note that methods which multiply by the input
    (``input_x_gradient``, ``integrated_gradients``) keep its zero pixels at zero in every copy, so
    on sparse inputs their Spearman similarity stays high whatever the weights (about 0.9 measured on
    digits with a trained small CNN, against 0.16 for saliency); use ``similarity="ssim"`` (0.55
    there) or a gradient-only method for them.

    Example:
        >>> ParameterRandomization("saliency", max_similarity=0.5, layers=2).name
        'parameter_randomization/saliency'
    """

    default_name = "parameter_randomization"

    def __init__(
        self,
        method: MethodSpec = "saliency",
        max_similarity: float = 0.5,
        layers: Union[None, int, Sequence[str]] = None,
        mode: str = "cascading",
        similarity: str = "spearman",
        seed: int = 0,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(method, name)
        self.max_similarity = _number(max_similarity, "max_similarity", -1.0, 1.0)
        if mode not in ("cascading", "independent"):
            raise ValueError(f"mode must be 'cascading' or 'independent', got {mode!r}")
        if similarity not in F.SIMILARITIES:
            raise ValueError(f"similarity must be one of {', '.join(F.SIMILARITIES)}, got {similarity!r}")
        if layers is not None and not (
            (isinstance(layers, int) and not isinstance(layers, bool) and layers >= 1)
            or (isinstance(layers, (list, tuple)) and layers and all(isinstance(n, str) for n in layers))
        ):
            raise ValueError(f"layers must be None, an int >= 1 or a non-empty list of layer names, got {layers!r}")
        self.layers = layers
        self.mode = mode
        self.similarity = similarity
        self.seed = int(seed)

    def _layer_names(self, model: nn.Module) -> List[str]:
        if self.layers is None or isinstance(self.layers, int):
            return F.top_layers(model, self.layers)
        return list(self.layers)

    def setup(self, setup: CheckSetup) -> None:
        names = self._layer_names(setup.model)
        if not names:
            raise ValueError(f"{self.name}: {type(setup.model).__name__} has no layers with parameters to randomise")
        modules = F.named_modules(setup.model)
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise ValueError(
                f"{self.name}: layer(s) {', '.join(map(repr, unknown))} not found in {type(setup.model).__name__}; "
                f"layers with parameters, from the top: {', '.join(F.top_layers(setup.model))}"
            )
        _check_ssim(self, setup.probe)

    def evaluate(self, ctx: CheckContext) -> CheckResult:
        steps = F.parameter_randomization(
            ctx.model, ctx.inputs, ctx.target, ctx.explainer(self.method),
            layers=self._layer_names(ctx.model), mode=self.mode, similarity=self.similarity,
            seed=self.seed, original=ctx.attributions(self.method),
        )
        means = {k: _mean(v) for k, v in steps.items()}
        values = list(means.values())
        value = float("nan") if any(math.isnan(v) for v in values) else max(values)
        worst = max(means, key=lambda k: -math.inf if math.isnan(means[k]) else means[k])
        what = (
            f"{self.similarity} of |{_method_label(self.method)}| with layer {worst!r} randomised"
            f"{' (cascading)' if self.mode == 'cascading' else ''}"
        )
        return self._at_most(value, self.max_similarity, what, **{f"step/{k}": v for k, v in means.items()})


class RandomLogit(_MethodCheck):
    """Random-logit test (Sixt et al. 2020): the map for another class must differ from the target's.

    For each probe sample a different class is drawn (private generator seeded by ``seed``, so the
    same classes every epoch); the value is the mean similarity of the two ``|maps|``. With multi-hot
    targets (a multi-label probe, ``target="true"``) the map of the sample's labels together is compared
    with the map of one class drawn among those it does not carry; samples that carry every class are
    left out. Maps of several inputs are compared as :class:`ParameterRandomization` compares them.

    Example:
        >>> RandomLogit("saliency", max_similarity=0.6).name
        'random_logit/saliency'
    """

    default_name = "random_logit"

    def __init__(
        self,
        method: MethodSpec = "saliency",
        max_similarity: float = 0.5,
        similarity: str = "spearman",
        seed: int = 0,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(method, name)
        self.max_similarity = _number(max_similarity, "max_similarity", -1.0, 1.0)
        if similarity not in F.SIMILARITIES:
            raise ValueError(f"similarity must be one of {', '.join(F.SIMILARITIES)}, got {similarity!r}")
        self.similarity = similarity
        self.seed = int(seed)

    def setup(self, setup: CheckSetup) -> None:
        if setup.classes is None or setup.classes < 2:
            raise ValueError(
                f"{self.name}: the random-logit test needs a model with several class outputs (N, C), C >= 2; "
                "this model returns one output per sample. Drop the check for this model."
            )
        _check_ssim(self, setup.probe)

    def evaluate(self, ctx: CheckContext) -> CheckResult:
        if ctx.target is None:
            return CheckResult(self.name, float("nan"), False, f"{self.name} is NaN: the model has a single output")
        classes = ctx.outputs.shape[1]
        g = torch.Generator().manual_seed(self.seed)
        what = f"{self.similarity} of |{_method_label(self.method)}| for the target vs a random other class"
        if ctx.target.dim() == 2:  # multi-hot: another class is one the sample does not carry
            draw = torch.rand(len(ctx.probe), classes, generator=g).to(ctx.target.device)
            draw = draw.masked_fill(ctx.target > 0, -1.0)
            other, rows = draw.argmax(1), (ctx.target <= 0).any(1)
            if not bool(rows.any()):
                return CheckResult(
                    self.name, float("nan"), True, "skipped: every probe sample carries every class, so no other "
                    "class is left to compare with", skipped=True,
                )
            what = f"{self.similarity} of |{_method_label(self.method)}| for the labels vs a random class not among them"
        else:
            shift = torch.randint(1, classes, (len(ctx.probe),), generator=g).to(ctx.target.device)
            other, rows = (ctx.target + shift) % classes, torch.ones(len(ctx.probe), dtype=torch.bool, device=ctx.target.device)
        maps = ctx.explainer(self.method)(ctx.model, ctx.inputs, other)
        sim = F.map_similarity(ctx.attributions(self.method), maps, self.similarity)
        return self._at_most(_mean(sim[rows.to(sim.device)]), self.max_similarity, what)


# ----------------------------------------------------------------------------------------------
# localisation
# ----------------------------------------------------------------------------------------------
def _check_ssim(check: Any, probe: ProbeSet) -> None:
    if check.similarity != "ssim" or probe.kind == "image":
        return
    if probe.structured:
        raise ValueError(
            f"{check.name}: similarity='ssim' compares one 2-D map per sample, but the probe has several inputs "
            f"({', '.join(F.input_names(probe.inputs))}), compared input by input; use similarity='spearman'"
        )
    raise ValueError(
        f"{check.name}: similarity='ssim' compares 2-D maps but the probe's inputs have shape "
        f"{tuple(probe.inputs.shape)}; use similarity='spearman'"
    )


def _need_masks(check: Check, probe: ProbeSet) -> None:
    if probe.structured:
        raise ValueError(
            f"{check.name} compares each map with the probe's ground-truth mask of one input tensor, and a probe of "
            f"several inputs ({', '.join(F.input_names(probe.inputs))}) holds no masks. Use "
            f"SpuriousRegion(region, input=<name>, max_mass=...) for a region of one input, or checks.Custom reading "
            "ctx.attributions(method)[<input>]"
        )
    if probe.masks is None:
        raise ValueError(
            f"{check.name} needs ground-truth masks in the probe, but it has none: build it with "
            "ProbeSet(inputs, targets, masks=...) (a mask per sample, (N, H, W) or the inputs' shape) "
            "or from a dataset whose items carry a 'mask'"
        )


class RelevanceMass(_MethodCheck):
    """Relevance mass accuracy (Arras et al. 2022): share of ``|attr|`` inside the probe's masks.

    The value is the mean over the probe of :func:`~lightning_xai.functional.relevance_mass`.
    Needs a probe with masks (checked at setup).

    Example:
        >>> RelevanceMass("saliency", min_mass=0.6).name
        'relevance_mass/saliency'
    """

    default_name = "relevance_mass"

    def __init__(self, method: MethodSpec = "saliency", min_mass: float = 0.5, name: Optional[str] = None) -> None:
        super().__init__(method, name)
        self._need_input_resolution("the probe's masks")
        self.min_mass = _number(min_mass, "min_mass", 0.0, 1.0)

    def setup(self, setup: CheckSetup) -> None:
        _need_masks(self, setup.probe)

    def evaluate(self, ctx: CheckContext) -> CheckResult:
        assert ctx.probe.masks is not None
        attr = ctx.attributions(self.method)
        mass = F.relevance_mass(attr, ctx.probe.masks.to(attr.device))
        return self._at_least(_mean(mass), self.min_mass, f"share of |{_method_label(self.method)}| inside the probe masks")


class PointingGame(_MethodCheck):
    """Pointing game (Zhang et al. 2016): share of probe samples whose peak ``|attr|`` lies in the mask.

    Example:
        >>> PointingGame("grad_cam", min_hit_rate=0.8).name
        'pointing_game/grad_cam'
    """

    default_name = "pointing_game"

    def __init__(self, method: MethodSpec = "saliency", min_hit_rate: float = 0.5, name: Optional[str] = None) -> None:
        super().__init__(method, name)
        self._need_input_resolution("the probe's masks")
        self.min_hit_rate = _number(min_hit_rate, "min_hit_rate", 0.0, 1.0)

    def setup(self, setup: CheckSetup) -> None:
        _need_masks(self, setup.probe)

    def evaluate(self, ctx: CheckContext) -> CheckResult:
        assert ctx.probe.masks is not None
        attr = ctx.attributions(self.method)
        hits = F.pointing_game(attr, ctx.probe.masks.to(attr.device))
        return self._at_least(_mean(hits), self.min_hit_rate, f"share of samples whose peak |{_method_label(self.method)}| is inside the mask")


class SpuriousRegion(_MethodCheck):
    """At most ``max_mass`` of ``|attr|`` may lie inside ``region`` (a watermark, a border, a tag ...).

    Args:
        region: a 0/1 (or weight) mask broadcastable to one probe sample: ``(H, W)``, ``(1, H, W)``,
            the sample's shape, or ``(F,)`` for tabular inputs.
        input: for a probe of several inputs, the input the region lies in: its key (a dict probe) or
            position (a tuple probe). The share is of that input's ``|attr|`` (inputs have their own
            units, so one input's map is not a share of another's).

    Example:
        >>> import torch
        >>> corner = torch.zeros(8, 8); corner[:2, :2] = 1
        >>> SpuriousRegion(corner, "saliency", max_mass=0.2).name
        'spurious_region/saliency'
        >>> SpuriousRegion(corner, "saliency", input="image").input
        'image'
    """

    default_name = "spurious_region"

    def __init__(
        self, region: Tensor, method: MethodSpec = "saliency", max_mass: float = 0.1, name: Optional[str] = None,
        input: Union[None, int, str] = None,
    ) -> None:
        if input is not None and (isinstance(input, bool) or not isinstance(input, (int, str))):
            raise TypeError(f"input must be the key (dict probes) or position (tuple probes) of one input, got {input!r}")
        self.input = input
        r = region if isinstance(region, Tensor) else None
        if r is None:
            try:
                r = torch.as_tensor(region)
            except Exception:  # noqa: BLE001
                raise TypeError(f"region must be a mask tensor broadcastable to one sample, got {type(region).__name__}") from None
        if r.numel() == 0 or r.dim() == 0:
            raise ValueError(f"region must be a non-empty mask broadcastable to one sample, got shape {tuple(r.shape)}")
        if not bool(((r >= 0) & (r <= 1)).all()) or not bool((r > 0).any()):
            raise ValueError("region must hold 0/1 (or weights in [0, 1]) with at least one non-zero entry")
        super().__init__(method, name)
        self._need_input_resolution("the region")
        self.region = r.detach().clone()
        self.max_mass = _number(max_mass, "max_mass", 0.0, 1.0)

    def setup(self, setup: CheckSetup) -> None:
        shape = tuple(_one_input(self, setup.probe, self.input).shape[1:])
        try:
            torch.broadcast_to(self.region, shape)
        except RuntimeError:
            raise ValueError(
                f"{self.name}: region of shape {tuple(self.region.shape)} does not broadcast to one probe sample "
                f"of shape {shape}; give (H, W), (1, H, W) or {shape}"
            ) from None

    def evaluate(self, ctx: CheckContext) -> CheckResult:
        attr = _entry(ctx.attributions(self.method), self.input)
        mass = F.region_mass(attr, self.region.to(attr.device))
        return self._at_most(_mean(mass), self.max_mass, f"share of |{_method_label(self.method)}| inside the region")


def _one_input(check: Check, probe: ProbeSet, key: Union[None, int, str]) -> Tensor:
    """The probe's input that ``key`` names (a probe of several inputs needs one), validated at setup."""
    if not probe.structured:
        if key is not None:
            raise ValueError(f"{check.name}: input={key!r} names one of several inputs, but the probe has one; drop input=")
        return probe.inputs
    entries = dict(F.input_entries(probe.inputs))
    attributed = [k for k, t in entries.items() if t.is_floating_point()]
    if key is None or key not in entries or key not in attributed:
        why = (
            "a probe of several inputs needs input= to say which one the region lies in" if key is None
            else f"input={key!r} is not one of its inputs" if key not in entries
            else f"input {key!r} holds integers, which ride along unattributed"
        )
        raise ValueError(f"{check.name}: {why}; pass input= one of the attributed inputs: {attributed}")
    return entries[key]


def _entry(maps: Any, key: Union[None, int, str]) -> Tensor:
    """The maps of input ``key`` (the maps themselves for a probe of one input)."""
    if key is None or not F.is_structured(maps):
        return maps
    return maps[key]


class TokenMass(_MethodCheck):
    """At most ``max_mass`` of a sequence's ``|attr|`` may lie on ``tokens`` (a planted shortcut token, a
    name, a source tag ...), for probes of token ids.

    The value is the mean, over the probe samples that hold one of the tokens, of the share of the
    sample's ``|attr|`` on those tokens; padding (``pad_id``) is left out. Maps of token ids have one
    value per token (see :mod:`lightning_xai.functional.tokens`).

    Example:
        >>> TokenMass(tokens=[7], method="integrated_gradients", max_mass=0.3).name
        'token_mass/integrated_gradients'
    """

    default_name = "token_mass"

    def __init__(
        self, tokens: Union[int, Sequence[int]], method: MethodSpec = "integrated_gradients", max_mass: float = 0.3,
        pad_id: int = 0, name: Optional[str] = None,
    ) -> None:
        ids = [tokens] if isinstance(tokens, int) else list(tokens)
        if not ids or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise TypeError(f"tokens must be a token id or a list of them, got {tokens!r}")
        super().__init__(method, name)
        self._need_input_resolution("the positions of the tokens")
        self.tokens = ids
        self.max_mass = _number(max_mass, "max_mass", 0.0, 1.0)
        self.pad_id = int(pad_id)

    def setup(self, setup: CheckSetup) -> None:
        if setup.probe.token_ids() is None:
            raise ValueError(f"{self.name} needs a probe of token ids ((N, T) integers), got {setup.probe!r}")

    def evaluate(self, ctx: CheckContext) -> CheckResult:
        ids = ctx.probe.token_ids()
        assert ids is not None
        attr = ctx.attributions(self.method)
        if F.is_structured(attr):  # several inputs: the ids' entry
            attr = next((attr[k] for k, t in F.input_entries(ctx.probe.inputs) if t is ids), None)
        if isinstance(attr, Tensor) and tuple(attr.shape) == tuple(ids.shape):
            a = attr.detach().double().abs()
        else:
            raise ValueError(f"{self.name}: maps of shape {tuple(getattr(attr, 'shape', ()))} are not one value per token")
        ids = ids.to(a.device)
        a = a.masked_fill(ids == self.pad_id, 0.0)
        hit = torch.isin(ids, torch.tensor(self.tokens, device=ids.device))
        rows = hit.any(1)
        if not bool(rows.any()):
            return CheckResult(self.name, 0.0, True, f"{self.name}: no probe sample holds tokens {self.tokens}")
        share = (a * hit).sum(1) / a.sum(1).clamp_min(1e-12)
        return self._at_most(_mean(share[rows]), self.max_mass, f"share of |{_method_label(self.method)}| on tokens {self.tokens}")


# ----------------------------------------------------------------------------------------------
# completeness
# ----------------------------------------------------------------------------------------------
class Completeness(Check):
    """Integrated gradients must add up: relative error ``|sum(attr) - (f(x) - f(b))| / |f(x) - f(b)|``.

    Summed over the probe before dividing (:func:`~lightning_xai.functional.completeness_error`).
    The attributions come from the shared cache (an ``AttributionMonitor`` computing the same
    integrated gradients shares them); ``f(x)`` and ``f(baseline)`` cost two forward passes.

    On a probe of several inputs the attributions of every attributed input are summed, and
    ``f(baseline)`` is the model on each floating input at ``baseline`` with the riding inputs as they
    are (the path integrated gradients take); the baseline is then a number (or None: zeros). With
    multi-hot targets (a multi-label probe, ``target="true"``) ``f`` is the sum of the labelled logits.

    Args:
        max_error: the largest relative error that passes.
        n_steps, baseline, rule: integrated gradients' options (``rule`` is its ``method``).

    Example:
        >>> Completeness(max_error=0.05, n_steps=64).name
        'completeness'
    """

    default_name = "completeness"

    def __init__(
        self,
        max_error: float = 0.05,
        n_steps: int = 32,
        baseline: Union[None, float, Tensor] = None,
        rule: str = "gausslegendre",
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name)
        self.max_error = _number(max_error, "max_error", 0.0)
        F.ig_rule(rule, n_steps)  # validates both
        self.n_steps = n_steps
        self.baseline = baseline
        self.rule = rule

    def _options(self) -> Dict[str, Any]:
        opts: Dict[str, Any] = {"n_steps": self.n_steps}
        if self.baseline is not None:
            opts["baseline"] = self.baseline
        if self.rule != "gausslegendre":  # the default rule is left out, so the key equals a monitor's
            opts["method"] = self.rule
        return opts

    def setup(self, setup: CheckSetup) -> None:
        probe = setup.probe
        if not probe.structured:
            return
        if isinstance(self.baseline, Tensor):
            raise ValueError(
                f"{self.name}: a baseline tensor has one input's shape, but the probe has several inputs "
                f"({', '.join(F.input_names(probe.inputs))}); give a number (every floating input at that value) or None"
            )
        if F.has_token_inputs(setup.model, probe.inputs):
            raise ValueError(
                f"{self.name}: on a probe of several inputs holding token ids, integrated gradients start from the "
                "padding embedding, a baseline this check cannot feed the model as inputs; check completeness on "
                "the floating inputs' model, or drop the check"
            )

    def evaluate(self, ctx: CheckContext) -> CheckResult:
        attr = ctx.attributions({"integrated_gradients": self._options()})
        x = ctx.inputs
        if F.is_structured(x):  # the floating inputs at the baseline, the riding ones as they are
            base = F.map_tensors(lambda t: F.baseline_like(self.baseline, t) if t.is_floating_point() else t, x)
        else:
            base = F.baseline_like(self.baseline, x)
        flat = torch.cat([t.reshape(t.shape[0], -1) for t in map_entries(attr).values()], dim=1)
        err = float(F.completeness_error(flat, ctx.selected_outputs(), ctx.selected_outputs(base)))
        return self._at_most(err, self.max_error, f"relative completeness error of integrated gradients, {self.n_steps} steps")


# ----------------------------------------------------------------------------------------------
# values from the monitors
# ----------------------------------------------------------------------------------------------
def declares(callback: Any, key: str) -> bool:
    """Whether ``callback`` declares that it logs ``key`` (its ``declared_metrics()``: tag patterns,
    regular expressions matched whole)."""
    declared = getattr(callback, "declared_metrics", None)
    if not callable(declared):
        return False
    return any(re.fullmatch(pattern, key) for pattern in declared())


class _MetricCheck(Check):
    #: the monitor that logs the value, named in messages when none is attached
    monitor = ""

    def __init__(self, key: str, missing: str, name: Optional[str]) -> None:
        if missing not in ("fail", "skip"):
            raise ValueError(f"missing must be 'fail' or 'skip', got {missing!r}")
        super().__init__(name)
        self.key = key
        self.missing = missing
        self._last_seen: Any = None
        #: the callbacks that declare ``key`` (found at setup)
        self._providers: List[Any] = []

    def setup(self, setup: CheckSetup) -> None:
        callbacks = list(setup.callbacks)
        self._providers = [cb for cb in callbacks if declares(cb, self.key)]
        if setup.gate is None or setup.gate not in callbacks:
            return
        pos = callbacks.index(setup.gate)
        later = [cb for cb in callbacks[pos + 1:] if declares(cb, self.key)]
        if later:
            who = type(later[0]).__name__
            raise ValueError(
                f"{self.name} reads {self.key!r}, which {who} logs, but {who} comes after "
                f"SanityGate in the callbacks and runs after it: put {who} before SanityGate in "
                "Trainer(callbacks=[...])"
            )
        if not any(declares(cb, self.key) for cb in callbacks[:pos]):
            warnings.warn(
                f"{self.name} reads {self.key!r} from trainer.callback_metrics but no {self.monitor} comes before "
                f"SanityGate in the callbacks; add one before the gate (else the check "
                f"{'fails' if self.missing == 'fail' else 'is skipped'} while the value is missing)",
                stacklevel=2,
            )

    def _not_yet(self) -> Optional[str]:
        """Why the value cannot exist yet (a provider's ``metric_status(key)``), or None."""
        for cb in self._providers:
            status = getattr(cb, "metric_status", None)
            why = status(self.key) if callable(status) else None
            if why:
                return why
        return None

    def _read(self, ctx: CheckContext) -> Tuple[Optional[float], str]:
        """The value, or None and why it is missing."""
        v = ctx.metrics.get(self.key)
        if v is None:
            return None, (
                f"{self.key!r} is not in trainer.callback_metrics: add {self.monitor} before SanityGate in the "
                "callbacks, with the same every_n_epochs"
            )
        if ctx.trainer is not None:
            # a monitor writes a new tensor each time it runs: the very same object means that it did
            # not run this epoch and the value is left over from an earlier one
            stale = v is self._last_seen
            self._last_seen = v
            if stale:
                return None, (
                    f"{self.key!r} was not updated this epoch (the value in trainer.callback_metrics is left over "
                    f"from an earlier one): run {self.monitor} at the same every_n_epochs as SanityGate"
                )
        return (float(v.detach().float().mean()) if isinstance(v, Tensor) else float(v)), ""

    def _missing(self, reason: str) -> CheckResult:
        why = self._not_yet()
        if why:  # e.g. a drift against the previous epoch at the first epoch: no failure, and said so
            return CheckResult(
                self.name, float("nan"), True, f"not yet applicable: {why}", skipped=True,
                details={"not_applicable": True},
            )
        if self.missing == "skip":
            return CheckResult(self.name, float("nan"), True, f"skipped: {reason}", skipped=True)
        return CheckResult(self.name, float("nan"), False, f"{self.name} is NaN: {reason}")


class DeadUnits(_MetricCheck):
    """At most ``max_fraction`` of ReLU units dead, read from ``xai/dead_relu/all`` (``DeadReLUMonitor``).

    Put ``DeadReLUMonitor`` before ``SanityGate`` in the callbacks (checked at setup: after it is an
    error, absent a warning). When the value is missing at an epoch, or was not updated since the
    gate last read it (the monitor did not run this epoch), the check fails (``missing="fail"``,
    default: value NaN, the reason says why) or is skipped, its reason saying why (``missing="skip"``).

    Example:
        >>> DeadUnits(max_fraction=0.5).key
        'xai/dead_relu/all'
    """

    default_name = "dead_units"
    monitor = "DeadReLUMonitor"

    def __init__(self, max_fraction: float = 0.5, missing: str = "fail", name: Optional[str] = None) -> None:
        super().__init__("xai/dead_relu/all", missing, name)
        self.max_fraction = _number(max_fraction, "max_fraction", 0.0, 1.0)

    def evaluate(self, ctx: CheckContext) -> CheckResult:
        v, why = self._read(ctx)
        if v is None:
            return self._missing(why)
        return self._at_most(v, self.max_fraction, "fraction of dead ReLU units, all layers")


class Drift(_MetricCheck):
    """A drift value of ``FeatureDriftMonitor`` must stay within bounds.

    Reads ``xai/drift/<method>/<metric>/<against>``. Similarities (``spearman``, ``kendall``,
    ``topk_overlap``, ``ndcg``, ``map_spearman``, ``map_ssim``) take ``min_value``; the divergence
    ``js_divergence`` takes ``max_value``. Missing values as :class:`DeadUnits`.

    Args:
        metric: one of :data:`DRIFT_METRICS`.
        min_value, max_value: bounds (at least one).
        method: the attribution method the monitor tracks.
        against: ``"ref"`` (the reference epoch) or ``"prev"`` (the previous epoch).

    Example:
        >>> Drift("spearman", min_value=0.5, against="prev").key
        'xai/drift/saliency/spearman/prev'
    """

    default_name = "drift"
    monitor = "FeatureDriftMonitor"

    def __init__(
        self,
        metric: str,
        min_value: Optional[float] = None,
        *,
        max_value: Optional[float] = None,
        method: MethodLike = "saliency",
        against: str = "ref",
        missing: str = "fail",
        name: Optional[str] = None,
    ) -> None:
        if metric not in DRIFT_METRICS:
            raise ValueError(f"unknown drift metric {metric!r}; FeatureDriftMonitor logs {', '.join(DRIFT_METRICS)}")
        if against not in ("ref", "prev"):
            raise ValueError(f"against must be 'ref' or 'prev', got {against!r}")
        method = F.check_method(method)
        if min_value is None and max_value is None:
            raise ValueError(f"Drift({metric!r}) needs a bound: min_value=... (similarities) or max_value=... (divergences)")
        if metric in _DIVERGENCES and min_value is not None:
            raise ValueError(f"{metric} is a divergence (0 = no drift, larger = more drift): bound it with max_value=..., not min_value")
        self.min_value = None if min_value is None else _number(min_value, "min_value")
        self.max_value = None if max_value is None else _number(max_value, "max_value")
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ValueError(f"min_value {min_value} is larger than max_value {max_value}")
        super().__init__(f"xai/drift/{method}/{metric}/{against}", missing, name or f"drift/{method}/{metric}/{against}")
        self.metric, self.method, self.against = metric, method, against

    def evaluate(self, ctx: CheckContext) -> CheckResult:
        v, why = self._read(ctx)
        if v is None:
            return self._missing(why)
        what = f"{self.metric} of {self.method} vs the {'reference' if self.against == 'ref' else 'previous'} epoch"
        if self.min_value is not None:
            low = self._at_least(v, self.min_value, what)
            if not low.passed or self.max_value is None:
                return low
        assert self.max_value is not None
        return self._at_most(v, self.max_value, what)


# ----------------------------------------------------------------------------------------------
# finiteness and the user's own
# ----------------------------------------------------------------------------------------------
class Finite(Check):
    """Outputs and attributions must be finite: the value is the share of non-finite numbers (passes at 0).

    Checks the model's outputs on the probe, the maps of ``methods``, and every map the checks before
    it computed this epoch.

    Example:
        >>> Finite().name
        'finite'
    """

    default_name = "finite"

    def __init__(self, methods: Union[str, Sequence[MethodSpec]] = ("saliency",), name: Optional[str] = None) -> None:
        super().__init__(name)
        ms = [methods] if isinstance(methods, (str, Mapping)) or callable(methods) else list(methods)
        for m in ms:
            _parse_method(m)
        self.methods = ms

    def evaluate(self, ctx: CheckContext) -> CheckResult:
        maps = [ctx.attributions(m) for m in self.methods]
        maps += [m for m in ctx.computed_maps if all(m is not u for u in maps)]
        tensors = [ctx.outputs] + [t for m in maps for t in map_entries(m).values()]
        bad = sum(int((~torch.isfinite(t)).sum()) for t in tensors)
        total = sum(t.numel() for t in tensors)
        value = bad / max(total, 1)
        ok = bad == 0
        reason = (
            f"{self.name}: outputs and {len(maps)} attribution map(s) are finite"
            if ok else f"{self.name} = {_fmt(value)}: {bad} of {total} outputs/attribution values are NaN or infinite"
        )
        return CheckResult(self.name, value, ok, reason)


class Custom(Check):
    """Your own rule: ``fn(ctx) -> value`` judged by ``min_value``/``max_value``, or ``fn(ctx) -> bool``.

    ``fn`` receives the :class:`CheckContext` (model, probe, targets, ``attributions(method)``,
    ``metrics``, ``trainer``, ``epoch``, ``global_rank``) and returns a number (with at least one
    bound given), a bool (pass/fail; the value is 1/0), or a :class:`CheckResult`. Under DDP, a
    module-level function (not a lambda) keeps it picklable for ``ddp_spawn``.

    Example:
        >>> import torch
        >>> from lightning_xai import ProbeSet, checks
        >>> net = torch.nn.Linear(3, 2)
        >>> probe = ProbeSet(torch.randn(4, 3))
        >>> check = checks.Custom(lambda ctx: ctx.attributions("saliency").max(), "peak", max_value=1e6)
        >>> checks.run([check], net, probe)[0].passed
        True
    """

    def __init__(
        self,
        fn: Callable[[CheckContext], Any],
        name: str,
        *,
        min_value: Optional[float] = None,
        max_value: Optional[float] = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"Custom needs a callable fn(ctx) -> number | bool | CheckResult, got {type(fn).__name__}")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Custom needs a name (the tag is xai/check/<name>), got {name!r}")
        super().__init__(name)
        self.fn = fn
        self.min_value = None if min_value is None else _number(min_value, "min_value")
        self.max_value = None if max_value is None else _number(max_value, "max_value")

    def evaluate(self, ctx: CheckContext) -> CheckResult:
        out = self.fn(ctx)
        if isinstance(out, CheckResult):
            out.name = self.name
            return out
        if isinstance(out, bool) or (isinstance(out, Tensor) and out.dtype == torch.bool):
            ok = bool(out)
            return CheckResult(self.name, 1.0 if ok else 0.0, ok, f"{self.name} {'passed' if ok else 'failed'}")
        try:
            value = float(out)
        except (TypeError, ValueError):
            raise TypeError(f"Custom check {self.name!r}: fn returned {type(out).__name__}; return a number, a bool or a CheckResult") from None
        if self.min_value is None and self.max_value is None:
            raise TypeError(
                f"Custom check {self.name!r}: fn returned the number {value}, but no min_value/max_value says "
                "what passes; give one, or return a bool"
            )
        if self.min_value is not None:
            low = self._at_least(value, self.min_value, "custom")
            if not low.passed or self.max_value is None:
                return low
        assert self.max_value is not None
        return self._at_most(value, self.max_value, "custom")


# ----------------------------------------------------------------------------------------------
# standalone evaluation
# ----------------------------------------------------------------------------------------------
def validate(checks: Sequence[Check]) -> List[Check]:
    """Checks as a list; a ``TypeError``/``ValueError`` for non-checks and duplicate names."""
    if isinstance(checks, Check):
        checks = [checks]
    out = list(checks)
    if not out:
        raise ValueError("no checks given: pass checks=[checks.RelevanceMass('saliency', min_mass=0.5), ...]")
    for c in out:
        if not isinstance(c, Check):
            raise TypeError(
                f"{c!r} is not a check; use the classes of lightning_xai.checks, or checks.Custom(fn, name) for your own rule"
            )
    names = [c.name for c in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"two checks are named {', '.join(map(repr, dupes))}; give each a distinct name=... (the tag is xai/check/<name>)")
    return out


def run(
    checks: Sequence[Check],
    model: nn.Module,
    probe: ProbeSet,
    target: Any = "predicted",
    metrics: Optional[Mapping[str, Any]] = None,
    output: F.OutputSpec = None,
) -> List[CheckResult]:
    """Set up and evaluate ``checks`` on ``model`` and ``probe`` without a trainer.

    ``output`` selects the explained tensor when the model returns a tuple, dict or object.

    ``metrics`` stands in for ``trainer.callback_metrics`` (for :class:`DeadUnits` and :class:`Drift`).
    """
    checks = validate(checks)
    ctx = CheckContext(model, probe, target=target, metrics=metrics, output=output)
    out = ctx.outputs
    classes = out.shape[1] if out.dim() == 2 and out.shape[1] > 1 else None
    setup = CheckSetup(probe=probe, model=model, classes=classes)
    for c in checks:
        c.setup(setup)
    return [c(ctx) for c in checks]
