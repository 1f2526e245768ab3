"""lightning_xai: explain your model while it trains.

PyTorch Lightning callbacks that, at each validation epoch, explain the model on a fixed probe set
and log the result to TensorBoard next to the loss curves.

Example:
    >>> import torch
    >>> from lightning_xai import ProbeSet, functional as F
    >>> probe = ProbeSet(torch.randn(4, 3), targets=torch.tensor([0, 1, 0, 1]))
    >>> F.saliency(torch.nn.Linear(3, 2), probe.inputs, probe.targets).shape
    torch.Size([4, 3])
"""

from . import checks, functional
from .errors import SanityCheckError
from .functional.methods import AttributionMethod, get_method, register_method
from .probe import ProbeSet, ProbeSpec
from .renderers import Renderer, RenderContext, register_renderer

from ._version import __version__

__all__ = [
    "ProbeSet", "ProbeSpec", "checks", "functional", "SanityCheckError", "__version__",
    "AttributionMethod", "get_method", "register_method", "Renderer", "RenderContext", "register_renderer",
]
