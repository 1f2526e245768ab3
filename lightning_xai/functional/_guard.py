"""Context that lets a model be explained without perturbing it.

Everything an explanation touches is put back afterwards, also when it raises: each module's
``training`` flag, each parameter's ``requires_grad``, the grad mode and inference mode, and the
forward hooks registered for the explanation. Parameters are frozen while inside, so gradients are
taken with respect to the inputs only and no parameter ``.grad`` is ever written.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["explaining"]


@contextmanager
def explaining(model: nn.Module) -> Iterator[nn.Module]:
    """Run the body with ``model`` in eval mode, parameters frozen and autograd enabled.

    Works inside ``torch.no_grad()`` and ``torch.inference_mode()`` (as Lightning's validation
    loop runs), and restores every flag it changed on exit.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.5)).train()
        >>> with torch.inference_mode(), explaining(net):
        ...     x = torch.ones(1, 3, requires_grad=True)
        ...     (g,) = torch.autograd.grad(net(x).sum(), x)
        >>> net.training, net[0].weight.requires_grad, net[0].weight.grad is None
        (True, True, True)
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        with torch.inference_mode(False), torch.enable_grad():
            for p, _ in flags:
                p.requires_grad_(False)
            model.eval()
            yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)
