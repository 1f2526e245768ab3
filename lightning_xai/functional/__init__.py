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

from ._guard import computing_in, explaining
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
from .dead_relu import (
    LayerReLUStats,
    ReLUCounts,
    ReLURecorder,
    ReLUSummary,
    dead_relu_stats,
    merge_relu_counts,
    pack_relu_counts,
    relu_statistics,
    unpack_relu_counts,
)
from .faults import is_out_of_memory, with_oom_retry
from .drift import (
    DRIFT_METRICS,
    MAP_METRICS,
    VECTOR_METRICS,
    DegenerateInputWarning,
    check_metrics,
    drift_scores,
    feature_importance,
    importance_names,
    js_divergence,
    map_spearman,
    map_ssim,
    ndcg,
    per_sample_maps,
    rank_correlation,
    topk_overlap,
)
from .render import bar_chart, color_scale, colormap, heatmap_chart, is_signed, overlay_grid
from .summary import entropy, gini, global_importance, summarize, top_mass

__all__ = [
    "METHODS",
    "GRADIENT_PASS_METHODS",
    "explaining",
    "computing_in",
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
    "is_out_of_memory",
    "with_oom_retry",
    "DRIFT_METRICS",
    "MAP_METRICS",
    "VECTOR_METRICS",
    "DegenerateInputWarning",
    "check_metrics",
    "drift_scores",
    "feature_importance",
    "importance_names",
    "js_divergence",
    "map_spearman",
    "map_ssim",
    "ndcg",
    "per_sample_maps",
    "rank_correlation",
    "topk_overlap",
    "bar_chart",
    "heatmap_chart",
    "color_scale",
    "colormap",
    "is_signed",
    "overlay_grid",
    "entropy",
    "gini",
    "global_importance",
    "summarize",
    "top_mass",
    "ReLURecorder",
    "ReLUCounts",
    "LayerReLUStats",
    "ReLUSummary",
    "relu_statistics",
    "dead_relu_stats",
    "pack_relu_counts",
    "unpack_relu_counts",
    "merge_relu_counts",
]
