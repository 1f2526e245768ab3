"""Context that lets a model be explained without perturbing it.

Everything an explanation touches is put back afterwards, also when it raises: each module's
``training`` flag, each parameter's ``requires_grad``, the grad mode and inference mode, the
forward hooks registered for the explanation, and every buffer a forward pass changed (a counter, a
schedule, running statistics of a custom layer). Parameters are frozen while inside, so gradients
are taken with respect to the inputs only and no parameter ``.grad`` is ever written. Compiled code
(``torch.compile``) runs eagerly inside, so maps, hooks and layer names are those of the eager model.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import ContextManager, Dict, Iterator, List, Tuple

import torch
from torch import nn

__all__ = ["explaining", "computing_in", "forked_rng", "named_modules", "eager_name"]

_COMPILED = "_orig_mod."


def eager_name(name: str) -> str:
    """A module name as the eager model knows it: ``torch.compile``'s ``_orig_mod.`` parts removed."""
    return name.replace(_COMPILED, "").removesuffix("._orig_mod").removeprefix("_orig_mod")


def named_modules(model: nn.Module) -> Dict[str, nn.Module]:
    """``{name: module}`` under the eager model's names: a compiled module (``torch.compile``, whole
    model or a submodule) is listed as the module it wraps, under the name the user gave it.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> list(named_modules(torch.nn.Sequential(torch.compile(net))))
        ['', '0', '0.0']
    """
    out: Dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        out[eager_name(name)] = module  # the wrapped module comes after its wrapper and replaces it
    return out


def _compiled(model: nn.Module) -> bool:
    """Whether ``model`` holds compiled code: a ``torch.compile`` wrapper anywhere inside, or a forward
    that Lightning compiled (``trainer.fit(torch.compile(module))``)."""
    return any(
        type(m).__name__ == "OptimizedModule" or getattr(m, "_compiler_ctx", None) for m in model.modules()
    )


def _eager_stance(model: nn.Module) -> ContextManager[object]:
    """Compiled code runs eagerly (torch >= 2.6; older versions have no stance to set). Setting the
    stance costs milliseconds, so it is set only for models that hold compiled code."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("force_eager") if set_stance is not None and _compiled(model) else nullcontext()


def _buffers(model: nn.Module) -> List[Tuple[nn.Module, str, torch.Tensor, int, torch.Tensor]]:
    out = []
    for module in model.modules():
        for name, buf in module._buffers.items():
            if buf is not None:
                out.append((module, name, buf, buf._version, buf.detach().clone()))
    return out


def _put_back(saved: List[Tuple[nn.Module, str, torch.Tensor, int, torch.Tensor]]) -> None:
    with torch.no_grad():
        for module, name, buf, version, value in saved:
            if module._buffers.get(name) is not buf:  # reassigned (``self.count = self.count + 1``)
                module._buffers[name] = buf
            if buf._version != version:  # changed in place (``self.count += 1``)
                buf.copy_(value)


#: the models whose flags an enclosing :func:`explaining` has saved and set (per thread and task): their ids,
#: each with a cell that holds True while that ``explaining`` is open (a task started inside the block and run
#: after it has closed copies the variable, and must not take the model for prepared)
_EXPLAINING: ContextVar[Tuple[Tuple[int, List[bool]], ...]] = ContextVar("lightning_xai_explaining", default=())


def unwrapped(model: nn.Module) -> nn.Module:
    """The model under its wrappers: the library's (output selection, several inputs, token ids) and
    ``torch.compile``'s all hold the wrapped model as ``_orig_mod``."""
    inner = getattr(model, "_orig_mod", None)
    while isinstance(inner, nn.Module):
        model, inner = inner, getattr(inner, "_orig_mod", None)
    return model


@contextmanager
def explaining(model: nn.Module) -> Iterator[nn.Module]:
    """Run the body with ``model`` in eval mode, parameters frozen and autograd enabled.

    Works inside ``torch.no_grad()`` and ``torch.inference_mode()`` (as Lightning's validation
    loop runs), and restores every flag it changed on exit. Nested inside an ``explaining`` of the
    same model (or of a wrapper of it), it only makes sure that autograd is on: the outer one has
    saved and set everything, and puts it back.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.5)).train()
        >>> with torch.inference_mode(), explaining(net):
        ...     x = torch.ones(1, 3, requires_grad=True)
        ...     (g,) = torch.autograd.grad(net(x).sum(), x)
        >>> net.training, net[0].weight.requires_grad, net[0].weight.grad is None
        (True, True, True)
    """
    root = id(unwrapped(model))
    active = _EXPLAINING.get()
    if any(key == root and cell[0] for key, cell in active):
        with torch.inference_mode(False), torch.enable_grad():
            yield model
        return
    open_cell = [True]
    token = _EXPLAINING.set(active + ((root, open_cell),))
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    buffers = _buffers(model)
    try:
        with torch.inference_mode(False), torch.enable_grad(), _eager_stance(model):
            for p, _ in flags:
                p.requires_grad_(False)
            model.eval()
            yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)
        _put_back(buffers)
        open_cell[0] = False
        _EXPLAINING.reset(token)


@contextmanager
def forked_rng(device: torch.device = torch.device("cpu")) -> Iterator[None]:
    """Run the body on a fork of every global random stream an explanation may draw from: torch's
    (CPU, and the CUDA device of ``device``), NumPy's and Python's ``random``. They are all put back
    afterwards, so that explaining never moves the training's random streams (Captum's
    ``GradientShap`` draws its baselines and path points from NumPy, its noise from torch).

    Example:
        >>> import random, numpy as np
        >>> before = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
        >>> with forked_rng():
        ...     _ = torch.rand(3), np.random.uniform(size=3), random.random()
        >>> after = (torch.random.get_rng_state(), np.random.get_state()[1], random.getstate())
        >>> torch.equal(before[0], after[0]), bool((before[1] == after[1]).all()), before[2] == after[2]
        (True, True, True)
    """
    import random

    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency of torch's usual installs
        np = None  # type: ignore[assignment]
    numpy_state = None if np is None else np.random.get_state()
    python_state = random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        if np is not None:
            np.random.set_state(numpy_state)
        random.setstate(python_state)


@contextmanager
def computing_in(model: nn.Module, dtype: torch.dtype, device_type: str = "cpu") -> Iterator[torch.dtype]:
    """Compute in ``dtype`` whatever the model's own precision; put everything back exactly afterwards.

    - ``dtype`` lower than the parameters' (bf16/fp16 on an fp32 model): autocast to ``dtype``.
    - ``dtype`` higher than the parameters' (fp32 on a bf16-true model): floating parameters and
      buffers are cast up for the duration and cast back; the round trip is exact, the Parameter
      objects (and so optimizer state) are the same ones.

    Yields the dtype inputs should have.

    Example:
        >>> net = torch.nn.Linear(2, 1).to(torch.bfloat16)
        >>> w = net.weight.detach().clone()
        >>> with computing_in(net, torch.float32) as dtype:
        ...     y = net(torch.ones(1, 2, dtype=dtype))
        >>> y.dtype, net.weight.dtype, torch.equal(net.weight, w)
        (torch.float32, torch.bfloat16, True)
    """
    tensors = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    own = tensors[0].dtype if tensors else torch.float32
    if dtype == own or not tensors:
        yield own
        return
    if torch.finfo(dtype).bits < torch.finfo(own).bits:
        with torch.autocast(device_type=device_type, dtype=dtype):
            yield own
        return
    saved = [(t, t.data) for t in tensors]
    try:
        for t, data in saved:
            t.data = data.to(dtype)
        yield dtype
    finally:
        for t, data in saved:
            t.data = data
