"""Any Captum attribution method, where Captum is installed (``pip install lightning-xai[captum]``).

The six built-in methods need no Captum. For the long tail (DeepLift, GradientShap, GuidedBackprop,
LRP, Lime, ...) a method may be named by a Captum attribution class or its name; it then runs under
the same guarantees as the built-in ones (eval mode, frozen parameters, state restored).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from ._guard import explaining

__all__ = ["captum_available", "captum_class", "captum_method_name", "captum_attribute"]


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


def captum_attribute(
    model: nn.Module,
    inputs: Tensor,
    target: Union[None, int, Tensor] = None,
    method: Union[str, type] = "DeepLift",
    *,
    layer: Union[None, str, nn.Module] = None,
    chunk_size: Optional[int] = None,
    **options: Any,
) -> Tensor:
    """Run a Captum attribution class on ``model`` with lightning_xai's guarantees.

    ``layer`` is passed (resolved from a dotted name) to classes that take one (``Layer*``,
    ``Neuron*``); other keyword options go to ``attribute()``. Work is done in chunks of
    ``chunk_size`` samples (default: all at once).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> captum_attribute(net, torch.randn(5, 3), 1, "DeepLift").shape
        torch.Size([5, 3])
    """
    cls = captum_class(method)
    if cls is None:
        if not captum_available():
            raise ImportError(
                f"method {method!r} needs Captum, which is not installed: pip install 'lightning-xai[captum]'"
            )
        raise ValueError(f"{method!r} is not an attribution class of captum.attr")
    params = inspect.signature(cls).parameters
    n = inputs.shape[0]
    chunk = n if chunk_size is None else max(1, int(chunk_size))
    # Captum's samplers (KernelShap, Lime, GradientShap, ...) draw from the global RNG: run them on a
    # fork of it, so that explaining never moves the training's random stream
    devices = [inputs.device.index or 0] if inputs.device.type == "cuda" else []
    with explaining(model), torch.random.fork_rng(devices=devices):
        ctor: dict = {}
        if "layer" in params:
            from .attribution import resolve_layer

            ctor["layer"] = resolve_layer(model, layer)[1]
        elif layer is not None:
            raise ValueError(f"Captum's {cls.__name__} takes no layer; drop the layer option")
        explainer = cls(model, **ctor) if "forward_func" in params or "model" in params else cls(model)
        x = inputs.detach().clone()
        t = None if target is None else torch.as_tensor(target, device=x.device).long().reshape(-1).clone()
        if t is not None and t.numel() == 1:
            t = t.expand(n).contiguous()
        parts = []
        for s in range(0, n, chunk):
            xs = x[s : s + chunk].requires_grad_(True)
            kwargs = dict(options)
            if t is not None:
                kwargs["target"] = t[s : s + chunk]
            out = explainer.attribute(xs, **kwargs)
            if isinstance(out, tuple):
                out = out[0]
            parts.append(out.detach())
        return torch.cat(parts)


def as_callable(method: Any) -> Callable[..., Tensor]:
    """A ``f(model, inputs, target, **options)`` for a Captum method."""

    def run(model: nn.Module, inputs: Tensor, target: Any = None, **options: Any) -> Tensor:
        return captum_attribute(model, inputs, target, method, **options)

    run.__name__ = captum_method_name(method)
    return run
