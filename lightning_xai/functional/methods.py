"""The one table of attribution methods: the :class:`AttributionMethod` protocol and its registry.

Everywhere a method is named (every callback, every check, :func:`attribute`, YAML) the same
things are accepted, and they all go through :func:`get_method`:

- a built-in name (``"saliency"``, ``"input_x_gradient"``, ``"integrated_gradients"``,
  ``"smoothgrad"``, ``"grad_cam"``, ``"occlusion"``, and the perturbation methods of
  :mod:`lightning_xai.functional.perturbation`: ``"kernel_shap"``, ``"lime"``,
  ``"shapley_sampling"``, ``"gradient_shap"``, ``"feature_ablation"``);
- a name given to :func:`register_method`;
- an :class:`AttributionMethod`;
- a Captum attribution class (subclasses too, kept as the class) or the name of one in
  ``captum.attr``, where Captum is installed;
- a plain callable ``fn(model, inputs, target, **options) -> Tensor``, named by its ``__name__``.

A method's options are read off its signature (the keyword parameters after ``model, inputs,
target``), so a wrong option is refused when the callback or check is built, with the valid ones
listed.

Example:
    >>> import torch
    >>> from lightning_xai import functional as F
    >>> def gradient_norm(model, inputs, target=None):
    ...     return F.saliency(model, inputs, target).pow(2)
    >>> method = F.register_method("gradient_norm", gradient_norm)
    >>> method.name, method.needs_gradients
    ('gradient_norm', True)
    >>> F.attribute(torch.nn.Linear(3, 2), torch.randn(4, 3), 0, "gradient_norm").shape
    torch.Size([4, 3])
    >>> F.get_method("saliency").shared_pass
    True
    >>> F.unregister_method("gradient_norm")
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from . import attribution as _attr
from . import perturbation as _pert
from ._guard import explaining, forked_rng
from ._rows import entered
from .outputs import with_output
from .structured import attribute_at_layer, attribute_structured, is_structured
from .tokens import attribute_tokens, has_token_inputs
from .captum_bridge import _upsample_layer_map, captum_attribute, captum_available, captum_class, captum_spec

__all__ = [
    "AttributionMethod",
    "MethodCall",
    "MethodLike",
    "METHODS",
    "GRADIENT_PASS_METHODS",
    "attribute",
    "check_method",
    "get_method",
    "method_names",
    "options_key",
    "register_method",
    "resolve_methods",
    "unregister_method",
]

#: parameters of a method's function that are not user options: the three positional arguments,
#: and what the engine passes itself (``shard``: the rows of a sharded probe) or the method returns;
#: ``output`` (which model output is explained) is the caller's, given to a callback, check or :func:`attribute`
_NOT_OPTIONS = frozenset(
    {"model", "inputs", "target", "shard", "generator", "return_convergence_delta", "output", "embedding", "pad_id"}
)

RESOLUTIONS = ("input", "layer")


@dataclass(frozen=True)
class AttributionMethod:
    """One attribution method: a name, a function and what the engine needs to know about it.

    Args:
        name: the name it is logged under (``xai/attr/<name>``).
        fn: ``fn(model, inputs, target, **options) -> Tensor`` with one map per input row.
        needs_gradients: whether ``fn`` differentiates through the model (False for perturbation
            methods that only run forwards). Every method runs with autograd on and the model in eval
            mode with frozen parameters; the flag tells the engine what it costs.
        resolution: ``"input"`` (maps shaped like the inputs) or ``"layer"`` (a layer's resolution,
            such as Grad-CAM without upsampling); a ``resolution`` option of the call may say so too.
        stochastic: whether ``fn`` draws random numbers (seed your own generator, so that epochs are
            comparable: the global RNG is restored after every call, so its draws would repeat).
        shared_pass: rides on the one forward+backward pass that saliency, input x gradient and
            Grad-CAM share (built-ins only).
        options: the option names ``fn`` takes; ``None`` reads them from its signature.
        required: the options that must be given (``None``: the keyword-only parameters of ``fn``
            without a default); a callback or check built without them fails, naming them.
        check: ``check(options)`` raises a ``ValueError`` naming the fix for option values that can be
            judged without the model (run when a callback or check is built).

    Calling the method runs ``fn`` and returns its maps (the first element of a tuple result).

    Example:
        >>> import torch
        >>> from lightning_xai import functional as F
        >>> m = AttributionMethod("twice_saliency", lambda model, inputs, target=None:
        ...                       2 * F.saliency(model, inputs, target))
        >>> m(torch.nn.Linear(2, 1), torch.ones(3, 2)).shape
        torch.Size([3, 2])
        >>> m.check_options({"n_steps": 4})
        Traceback (most recent call last):
        ...
        ValueError: unknown option(s) n_steps for 'twice_saliency'; it takes no options
    """

    name: str
    fn: Callable[..., Any] = field(repr=False)
    needs_gradients: bool = True
    resolution: str = "input"
    stochastic: bool = False
    shared_pass: bool = False
    options: Optional[Tuple[str, ...]] = None
    required: Optional[Tuple[str, ...]] = None
    check: Optional[Callable[[Mapping[str, Any]], None]] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(f"a method's name must be a non-empty string without '/', got {self.name!r}")
        if not callable(self.fn):
            raise TypeError(f"method {self.name!r}: fn must be callable fn(model, inputs, target, **options)")
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {self.resolution!r}")
        if self.options is None:
            object.__setattr__(self, "options", _signature_options(self.fn))
        if self.required is None:
            object.__setattr__(self, "required", _signature_required(self.fn))

    # ---------------------------------------------------------------------------------- options
    @property
    def option_names(self) -> Tuple[str, ...]:
        """The options this method takes (``("*",)`` when its function takes ``**kwargs``)."""
        return tuple(self.options or ())

    def accepts(self, option: str) -> bool:
        names = self.option_names
        return "*" in names or option in names

    def check_options(self, options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        """``options`` as a dict, or a ``ValueError`` that names the unknown ones and lists the valid ones."""
        opts = dict(options or {})
        if not all(isinstance(k, str) for k in opts):
            raise TypeError(f"option names of method {self.name!r} must be strings, got {list(opts)}")
        # arguments a function takes besides its options (``shard``, ``generator``, ...) pass through
        bad = sorted(k for k in opts if not self.accepts(k) and not (k in _NOT_OPTIONS and _takes(self.fn, k)))
        if bad:
            valid = [n for n in self.option_names if n != "*"]
            takes = f"it takes {', '.join(valid)}" if valid else "it takes no options"
            raise ValueError(f"unknown option(s) {', '.join(bad)} for {self.name!r}; {takes}")
        missing = [k for k in self.required or () if k not in opts]
        if missing:
            raise ValueError(
                f"method {self.name!r} needs the option(s) {', '.join(missing)}: pass them as "
                f"{{{self.name!r}: {{{', '.join(repr(k) + ': ...' for k in missing)}}}}}"
            )
        if self.check is not None:
            self.check(opts)
        return opts

    # ---------------------------------------------------------------------------------- calling
    def __call__(
        self, model: nn.Module, inputs: Tensor, target: Any = None, *, embedding: Any = None, pad_id: int = 0,
        **options: Any,
    ) -> Tensor:
        """Run ``fn`` under the library's guarantees: the model in eval mode with its parameters frozen
        and autograd on (also inside Lightning's no-grad validation and ``inference_mode``), inputs
        that can join autograd, and the global random streams (torch, NumPy, ``random``) put back
        afterwards; every flag is restored.

        Structured inputs (a tuple or dict of tensors) go through
        :func:`~lightning_xai.functional.attribute_structured`: maps come back in the same structure.
        Token ids read by an ``nn.Embedding`` (``embedding=`` to choose it) are attributed at its output,
        one value per token, with the embedding of ``pad_id`` as baseline
        (:func:`~lightning_xai.functional.attribute_tokens`)."""
        if has_token_inputs(model, inputs, embedding):
            return attribute_tokens(
                self.__call__, model, inputs, target, method_name=self.name, takes_shard=_takes(self.fn, "shard"),
                takes_baseline=self.accepts("baseline"), embedding=embedding, pad_id=pad_id, **options,
            )
        if is_structured(inputs) and self._upsamples_a_layer():
            # the map is made at the layer, then upsampled to the inputs that feed the layer
            layer_name, layer = _attr.resolve_layer(model, options.get("layer"))
            grad_cam = self.fn is _attr.grad_cam
            return attribute_at_layer(
                self.__call__, model, inputs, target, module=layer, layer_name=layer_name,
                resize=_attr._upsample if grad_cam else functools.partial(_upsample_layer_map, name=self.name),
                **options,
            )
        if is_structured(inputs):
            return attribute_structured(
                self.__call__, model, inputs, target, per_input=self.name == "occlusion",
                takes_shard=_takes(self.fn, "shard"), **options,
            )
        with explaining(model), forked_rng(inputs.device):
            x = inputs.detach().clone() if inputs.is_inference() else inputs.detach()
            with entered(x):  # rows the method declares are rows of x (counted only if x is what it was handed)
                result = self.fn(model, x, target, **options)
        if isinstance(result, tuple):
            result = result[0]
        if not isinstance(result, Tensor):
            result = torch.as_tensor(result)
        return result.detach()

    def _upsamples_a_layer(self) -> bool:
        """Grad-CAM, or a layer method that takes ``layer`` and ``upsample`` (Captum's ``Layer*`` classes)."""
        if self.name == "grad_cam":
            return self.fn is _attr.grad_cam
        return self.resolution == "layer" and {"layer", "upsample"} <= set(self.option_names)

    def is_layer_resolution(self, options: Mapping[str, Any]) -> bool:
        """Whether this call's maps have a layer's resolution rather than the inputs' shape."""
        if self.name == "grad_cam" or (self.resolution == "layer" and "upsample" in self.option_names):
            return not options.get("upsample", True)
        return self.resolution == "layer"


def _signature_options(fn: Callable[..., Any]) -> Tuple[str, ...]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature: accept anything
        return ("*",)
    out: List[str] = []
    positional = 0
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            out.append("*")
        elif p.kind is p.VAR_POSITIONAL:
            continue
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and positional < 3:
            positional += 1  # model, inputs, target
        elif p.name not in _NOT_OPTIONS:
            out.append(p.name)
    return tuple(out)


def _signature_required(fn: Callable[..., Any]) -> Tuple[str, ...]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty and p.name not in _NOT_OPTIONS)


# ----------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------
_BUILTINS: Tuple[AttributionMethod, ...] = tuple(
    replace(m, shared_pass=m.name in _attr.ONE_PASS_METHODS)
    for m in (
        AttributionMethod("saliency", _attr.saliency),
        AttributionMethod("input_x_gradient", _attr.input_x_gradient),
        AttributionMethod("integrated_gradients", _attr.integrated_gradients),
        AttributionMethod("smoothgrad", _attr.smoothgrad, stochastic=True),
        AttributionMethod("grad_cam", _attr.grad_cam),
        AttributionMethod("occlusion", _attr.occlusion, needs_gradients=False),
        AttributionMethod("kernel_shap", _pert.kernel_shap, needs_gradients=False, stochastic=True),
        AttributionMethod("lime", _pert.lime, needs_gradients=False, stochastic=True),
        AttributionMethod("shapley_sampling", _pert.shapley_sampling, needs_gradients=False, stochastic=True),
        AttributionMethod("gradient_shap", _pert.gradient_shap, stochastic=True),
        AttributionMethod("feature_ablation", _pert.feature_ablation, needs_gradients=False),
    )
)

_TABLE: Dict[str, AttributionMethod] = {m.name: m for m in _BUILTINS}

#: The built-in method names (every name in the table: :func:`method_names`).
METHODS: Tuple[str, ...] = tuple(m.name for m in _BUILTINS)
#: Methods that need only the one forward+backward pass over the inputs; asked together they share it.
GRADIENT_PASS_METHODS: Tuple[str, ...] = tuple(m.name for m in _BUILTINS if m.shared_pass)

MethodLike = Union[str, AttributionMethod, type, Callable[..., Any]]


def method_names() -> Tuple[str, ...]:
    """Every name in the table: the built-ins, then the registered ones."""
    return tuple(_TABLE)


def register_method(
    name: str,
    method: Union[AttributionMethod, Callable[..., Any]],
    *,
    needs_gradients: bool = True,
    resolution: str = "input",
    stochastic: bool = False,
    overwrite: bool = False,
) -> AttributionMethod:
    """Add a method to the table under ``name``; from then on every callback and check accepts the name.

    ``method`` is an :class:`AttributionMethod` (renamed to ``name``) or a function
    ``fn(model, inputs, target, **options) -> Tensor`` (the flags describe it). Built-in names cannot
    be replaced; another registered name only with ``overwrite=True``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_method needs a non-empty string name, got {name!r}")
    if name in METHODS:
        raise ValueError(f"{name!r} is a built-in method and cannot be replaced; register yours under another name")
    if name in _TABLE and not overwrite:
        raise ValueError(f"a method named {name!r} is registered already; pass overwrite=True to replace it")
    if isinstance(method, AttributionMethod):
        entry = replace(method, name=name)
    elif callable(method):
        entry = AttributionMethod(
            name, method, needs_gradients=needs_gradients, resolution=resolution, stochastic=stochastic
        )
    else:
        raise TypeError(f"register_method needs an AttributionMethod or a callable, got {type(method).__name__}")
    _TABLE[name] = entry
    return entry


def unregister_method(name: str) -> None:
    """Remove a registered method (built-ins stay)."""
    if name in METHODS:
        raise ValueError(f"{name!r} is a built-in method and cannot be removed")
    _TABLE.pop(name, None)


def _known() -> str:
    extra = "; with Captum installed, any captum.attr class or its name such as 'DeepLift'"
    return f"known methods: {', '.join(_TABLE)}{extra}; or an AttributionMethod or a callable fn(model, inputs, target)"


def get_method(method: MethodLike) -> AttributionMethod:
    """The :class:`AttributionMethod` that ``method`` names, or a ``ValueError``/``TypeError`` naming the fix.

    Example:
        >>> get_method("integrated_gradients").option_names
        ('baseline', 'n_steps', 'method', 'chunk_size')
        >>> get_method("saliencey")
        Traceback (most recent call last):
        ...
        ValueError: unknown attribution method 'saliencey'; known methods: saliency, ...
    """
    if isinstance(method, AttributionMethod):
        return method
    if isinstance(method, str):
        if method in _TABLE:
            return _TABLE[method]
        cls = captum_class(method)
        if cls is not None:
            return _captum_method(cls)
        hint = "" if captum_available() or not method[:1].isupper() else (
            f" ({method!r} looks like a Captum class, but Captum is not installed: pip install captum)"
        )
        raise ValueError(f"unknown attribution method {method!r}; {_known()}{hint}")
    if inspect.isclass(method):
        cls = captum_class(method)
        if cls is not None:
            return _captum_method(cls)
        raise TypeError(
            f"the class {method.__name__} is not a Captum attribution class; pass a method name, a "
            "captum.attr class, an AttributionMethod or a callable fn(model, inputs, target)"
        )
    if callable(method):
        name = getattr(method, "__name__", None) or type(method).__name__
        if name == "<lambda>":
            name = "lambda"
        return AttributionMethod(name, method)
    raise TypeError(f"a method must be a name, a Captum class, an AttributionMethod or a callable; got {method!r}")


def check_method(name: MethodLike) -> str:
    """The name under which ``name`` is logged, or a ``ValueError`` listing the known methods."""
    return get_method(name).name


# ----------------------------------------------------------------------------------------------
# Captum, through the same protocol
# ----------------------------------------------------------------------------------------------
_CAPTUM_STOCHASTIC = ("KernelShap", "Lime", "LimeBase", "ShapleyValueSampling", "GradientShap", "NoiseTunnel",
                      "FeaturePermutation", "LayerGradientShap", "NeuronGradientShap")


@functools.lru_cache(maxsize=None)
def _captum_method(cls: type) -> AttributionMethod:
    spec = captum_spec(cls)  # a ValueError naming the reason for classes that cannot run on a probe
    stochastic = any(c.__name__ in _CAPTUM_STOCHASTIC for c in cls.__mro__)

    def run(model: nn.Module, inputs: Tensor, target: Any = None, **opts: Any) -> Tensor:
        return captum_attribute(model, inputs, target, cls, **opts)

    run.__name__ = cls.__name__
    return AttributionMethod(
        cls.__name__, run, stochastic=stochastic, resolution=spec["resolution"], options=spec["options"],
        required=spec["required"], check=spec["check"],
    )


# ----------------------------------------------------------------------------------------------
# configured methods
# ----------------------------------------------------------------------------------------------
def options_key(value: Any) -> Any:
    """A hashable key for options: tensors by content (shape, dtype, SHA-1 of the bytes), modules by
    identity, callables by qualified name, containers element by element.

    Example:
        >>> import torch
        >>> options_key({"baseline": torch.ones(2)}) == options_key({"baseline": torch.ones(2)})
        True
        >>> options_key({"baseline": torch.tensor([1., 0.])}) == options_key({"baseline": torch.tensor([0., 1.])})
        False
    """
    if isinstance(value, Tensor):
        data = value.detach().cpu().contiguous()
        digest = hashlib.sha1(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"").hexdigest()
        return ("tensor", tuple(value.shape), str(value.dtype), digest)
    if isinstance(value, nn.Module):
        return ("module", id(value))
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), options_key(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(options_key(v) for v in value)
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if callable(value):
        return ("callable", getattr(value, "__module__", ""), getattr(value, "__qualname__", repr(value)))
    return repr(value)


@dataclass(frozen=True)
class MethodCall:
    """A method with its options, as configured once (in a callback or a check) and run every epoch."""

    method: AttributionMethod
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def key(self) -> Any:
        """What identifies its maps in this process: the method (its name and function object) and its
        options but the chunk size."""
        return ((self.method.name, id(self.method.fn)), options_key({k: v for k, v in self.options.items() if k != "chunk_size"}))

    def __call__(self, model: nn.Module, inputs: Tensor, target: Any = None, **extra: Any) -> Tensor:
        """Run the method; ``extra`` holds what the engine decides (``chunk_size``, from the configured one
        and out-of-memory retries; ``shard``), passed only to methods that take it."""
        opts = dict(self.options)
        tokens = {k: extra.pop(k) for k in ("embedding", "pad_id") if k in extra}  # for token ids (any method)
        for k, v in extra.items():
            if (k == "chunk_size" and self.method.accepts(k)) or (k != "chunk_size" and _takes(self.method.fn, k)):
                opts[k] = v
        return self.method(model, inputs, target, **tokens, **opts)


def _takes(fn: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def resolve_methods(
    methods: Union[MethodLike, Sequence[MethodLike], Mapping[Any, Optional[Mapping[str, Any]]]],
) -> Dict[str, MethodCall]:
    """A method spec as a callback or check takes it -> ``{name: MethodCall}``, options checked.

    Accepts one method, a list of them, or a mapping from method to options
    (``{"integrated_gradients": {"n_steps": 64}, captum.attr.DeepLift: {}}``).

    Example:
        >>> sorted(resolve_methods(["saliency", {"integrated_gradients": {"n_steps": 8}}]))
        ['integrated_gradients', 'saliency']
        >>> resolve_methods({"integrated_gradients": {"n_step": 8}})
        Traceback (most recent call last):
        ...
        ValueError: unknown option(s) n_step for 'integrated_gradients'; it takes baseline, n_steps, method, chunk_size
    """
    items: List[Tuple[Any, Mapping[str, Any]]] = []
    if isinstance(methods, Mapping):
        items = [(k, v or {}) for k, v in methods.items()]
    elif isinstance(methods, (list, tuple)):
        for m in methods:
            if isinstance(m, Mapping):
                items.extend((k, v or {}) for k, v in m.items())
            else:
                items.append((m, {}))
    else:
        items = [(methods, {})]
    if not items:
        raise ValueError(f"methods is empty: name at least one of {', '.join(_TABLE)}")
    out: Dict[str, MethodCall] = {}
    for spec, options in items:
        if not isinstance(options, Mapping):
            raise TypeError(f"the options of method {spec!r} must be a mapping, got {type(options).__name__}")
        method = get_method(spec)
        call = MethodCall(method, method.check_options(options))
        if method.name in out and out[method.name].key != call.key:
            raise ValueError(
                f"two different methods are named {method.name!r}; register one under another name "
                "(lightning_xai.register_method)"
            )
        out[method.name] = call
    return out


def attribute(
    model: nn.Module, inputs: Tensor, target: Any = None, method: MethodLike = "saliency", /, **options: Any
) -> Tensor:
    """Compute one attribution method: ``attribute(model, x, 3, "integrated_gradients", n_steps=64)``.

    ``method`` is anything :func:`get_method` accepts (a name, a registered name, a Captum class, an
    :class:`AttributionMethod`, a callable). The first four arguments are positional, so that a
    method's own options keep their names (integrated gradients' ``method="riemann_trapezoid"`` is an
    option, not the method).

    ``output=`` says which of the model's outputs is explained when it returns a tuple, dict or object
    (an index, a key or attribute name, or ``fn(outputs) -> Tensor``), for every method. ``inputs`` may be a
    tuple or dict of tensors (maps in the same structure); token ids are attributed at their embedding
    (``embedding=``, ``pad_id=``; see :mod:`lightning_xai.functional.tokens`).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 1, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[2., -1.]]))
        >>> attribute(net, torch.tensor([[1., 1.]]), None, "saliency")
        tensor([[2., 1.]])
        >>> attribute(net, torch.tensor([[1., 1.]]), None, "integrated_gradients", method="riemann_trapezoid",
        ...           n_steps=8).round(decimals=4)   # Captum's trapezoid weights sum to (n-1)/n
        tensor([[ 1.7500, -0.8750]])
    """
    m = get_method(method)
    if "output" in options:  # every method (built-in, Captum's, a user's) explains the wrapper's selected output
        model = with_output(model, options.pop("output"))
    tokens = {k: options.pop(k) for k in ("embedding", "pad_id") if k in options}
    return m(model, inputs, target, **tokens, **m.check_options(options))
