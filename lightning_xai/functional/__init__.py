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
from .checks import (
    SIMILARITIES,
    completeness_error,
    ig_completeness,
    map_similarity,
    parameter_randomization,
    pointing_game,
    pool_maps,
    randomized_copy,
    region_mass,
    relevance_mass,
    spearman,
    ssim,
    top_layers,
)
from .render import bar_chart, color_scale, colormap, is_signed, overlay_grid
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
    "bar_chart",
    "color_scale",
    "colormap",
    "is_signed",
    "overlay_grid",
    "entropy",
    "gini",
    "global_importance",
    "summarize",
    "top_mass",
    "SIMILARITIES",
    "completeness_error",
    "ig_completeness",
    "map_similarity",
    "parameter_randomization",
    "pointing_game",
    "pool_maps",
    "randomized_copy",
    "region_mass",
    "relevance_mass",
    "spearman",
    "ssim",
    "top_layers",
]
