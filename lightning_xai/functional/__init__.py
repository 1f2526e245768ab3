"""The algorithms of lightning_xai in pure torch, usable without Lightning.

This package never imports Lightning or TensorBoard (a test checks it).

Example:
    >>> import torch
    >>> from lightning_xai import functional as F
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> x = torch.randn(5, 4)
    >>> F.integrated_gradients(net, x, target=2, n_steps=16).shape
    torch.Size([5, 4])
"""

from ._guard import explaining
from .attribution import (
    GRADIENT_PASS_METHODS,
    METHODS,
    attribute,
    attribute_many,
    check_method,
    conv_layer_names,
    count_passes,
    grad_cam,
    ig_rule,
    input_x_gradient,
    integrated_gradients,
    occlusion,
    resolve_layer,
    saliency,
    smoothgrad,
)
from .render import (
    COLOR_SCALE_POLICIES,
    bar_chart,
    clipped_fraction,
    color_scale,
    colormap,
    is_signed,
    next_color_scale,
    overlay_grid,
)
from .summary import entropy, gini, global_importance, summarize, top_mass

__all__ = [
    "METHODS",
    "GRADIENT_PASS_METHODS",
    "explaining",
    "attribute",
    "attribute_many",
    "check_method",
    "conv_layer_names",
    "count_passes",
    "grad_cam",
    "ig_rule",
    "input_x_gradient",
    "integrated_gradients",
    "occlusion",
    "resolve_layer",
    "saliency",
    "smoothgrad",
    "COLOR_SCALE_POLICIES",
    "bar_chart",
    "clipped_fraction",
    "color_scale",
    "colormap",
    "is_signed",
    "next_color_scale",
    "overlay_grid",
    "entropy",
    "gini",
    "global_importance",
    "summarize",
    "top_mass",
]
