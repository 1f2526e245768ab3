"""The built-in methods as users call them: ``F.saliency(model, inputs, target, ...)`` and the others.

Each is the method of :mod:`~lightning_xai.functional.attribution` or
:mod:`~lightning_xai.functional.perturbation` (written for one floating-point tensor, as the method
table runs it), in front of which inputs of other kinds take the method table's way, as in
:func:`~lightning_xai.functional.attribute`: several inputs (a tuple or dict of tensors) come back in
their structure, and token ids read by an ``nn.Embedding`` are attributed at its output
(``embedding=`` and ``pad_id=`` choose the embedding and the baseline token). One floating-point
tensor goes straight to the method.

Example:
    >>> import torch
    >>> from lightning_xai import functional as F
    >>> net = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Flatten(), torch.nn.Linear(6, 2))
    >>> F.saliency(net, torch.tensor([[1, 4], [2, 0]]), 1).shape  # one value per token
    torch.Size([2, 2])
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar, cast

from torch import Tensor, nn

from . import attribution as _attribution
from . import perturbation as _perturbation
from .methods import get_method
from .structured import is_structured
from .tokens import has_token_inputs

__all__ = [
    "saliency",
    "input_x_gradient",
    "grad_cam",
    "integrated_gradients",
    "smoothgrad",
    "occlusion",
    "kernel_shap",
    "lime",
    "shapley_sampling",
    "gradient_shap",
    "feature_ablation",
]

_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def _for_any_inputs(fn: _Fn, name: str) -> _Fn:
    @functools.wraps(fn)
    def method(model: nn.Module, inputs: Any, target: Any = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(inputs, Tensor):
            if inputs.is_floating_point() or inputs.dim() < 2 or not has_token_inputs(model, inputs, kwargs.get("embedding")):
                return fn(model, inputs, target, *args, **kwargs)  # one tensor (integers without embedding: fn says so)
        elif not is_structured(inputs):
            return fn(model, inputs, target, *args, **kwargs)  # not inputs at all: fn's own error
        if kwargs.get("return_convergence_delta"):
            raise ValueError(
                "return_convergence_delta is computed for one floating-point tensor of inputs; for several "
                "inputs or token ids, check completeness with checks.Completeness"
            )
        return get_method(name)(model, inputs, target, *args, **kwargs)

    return cast(_Fn, method)


saliency = _for_any_inputs(_attribution.saliency, "saliency")
input_x_gradient = _for_any_inputs(_attribution.input_x_gradient, "input_x_gradient")
grad_cam = _for_any_inputs(_attribution.grad_cam, "grad_cam")
integrated_gradients = _for_any_inputs(_attribution.integrated_gradients, "integrated_gradients")
smoothgrad = _for_any_inputs(_attribution.smoothgrad, "smoothgrad")
occlusion = _for_any_inputs(_attribution.occlusion, "occlusion")
kernel_shap = _for_any_inputs(_perturbation.kernel_shap, "kernel_shap")
lime = _for_any_inputs(_perturbation.lime, "lime")
shapley_sampling = _for_any_inputs(_perturbation.shapley_sampling, "shapley_sampling")
gradient_shap = _for_any_inputs(_perturbation.gradient_shap, "gradient_shap")
feature_ablation = _for_any_inputs(_perturbation.feature_ablation, "feature_ablation")
