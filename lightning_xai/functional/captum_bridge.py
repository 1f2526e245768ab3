"""Any Captum attribution method, where Captum is installed (``pip install lightning-xai[captum]``).

The six built-in methods need no Captum. For the long tail (DeepLift, GradientShap, GuidedBackprop,
LRP, Lime, ...) a method may be named by a Captum attribution class or its name; it then runs under
the same guarantees as the built-in ones (eval mode, frozen parameters, state restored, the global
random streams forked).

Every Captum class either runs in every callback and check or is refused when the callback or check
is built, with the reason (:func:`captum_spec`):

- required ``attribute`` arguments get defaults (``baselines``: zeros; Occlusion's
  ``sliding_window_shapes``: whole channels x 1/8 of each spatial size) or must be given
  (``neuron_selector`` of the ``Neuron*`` classes);
- ``NoiseTunnel`` smooths the method named by its ``attribution`` option:
  ``{"NoiseTunnel": {"attribution": "Saliency", "nt_samples": 8, "stdevs": 0.1}}``;
- ``Layer*`` classes give the layer's maps, upsampled to the inputs as Grad-CAM's (channels summed,
  bilinear) so that pictures, drift and checks see input-shaped maps; ``upsample=False`` keeps the
  layer's shape (pictures upsample it, the drift monitor refuses it);
- classes that cannot be built from a model alone (``LimeBase``, ``LLMAttribution``,
  ``DataLoaderAttribution``) and Captum's base classes are refused.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ._guard import explaining, forked_rng

__all__ = ["captum_available", "captum_class", "captum_method_name", "captum_attribute", "captum_spec", "is_layer_class"]


def captum_available() -> bool:
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        return False
    return True


def captum_class(method: Any) -> Optional[type]:
    """The Captum attribution class ``method`` names (a class, or a name in ``captum.attr``), else None."""
    try:
        import captum.attr as ca
    except ImportError:
        return None
    cls = getattr(ca, method, None) if isinstance(method, str) else method
    if inspect.isclass(cls) and issubclass(cls, ca.Attribution) and not inspect.isabstract(cls):
        return cls
    return None


def captum_method_name(method: Any) -> str:
    """The name under which a Captum method is logged: its class name."""
    cls = captum_class(method)
    if cls is None:
        raise ValueError(f"{method!r} is not a Captum attribution class")
    return cls.__name__


#: constructor arguments the bridge fills itself: the model, the layer option, NoiseTunnel's inner method
_FILLED_CTOR = ("forward_func", "model", "layer", "attribution_method")
#: ``attribute`` arguments that are not options
_NOT_OPTIONS = ("self", "inputs", "target", "return_convergence_delta")


def _required(params: Any, skip: Sequence[str]) -> Tuple[str, ...]:
    return tuple(
        p for p, v in params.items()
        if p not in skip and v.default is v.empty and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)
    )


def is_layer_class(cls: type) -> bool:
    """Whether a Captum class attributes to a layer's output (``LayerAttribution``: its maps have the
    layer's shape) rather than to the inputs (``Neuron*`` classes attribute a neuron to the inputs)."""
    from captum.attr import LayerAttribution

    return issubclass(cls, LayerAttribution)


def captum_spec(cls: type) -> Dict[str, Any]:
    """What the method table needs to know of a Captum class, or a ``ValueError`` saying why it cannot
    run on a probe (checked when a callback or check is built):

    - ``options``: the names ``attribute`` takes, plus ``layer`` (classes built on a layer),
      ``attribution`` (NoiseTunnel's inner method), ``upsample`` (layer classes), ``chunk_size``;
    - ``required``: options without a default that the bridge cannot fill (``neuron_selector``);
      ``baselines`` (GradientShap, DeepLiftShap) defaults to zeros, Occlusion's
      ``sliding_window_shapes`` to whole channels x 1/8 of each spatial size (as ``occlusion``);
    - ``resolution``: ``"layer"`` for layer classes (maps upsampled to the inputs by default).
    """
    if not hasattr(cls, "attribute"):
        raise ValueError(
            f"{cls.__name__} is one of Captum's base classes, not a method; name a method such as Saliency, "
            "or a subclass of it"
        )
    ctor = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    needs = [p for p in _required(ctor, ("self",)) if p not in _FILLED_CTOR]
    if needs:
        raise ValueError(
            f"Captum's {cls.__name__} cannot be built from a model alone: its constructor needs "
            f"{', '.join(needs)}. Use a method that can (for LimeBase: Lime, or lightning_xai's 'lime'), or "
            "wrap yours in a function fn(model, inputs, target) and register it (lightning_xai.register_method)"
        )
    params = inspect.signature(cls.attribute).parameters
    options = ["*" if v.kind is v.VAR_KEYWORD else p for p, v in params.items()
               if p not in _NOT_OPTIONS and v.kind is not v.VAR_POSITIONAL]
    if "layer" in ctor:
        options.append("layer")
    layer = is_layer_class(cls)
    if layer:
        options.append("upsample")
    if "attribution_method" in ctor:
        options.append("attribution")
    options.append("chunk_size")
    required = tuple(p for p in _required(params, _NOT_OPTIONS) if p not in _DEFAULTS)
    if "attribution_method" in ctor:
        required += ("attribution",)
    return {"options": tuple(dict.fromkeys(options)), "required": required,
            "resolution": "layer" if layer else "input", "check": _check_inner if "attribution_method" in ctor else None}


def _check_inner(options: Any) -> None:
    inner = captum_class(options.get("attribution"))
    if inner is None or inner.__name__ == "NoiseTunnel":
        raise ValueError(
            f"NoiseTunnel's attribution option must name the Captum method it smooths, such as 'Saliency' or "
            f"captum.attr.IntegratedGradients; got {options.get('attribution')!r}"
        )
    captum_spec(inner)


def _default_window(x: Tensor) -> Tuple[int, ...]:
    shape = tuple(x.shape[1:])
    if len(shape) == 1:
        return (1,)
    return (shape[0],) + tuple(max(1, d // 8) for d in shape[1:])


def _default_baselines(cls: type, x: Tensor) -> Tensor:
    # DeepLiftShap asks for a distribution of at least two references: two zero rows are one zero reference
    rows = 2 if "DeepLiftShap" in [c.__name__ for c in cls.__mro__] else 1
    return torch.zeros((rows,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)


#: required ``attribute`` arguments the bridge fills when they are not given: ``fn(cls, inputs) -> value``
_DEFAULTS: Dict[str, Callable[[type, Tensor], Any]] = {
    "baselines": _default_baselines,
    "sliding_window_shapes": lambda cls, x: _default_window(x),
}


def _inner(model: nn.Module, attribution: Any, layer: Any) -> Any:
    """NoiseTunnel's inner method: a Captum class or its name, built on ``model`` like any other."""
    _check_inner({"attribution": attribution})  # refuses what cannot be smoothed, with the reason
    inner = captum_class(attribution)
    assert inner is not None
    return _build(model, inner, layer)


def _build(model: nn.Module, cls: type, layer: Any) -> Any:
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    ctor: Dict[str, Any] = {}
    if "layer" in params:
        from .attribution import resolve_layer

        ctor["layer"] = resolve_layer(model, layer)[1]
    elif layer is not None:
        raise ValueError(f"Captum's {cls.__name__} takes no layer; drop the layer option")
    return cls(model, **ctor)


def _upsample_layer_map(a: Tensor, x: Tensor, name: str) -> Tensor:
    """A layer's attributions ``(N, C', *spatial')`` drawn over inputs ``(N, C, *spatial)``: channels
    summed, spatial dimensions interpolated (as Grad-CAM's), repeated over the input channels."""
    spatial = tuple(x.shape[2:])
    if a.dim() != x.dim() or len(spatial) not in (1, 2, 3):
        raise ValueError(
            f"{name}'s attributions of shape {tuple(a.shape)} (the layer's) cannot be drawn over inputs of shape "
            f"{tuple(x.shape)}; pick a layer with spatial outputs, or pass upsample=False to keep the layer's shape"
        )
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    a = a.sum(1, keepdim=True)
    up = torch.nn.functional.interpolate(a, size=spatial, mode=mode, align_corners=False)
    return up.expand_as(x).contiguous()


def captum_attribute(
    model: nn.Module,
    inputs: Tensor,
    target: Union[None, int, Tensor] = None,
    method: Union[str, type] = "DeepLift",
    *,
    layer: Union[None, str, nn.Module] = None,
    chunk_size: Optional[int] = None,
    attribution: Any = None,
    upsample: bool = True,
    **options: Any,
) -> Tensor:
    """Run a Captum attribution class on ``model`` with lightning_xai's guarantees.

    ``layer`` is passed (resolved from a dotted name) to classes that take one (``Layer*``,
    ``Neuron*``); ``attribution`` names NoiseTunnel's inner method (a Captum class or its name,
    built on the model and ``layer`` like any other); other keyword options go to ``attribute()``
    (NoiseTunnel passes those it does not know to the inner method). Required options get defaults:
    ``baselines`` zeros, Occlusion's ``sliding_window_shapes`` whole channels x 1/8 of each spatial
    size. A layer class's maps are upsampled to the inputs (channels summed, as Grad-CAM's) unless
    ``upsample=False``. Work is done in chunks of ``chunk_size`` samples (default: all at once), on
    a fork of the global random streams (torch, NumPy, ``random``): Captum's samplers draw from them.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> captum_attribute(net, torch.randn(5, 3), 1, "DeepLift").shape
        torch.Size([5, 3])
        >>> captum_attribute(net, torch.randn(5, 3), 1, "NoiseTunnel", attribution="Saliency", nt_samples=2).shape
        torch.Size([5, 3])
    """
    cls = captum_class(method)
    if cls is None:
        if not captum_available():
            raise ImportError(
                f"method {method!r} needs Captum, which is not installed: pip install 'lightning-xai[captum]'"
            )
        raise ValueError(f"{method!r} is not an attribution class of captum.attr")
    spec = captum_spec(cls)
    missing = [p for p in spec["required"] if p not in options and not (p == "attribution" and attribution is not None)]
    if missing:
        raise ValueError(f"Captum's {cls.__name__} needs the option(s) {', '.join(missing)}")
    attribute_params = inspect.signature(cls.attribute).parameters  # type: ignore[attr-defined]
    n = inputs.shape[0]
    chunk = n if chunk_size is None else max(1, int(chunk_size))
    with explaining(model), forked_rng(inputs.device):
        if "attribution_method" in inspect.signature(cls.__init__).parameters:  # type: ignore[misc]
            explainer = cls(_inner(model, attribution, layer))
        else:
            explainer = _build(model, cls, layer)
        x = inputs.detach().clone()
        for name, default in _DEFAULTS.items():
            if name in attribute_params and attribute_params[name].default is attribute_params[name].empty:
                if name not in options:
                    options[name] = default(cls, x)
        t = None if target is None else torch.as_tensor(target, device=x.device).long().reshape(-1).clone()
        if t is not None and t.numel() == 1:
            t = t.expand(n).contiguous()
        takes_target = "target" in attribute_params or any(
            v.kind is v.VAR_KEYWORD for v in attribute_params.values()
        )
        parts = []
        for s in range(0, n, chunk):
            xs = x[s : s + chunk].requires_grad_(True)
            kwargs = dict(options)
            if t is not None and takes_target:
                kwargs["target"] = t[s : s + chunk]
            out = explainer.attribute(xs, **kwargs)
            if isinstance(out, tuple):
                out = out[0]
            parts.append(out.detach())
        result = torch.cat(parts)
        if spec["resolution"] == "layer" and upsample:
            result = _upsample_layer_map(result, x, cls.__name__)
        return result


def as_callable(method: Any) -> Callable[..., Tensor]:
    """A ``f(model, inputs, target, **options)`` for a Captum method."""

    def run(model: nn.Module, inputs: Tensor, target: Any = None, **options: Any) -> Tensor:
        return captum_attribute(model, inputs, target, method, **options)

    run.__name__ = captum_method_name(method)
    return run
