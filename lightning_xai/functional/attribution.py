"""Attribution methods in pure torch.

Every method has the signature ``f(model, inputs, target=None, **options) -> Tensor`` and returns a
tensor shaped like ``inputs`` (``grad_cam(..., upsample=False)`` returns the layer-resolution map).
Gradients are taken with respect to the inputs only: parameters are frozen while a method runs and
no parameter ``.grad`` is written. The model is explained in eval mode and every flag it had is
restored afterwards (see :func:`lightning_xai.functional.explaining`).

The numbers follow Captum's definitions, so a map computed here equals Captum's on the same model
and inputs (the test suite checks this):

- ``saliency``: ``|d f_t / d x|`` (Captum's ``Saliency`` with ``abs=True``);
- ``input_x_gradient``: ``x * d f_t / d x``;
- ``integrated_gradients``: Captum's integration rules and convergence delta;
- ``smoothgrad``: mean ``|gradient|`` over noisy copies (Captum's ``NoiseTunnel(Saliency)``);
- ``grad_cam``: Captum's ``LayerGradCam`` with ``relu_attributions=True``, optionally upsampled;
- ``occlusion``: Captum's ``Occlusion`` (output drop averaged over the windows covering a feature).

``chunk_size`` bounds how many rows go through one forward+backward pass; the default is the number
of probe samples, so an attribution pass costs about as much memory as a training step on a batch
of that size (the callbacks cap it at the training batch size).

``target`` is a class index, a tensor of indices, ``None`` for single-output models, or
``"predicted"``: each sample's top class, read off the forward pass that saliency, input x gradient
and Grad-CAM make anyway (the other methods make one forward of the inputs for it).
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Callable, Dict, Iterable, List, Literal, Optional, Sequence, Tuple, Union, overload

import torch
from torch import Tensor, nn

from ._guard import explaining, named_modules
from .outputs import OutputSpec, select_model_output, with_output
from ._rows import entering, sample_rows

__all__ = [
    "ONE_PASS_METHODS",
    "attribute_many",
    "baseline_like",
    "select_output",
    "saliency",
    "input_x_gradient",
    "integrated_gradients",
    "smoothgrad",
    "grad_cam",
    "occlusion",
    "resolve_layer",
    "conv_layer_names",
    "ig_rule",
    "count_passes",
]

TargetLike = Union[None, int, str, Sequence[int], Tensor]

#: ``target="predicted"``: explain each sample's top class. The gradient-pass methods take it from the
#: forward pass they make anyway (no extra forward); the path methods take it from one forward of the inputs.
PREDICTED = "predicted"

#: The methods that :func:`attribute_many` computes from ONE shared forward+backward pass (the method
#: table, :mod:`lightning_xai.functional.methods`, marks them ``shared_pass``).
ONE_PASS_METHODS: Tuple[str, ...] = ("saliency", "input_x_gradient", "grad_cam")

IG_RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


# ----------------------------------------------------------------------------------------------
# pass counting (used by tests and benchmarks to check that work is shared, never by the maths)
# ----------------------------------------------------------------------------------------------
class _PassCounter:
    def __init__(self) -> None:
        self.forward_rows = 0
        self.backward_rows = 0
        self.forward_calls = 0
        self.backward_calls = 0


_COUNTERS: List[_PassCounter] = []


class count_passes:
    """Context manager that counts the forward and backward passes the methods here make.

    Example:
        >>> import torch
        >>> from lightning_xai import functional as F
        >>> net = torch.nn.Linear(4, 3)
        >>> with F.count_passes() as c:
        ...     _ = F.attribute_many(net, torch.randn(5, 4), 0, ["saliency", "input_x_gradient"])
        >>> c.forward_calls, c.backward_calls
        (1, 1)
    """

    def __enter__(self) -> _PassCounter:
        self._c = _PassCounter()
        _COUNTERS.append(self._c)
        return self._c

    def __exit__(self, *exc: object) -> None:
        _COUNTERS.remove(self._c)


def _note(kind: str, rows: int) -> None:
    for c in _COUNTERS:
        setattr(c, f"{kind}_calls", getattr(c, f"{kind}_calls") + 1)
        setattr(c, f"{kind}_rows", getattr(c, f"{kind}_rows") + rows)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _check_inputs(inputs: Tensor) -> None:
    """The checks every built-in method makes of its inputs on entry (and the rows it declares are theirs)."""
    entering(inputs)
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a torch.Tensor of shape (N, ...), got {type(inputs).__name__}")
    if inputs.dim() < 2:
        raise ValueError(
            f"inputs must have a batch dimension, shape (N, ...); got shape {tuple(inputs.shape)}. "
            "Use inputs.unsqueeze(0) for a single sample."
        )
    if not inputs.is_floating_point():
        raise TypeError(
            f"attributions need floating-point inputs, got dtype {inputs.dtype}. Token ids are attributed at the "
            "nn.Embedding that reads them, and this model has none: name it with embedding=<dotted name> "
            "(F.attribute and the callbacks take it); other integer inputs: convert with inputs.float()"
        )


def _target_index(target: TargetLike, n: int, device: torch.device) -> Union[None, str, Tensor]:
    if target is None:
        return None
    if isinstance(target, str):
        if target != PREDICTED:
            raise ValueError(
                f"target {target!r} is not understood: pass 'predicted' (each sample's top class), "
                "an int class index or a tensor of class indices"
            )
        return PREDICTED
    if isinstance(target, bool):
        raise TypeError("target must be an int class index or a tensor of class indices, not bool")
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.long, device=device)
    t = torch.as_tensor(target, device=device)
    if t.is_floating_point():
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    t = t.long().reshape(-1).clone()  # a normal tensor, also when made under inference mode
    if t.numel() == 1:
        return t.expand(n).contiguous()
    if t.numel() != n:
        raise ValueError(f"target has {t.numel()} entries but inputs have {n} samples")
    return t


_ALL = object()


def _logits(out: Any) -> Tensor:
    # a tuple, dict or object is an error naming output= (the model is wrapped by OutputSelected when given)
    return select_model_output(out, None)


def _check_range(target: Tensor, classes: int) -> None:
    """Raise when a class index is outside ``0..classes-1`` (one device sync for the whole target)."""
    lo, hi = torch.stack([target.min(), target.max()]).tolist()
    if hi >= classes or lo < 0:
        raise ValueError(
            f"target class {hi if hi >= classes else lo} "
            f"is out of range: the model returns {classes} classes (valid indices 0..{classes - 1})"
        )


def select_output(out: Tensor, target: Union[None, str, Tensor], validate: Any = _ALL) -> Tensor:
    """The scalar per row that is explained: the target logit, or a single output.

    Example:
        >>> import torch
        >>> select_output(torch.tensor([[1., 5.], [7., 2.]]), torch.tensor([1, 1]))
        tensor([5., 2.])
        >>> select_output(torch.tensor([[1., 5.], [7., 2.]]), "predicted")
        tensor([5., 7.])

    ``target`` may be ``"predicted"`` (the row's argmax). ``validate`` is the target tensor whose range
    is checked (default: ``target``); loops over chunks pass the whole target on the first chunk and
    ``None`` afterwards, so that the check (a host-device sync) runs once per call, not per chunk.
    """
    out = _logits(out)
    if out.dim() == 1:
        return out
    if out.dim() != 2:
        raise ValueError(
            f"the model returned outputs of shape {tuple(out.shape)}; attributions need (N,) or "
            "(N, classes). Wrap the model so that it returns one score per class."
        )
    if target is None or (isinstance(target, str) and out.shape[1] == 1):
        if out.shape[1] == 1:
            return out[:, 0]
        raise ValueError(
            f"the model returns {out.shape[1]} outputs per sample: pass target=<class index or "
            "tensor of indices> (or 'predicted') to say which one to explain"
        )
    if isinstance(target, str):
        target = out.detach().argmax(1)
    else:
        if validate is _ALL:
            validate = target
        if validate is not None:
            _check_range(validate, out.shape[1])
    index = target.reshape(-1, 1)
    if index.is_inference():  # e.g. predictions made under trainer.validate()'s inference mode
        index = index.clone()
    return out.gather(1, index).squeeze(1)


def _predicted(logits: Tensor) -> Optional[Tensor]:
    """Each row's top class, or None for single-output models."""
    if logits.dim() == 2 and logits.shape[1] > 1:
        return logits.argmax(1)
    return None


def _autograd_ready(t: Tensor, copy: bool = True) -> Tensor:
    """``t`` detached, copied only when it is an inference tensor (made under ``torch.inference_mode``)."""
    t = t.detach()
    return t.clone() if copy and t.is_inference() else t


def _chunks(total: int, chunk: int) -> Iterable[Tuple[int, int]]:
    for start in range(0, total, chunk):
        yield start, min(total, start + chunk)


def _chunk_size(chunk_size: Optional[int], n: int) -> int:
    if chunk_size is None:
        return max(1, n)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return chunk_size


def conv_layer_names(model: nn.Module) -> List[str]:
    """Dotted names of the convolutional layers of ``model``, in registration order."""
    return [name for name, m in named_modules(model).items() if isinstance(m, _CONV_TYPES)]


def resolve_layer(model: nn.Module, layer: Union[None, str, nn.Module]) -> Tuple[str, nn.Module]:
    """Find the layer Grad-CAM explains: a dotted name, a module of ``model``, or the last conv layer.

    Raises a ``ValueError`` listing the candidate layers when the name is unknown, and one naming
    the fix when the model has no convolutional layer. Names are the eager model's (a compiled
    module's ``_orig_mod.`` is left out).
    """
    modules = named_modules(model)
    convs = conv_layer_names(model)
    if layer is None:
        if not convs:
            raise ValueError(
                f"grad_cam needs a convolutional layer but {type(model).__name__} has none. "
                "Pass layer=<dotted name> of a module whose output is (N, channels, *spatial), "
                "or use a method that works on any model (saliency, input_x_gradient, "
                "integrated_gradients, smoothgrad, occlusion)."
            )
        return convs[-1], modules[convs[-1]]
    if isinstance(layer, str):
        if layer not in modules or layer == "":
            candidates = convs or [n for n in modules if n]
            raise ValueError(
                f"grad_cam layer {layer!r} not found in {type(model).__name__}. "
                f"Candidate layers: {', '.join(candidates)}"
            )
        return layer, modules[layer]
    if isinstance(layer, nn.Module):
        for name, m in modules.items():
            if m is layer:
                return name, m
        raise ValueError(
            f"the grad_cam layer module {type(layer).__name__} is not part of {type(model).__name__}; "
            f"candidate layers: {', '.join(convs)}"
        )
    raise TypeError(f"layer must be None, a dotted name or an nn.Module, got {type(layer).__name__}")


#: Layers whose output a later op of the model changes in place: their output is captured as a copy.
_CLONE_LAYERS: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


class _Capture:
    """Forward hook that keeps a layer's output on the autograd path, safe against in-place ops.

    The output is kept as it is (no copy) and its version counter noted; if a later op of the model
    changes it in place (``ReLU(inplace=True)`` after the layer), :meth:`modified` says so and the
    pass is made again with ``clone=True``, where the model gets a copy to modify instead. The
    numbers are the same either way; the copy costs one activation of memory.
    """

    def __init__(self, clone: bool = False) -> None:
        self.clone = clone
        self.activation: Optional[Tensor] = None
        self._version = -1

    def __call__(self, module: nn.Module, args: object, output: Tensor) -> Optional[Tensor]:
        if not isinstance(output, Tensor):
            raise ValueError(
                f"grad_cam layer {type(module).__name__} returns {type(output).__name__}; "
                "pick a layer that returns one tensor"
            )
        self.activation = output
        if self.clone:
            return output.clone()
        self._version = output._version
        return None

    def modified(self) -> bool:
        return not self.clone and self.activation is not None and self.activation._version != self._version


def _gradient_pass(
    model: nn.Module,
    inputs: Tensor,
    target: Union[None, str, Tensor],
    layer: Optional[nn.Module] = None,
    create_input_grad: bool = True,
    validate: Any = _ALL,
    copy: bool = True,
    rows: Union[None, slice, Tensor] = None,
) -> Tuple[Optional[Tensor], Optional[Tensor], Tensor]:
    """One forward+backward pass: input gradient, Grad-CAM map at ``layer``, the model's outputs.

    With both the input gradient and Grad-CAM asked for, the map is made by a hook on the layer's
    output as soon as its gradient is known during the backward, and the layer's activation and
    gradient are let go there: holding them to the end would add both to the pass's peak memory.

    ``copy=False`` when ``inputs`` is a tensor the caller just made (inside :func:`explaining`).
    ``rows``: which samples of the method's inputs the pass's rows are (:func:`sample_rows`).
    """
    # the input always joins the graph (parameters are frozen); its gradient is only asked for when needed.
    # A copy is needed only for tensors made under inference mode, which cannot join autograd.
    x = _autograd_ready(inputs, copy).requires_grad_(True)
    capture = _Capture(clone=layer in _CLONE_LAYERS) if layer is not None else None
    handle = layer.register_forward_hook(capture) if layer is not None and capture is not None else None
    cam: List[Tensor] = []
    gx: Optional[Tensor] = None
    try:
        with sample_rows(rows):
            raw = model(x)
        _note("forward", x.shape[0])
        if capture is not None and capture.modified():
            # the layer's output was changed in place downstream: redo the pass with a copy (once per layer)
            assert layer is not None and handle is not None
            _CLONE_LAYERS.add(layer)
            handle.remove()
            capture = _Capture(clone=True)
            handle = layer.register_forward_hook(capture)
            with sample_rows(rows):
                raw = model(x)
            _note("forward", x.shape[0])
        out = select_output(raw, target, validate)
        held: List[Tensor] = []  # the layer's activation, held only until its map is made
        if capture is not None:
            if capture.activation is None:
                raise ValueError("the grad_cam layer was not called during the model's forward pass")
            held.append(capture.activation)
            capture.activation = None
        if held and create_input_grad and held[0].requires_grad:

            def on_grad(g: Tensor) -> None:
                cam.append(_cam(held.pop().detach(), g, relu=True))

            held[0].register_hook(on_grad)
            (gx,) = torch.autograd.grad(out.sum(), [x], allow_unused=True)
        elif held and held[0].requires_grad:
            (g,) = torch.autograd.grad(out.sum(), [held[0]], allow_unused=True)
            if g is not None:
                cam.append(_cam(held.pop().detach(), g, relu=True))
        elif create_input_grad:
            (gx,) = torch.autograd.grad(out.sum(), [x], allow_unused=True)
        _note("backward", x.shape[0])
    finally:
        if handle is not None:
            handle.remove()
    if create_input_grad and gx is None:
        gx = torch.zeros_like(x)
    if held and not cam:  # the layer is not on the path to the output: zero gradient
        cam.append(_cam(held[0].detach(), torch.zeros_like(held[0]), relu=True))
    return gx, (cam[0] if cam else None), _logits(raw).detach()


def _cam(act: Tensor, gact: Tensor, relu: bool) -> Tensor:
    weights = gact.mean(dim=tuple(range(2, gact.dim())), keepdim=True)
    cam = (weights * act).sum(dim=1, keepdim=True)
    return torch.relu(cam) if relu else cam


def _upsample(cam: Tensor, inputs: Tensor) -> Tensor:
    spatial = inputs.shape[2:]
    if cam.dim() != inputs.dim() or len(spatial) not in (1, 2, 3):
        raise ValueError(
            f"cannot upsample a Grad-CAM map of shape {tuple(cam.shape)} to inputs of shape "
            f"{tuple(inputs.shape)}; pass upsample=False"
        )
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    up = torch.nn.functional.interpolate(cam, size=tuple(spatial), mode=mode, align_corners=False)
    return up.expand_as(inputs).contiguous()


# ----------------------------------------------------------------------------------------------
# one-pass gradient methods
# ----------------------------------------------------------------------------------------------
@overload
def attribute_many(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = ...,
    methods: Sequence[str] = ...,
    *,
    layer: Union[None, str, nn.Module] = ...,
    upsample: bool = ...,
    chunk_size: Optional[int] = ...,
    return_outputs: Literal[False] = ...,
    output: OutputSpec = ...,
) -> Dict[str, Tensor]: ...


@overload
def attribute_many(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = ...,
    methods: Sequence[str] = ...,
    *,
    layer: Union[None, str, nn.Module] = ...,
    upsample: bool = ...,
    chunk_size: Optional[int] = ...,
    return_outputs: Literal[True],
    output: OutputSpec = ...,
) -> Tuple[Dict[str, Tensor], Tensor]: ...


@overload
def attribute_many(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = ...,
    methods: Sequence[str] = ...,
    *,
    layer: Union[None, str, nn.Module] = ...,
    upsample: bool = ...,
    chunk_size: Optional[int] = ...,
    return_outputs: bool,
    output: OutputSpec = ...,
) -> Union[Dict[str, Tensor], Tuple[Dict[str, Tensor], Tensor]]: ...


def attribute_many(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = None,
    methods: Sequence[str] = ONE_PASS_METHODS,
    *,
    layer: Union[None, str, nn.Module] = None,
    upsample: bool = True,
    chunk_size: Optional[int] = None,
    return_outputs: bool = False,
    output: OutputSpec = None,
) -> Union[Dict[str, Tensor], Tuple[Dict[str, Tensor], Tensor]]:
    """Saliency, input x gradient and Grad-CAM from ONE shared forward+backward pass.

    Args:
        model: the model to explain.
        inputs: ``(N, ...)`` floating-point inputs.
        target: class index (int), ``(N,)`` tensor of indices, ``"predicted"`` (each sample's top
            class, read off the same forward pass) or ``None`` for single-output models.
        methods: any of ``"saliency"``, ``"input_x_gradient"``, ``"grad_cam"``.
        layer: Grad-CAM layer (dotted name or module); default the last conv layer.
        upsample: upsample Grad-CAM to the input shape.
        chunk_size: rows per pass (default: all of ``inputs`` at once).
        return_outputs: also return the model's outputs on ``inputs`` (detached), from the same pass.
        output: which of the model's outputs is explained when it returns a tuple, dict or object (see
            :func:`~lightning_xai.functional.select_model_output`); every method takes it.

    Returns:
        ``{method: attribution}``, or ``({method: attribution}, outputs)`` with ``return_outputs``.

    Example:
        >>> import torch
        >>> from lightning_xai import functional as F
        >>> net = torch.nn.Linear(3, 2, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[1., -2., 3.], [0., 0., 0.]]))
        >>> maps = F.attribute_many(net, torch.ones(1, 3), 0, ["saliency", "input_x_gradient"])
        >>> maps["saliency"], maps["input_x_gradient"]
        (tensor([[1., 2., 3.]]), tensor([[ 1., -2.,  3.]]))
        >>> maps, out = F.attribute_many(net, torch.ones(1, 3), "predicted", ["saliency"], return_outputs=True)
        >>> out, maps["saliency"]
        (tensor([[2., 0.]]), tensor([[1., 2., 3.]]))
    """
    _check_inputs(inputs)
    model = with_output(model, output)
    unknown = [m for m in methods if m not in ONE_PASS_METHODS]
    if unknown:
        raise ValueError(
            f"attribute_many shares one pass among {', '.join(ONE_PASS_METHODS)}; "
            f"{', '.join(map(repr, unknown))} need their own passes: call attribute() for them"
        )
    n = inputs.shape[0]
    chunk = _chunk_size(chunk_size, n)
    want_cam = "grad_cam" in methods
    want_input = "saliency" in methods or "input_x_gradient" in methods
    with explaining(model):
        layer_mod = resolve_layer(model, layer)[1] if want_cam else None
        t = _target_index(target, n, inputs.device)
        grads: List[Tensor] = []
        cams: List[Tensor] = []
        outs: List[Tensor] = []
        for s, e in _chunks(n, chunk):
            t_chunk = t if t is None or isinstance(t, str) else t[s:e]
            gx, cam_map, logits = _gradient_pass(
                model, inputs[s:e], t_chunk, layer_mod, create_input_grad=want_input,
                validate=t if s == 0 else None, rows=slice(s, e),
            )
            if return_outputs:
                outs.append(logits)
            if gx is not None:
                grads.append(gx)
            if cam_map is not None:
                cams.append(cam_map)
        result: Dict[str, Tensor] = {}
        if want_input:
            g = _cat(grads)
            if "saliency" in methods:
                result["saliency"] = g.abs()
            if "input_x_gradient" in methods:
                result["input_x_gradient"] = _autograd_ready(inputs) * g
        if want_cam:
            cam = _cat(cams)
            result["grad_cam"] = _upsample(cam, inputs) if upsample else cam
    maps = {m: result[m] for m in methods}
    if return_outputs:
        return maps, _cat(outs)
    return maps


def _cat(parts: List[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def saliency(
    model: nn.Module, inputs: Tensor, target: TargetLike = None, *, chunk_size: Optional[int] = None,
    output: OutputSpec = None,
) -> Tensor:
    """Absolute input gradient of the target output (Captum's ``Saliency``, ``abs=True``).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[2., -1.], [0., 5.]]))
        >>> saliency(net, torch.zeros(1, 2), target=0)
        tensor([[2., 1.]])
    """
    return attribute_many(model, inputs, target, ["saliency"], chunk_size=chunk_size, output=output)["saliency"]


def input_x_gradient(
    model: nn.Module, inputs: Tensor, target: TargetLike = None, *, chunk_size: Optional[int] = None,
    output: OutputSpec = None,
) -> Tensor:
    """Input times the input gradient of the target output (Captum's ``InputXGradient``).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 1, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[2., -1.]]))
        >>> input_x_gradient(net, torch.tensor([[3., 4.]]))
        tensor([[ 6., -4.]])
    """
    return attribute_many(model, inputs, target, ["input_x_gradient"], chunk_size=chunk_size, output=output)[
        "input_x_gradient"
    ]


def grad_cam(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    layer: Union[None, str, nn.Module] = None,
    upsample: bool = True,
    chunk_size: Optional[int] = None,
    output: OutputSpec = None,
) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017) at ``layer`` (default: the last conv layer).

    The map is ``relu(sum_k mean_spatial(dy/dA_k) * A_k)``. With ``upsample=False`` it has the layer's
    resolution, ``(N, 1, *layer_spatial)``, equal to Captum's ``LayerGradCam(...,
    relu_attributions=True)``; with ``upsample=True`` (default) it is interpolated (bilinear for
    images) to the input's spatial size and broadcast over its channels.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 4 * 4, 3))
        >>> grad_cam(net, torch.randn(2, 1, 4, 4), target=1).shape
        torch.Size([2, 1, 4, 4])
        >>> grad_cam(net, torch.randn(2, 1, 4, 4), target=1, layer="0", upsample=False).shape
        torch.Size([2, 1, 4, 4])
    """
    return attribute_many(
        model, inputs, target, ["grad_cam"], layer=layer, upsample=upsample, chunk_size=chunk_size, output=output
    )["grad_cam"]


# ----------------------------------------------------------------------------------------------
# integrated gradients
# ----------------------------------------------------------------------------------------------
def ig_rule(method: str, n_steps: int) -> Tuple[List[float], List[float]]:
    """Step sizes and alphas of an integration rule, as Captum defines them.

    ``riemann_trapezoid`` keeps Captum's weights (``1/n``, halved at both ends) so that results match.
    """
    if not isinstance(n_steps, int) or n_steps < 2:
        raise ValueError(f"n_steps must be an int >= 2, got {n_steps!r}")
    if method == "gausslegendre":
        import numpy as np

        x, w = np.polynomial.legendre.leggauss(n_steps)
        return list(0.5 * w), list(0.5 * (x + 1))
    if method not in IG_RULES:
        raise ValueError(f"unknown integration method {method!r}; use one of {', '.join(IG_RULES)}")
    steps = [1.0 / n_steps] * n_steps
    if method == "riemann_trapezoid":
        steps[0] /= 2
        steps[-1] /= 2
        alphas = torch.linspace(0, 1, n_steps)
    elif method == "riemann_left":
        alphas = torch.linspace(0, 1 - 1 / n_steps, n_steps)
    elif method == "riemann_middle":
        alphas = torch.linspace(1 / (2 * n_steps), 1 - 1 / (2 * n_steps), n_steps)
    else:
        alphas = torch.linspace(1 / n_steps, 1, n_steps)
    return steps, alphas.tolist()


def baseline_like(baseline: Union[None, float, Tensor], inputs: Tensor) -> Tensor:
    """A baseline (``None`` = zeros, a scalar, or a tensor that broadcasts) as a tensor shaped like ``inputs``.

    Example:
        >>> import torch
        >>> baseline_like(0.5, torch.zeros(2, 3)).shape
        torch.Size([2, 3])
    """
    # scalar baselines are broadcast views: no probe-sized buffer
    if baseline is None:
        return torch.zeros((), dtype=inputs.dtype, device=inputs.device).expand(inputs.shape)
    if isinstance(baseline, (int, float)):
        return torch.full((), float(baseline), dtype=inputs.dtype, device=inputs.device).expand(inputs.shape)
    b = torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device)
    try:
        return torch.broadcast_to(b, inputs.shape).detach()
    except RuntimeError:
        raise ValueError(
            f"baseline of shape {tuple(b.shape)} does not broadcast to inputs of shape "
            f"{tuple(inputs.shape)}; pass a scalar, one sample's shape or the inputs' shape"
        ) from None


def _forward_logits(model: nn.Module, x: Tensor, chunk: int) -> Tensor:
    outs = []
    with torch.no_grad():
        for s, e in _chunks(x.shape[0], chunk):
            with sample_rows(slice(s, e)):
                outs.append(_logits(model(x[s:e])))
            _note("forward", e - s)
    return _cat(outs)


def _resolve_predicted(model: nn.Module, x: Tensor, t: Union[None, str, Tensor], chunk: int) -> Optional[Tensor]:
    """``"predicted"`` -> each sample's top class (one forward of ``x``); other targets unchanged."""
    if isinstance(t, str):
        return _predicted(_forward_logits(model, x, chunk))
    return t


def _forward_selected(
    model: nn.Module, x: Tensor, target: Optional[Tensor], chunk: int, samples: Optional[Tensor] = None
) -> Tensor:
    """The target outputs on ``x`` in chunks; ``samples``: which sample each row of ``x`` is (default: row i is i)."""
    outs = []
    with torch.no_grad():
        for s, e in _chunks(x.shape[0], chunk):
            with sample_rows(slice(s, e) if samples is None else samples[s:e]):
                out = model(x[s:e])
            outs.append(select_output(out, None if target is None else target[s:e], target if s == 0 else None))
            _note("forward", e - s)
    return _cat(outs)


@overload
def integrated_gradients(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = ...,
    *,
    baseline: Union[None, float, Tensor] = ...,
    n_steps: int = ...,
    method: str = ...,
    chunk_size: Optional[int] = ...,
    return_convergence_delta: Literal[False] = ...,
    output: OutputSpec = ...,
) -> Tensor: ...


@overload
def integrated_gradients(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = ...,
    *,
    baseline: Union[None, float, Tensor] = ...,
    n_steps: int = ...,
    method: str = ...,
    chunk_size: Optional[int] = ...,
    return_convergence_delta: Literal[True],
    output: OutputSpec = ...,
) -> Tuple[Tensor, Tensor]: ...


@overload
def integrated_gradients(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = ...,
    *,
    baseline: Union[None, float, Tensor] = ...,
    n_steps: int = ...,
    method: str = ...,
    chunk_size: Optional[int] = ...,
    return_convergence_delta: bool,
    output: OutputSpec = ...,
) -> Union[Tensor, Tuple[Tensor, Tensor]]: ...


def integrated_gradients(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    baseline: Union[None, float, Tensor] = None,
    n_steps: int = 32,
    method: str = "gausslegendre",
    chunk_size: Optional[int] = None,
    return_convergence_delta: bool = False,
    output: OutputSpec = None,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Integrated gradients (Sundararajan et al. 2017) with Captum's integration rules.

    ``attr = (x - baseline) * sum_i w_i * grad f_t(baseline + a_i (x - baseline))``.

    Args:
        baseline: ``None`` (zeros), a scalar, or a tensor broadcastable to ``inputs``.
        n_steps: number of points on the path (forward+backward rows: ``n_steps * N``).
        method: ``"gausslegendre"`` (default, as Captum) or ``"riemann_left|right|middle|trapezoid"``.
        chunk_size: rows per forward+backward pass (default: ``N``).
        return_convergence_delta: also return the per-sample completeness error
            ``sum(attr) - (f_t(x) - f_t(baseline))`` (Captum's convergence delta).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 1, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[2., -1.]]))
        >>> attr, delta = integrated_gradients(net, torch.tensor([[3., 4.]]),
        ...                                    return_convergence_delta=True)
        >>> attr.round(decimals=4), delta.abs() < 1e-5
        (tensor([[ 6., -4.]]), tensor([True]))
    """
    _check_inputs(inputs)
    model = with_output(model, output)
    steps, alphas = ig_rule(method, n_steps)
    n = inputs.shape[0]
    chunk = _chunk_size(chunk_size, n)
    with explaining(model):
        x = _autograd_ready(inputs)  # a normal tensor even when called under inference mode
        base = baseline_like(baseline, x)
        # x - 0 is x, bit for bit: the default (zero) baseline needs no difference buffer
        diff = x if baseline is None else x - base
        total = torch.zeros_like(x)
        rows = n * len(alphas)
        alpha_t = torch.tensor(alphas, dtype=x.dtype, device=x.device)
        step_t = torch.tensor(steps, dtype=x.dtype, device=x.device)
        view = (-1,) + (1,) * (x.dim() - 1)
        t = _resolve_predicted(model, x, _target_index(target, n, x.device), chunk)
        for s, e in _chunks(rows, chunk):
            validate = t if s == 0 else None
            if s // n == (e - 1) // n:
                # the chunk lies within one step of the path: slices instead of gathers (same numbers)
                k0, a, b = s // n, s % n, (e - 1) % n + 1
                path = base[a:b] + alpha_t[k0] * diff[a:b]
                gx, _, _ = _gradient_pass(
                    model, path, None if t is None else t[a:b], validate=validate, copy=False, rows=slice(a, b)
                )
                assert gx is not None
                total[a:b] += gx.mul_(step_t[k0])  # gx is this pass's own buffer: scaled in place
                del gx, path  # not held through the next pass
                continue
            idx = torch.arange(s, e, device=x.device)
            k, i = idx // n, idx % n
            path = base[i] + alpha_t[k].view(view) * diff[i]
            gx, _, _ = _gradient_pass(model, path, None if t is None else t[i], validate=validate, copy=False, rows=i)
            assert gx is not None
            total.index_add_(0, i, gx.mul_(step_t[k].view(view)))
            del gx, path
        attr = diff * total
        if not return_convergence_delta:
            return attr
        tt = None if t is None else torch.cat([t, t])
        f = _forward_selected(model, torch.cat([x, base]), tt, chunk, torch.arange(n, device=x.device).repeat(2))
        delta = attr.reshape(n, -1).sum(1) - (f[:n] - f[n:])
    return attr, delta


# ----------------------------------------------------------------------------------------------
# smoothgrad
# ----------------------------------------------------------------------------------------------
class _NoiseStream:
    """Standard normal numbers, ``total`` of them, handed out in pieces that equal one big draw.

    ``take(k)`` returns the next ``k`` numbers of ``torch.empty(total).normal_(generator=g)`` without
    drawing them all at once. On a CPU generator that holds because the CPU kernel turns uniforms into
    normals in blocks of 16 (a tail shorter than 16 redoes the last 16 of the tensor): draws whose
    sizes are multiples of 16, the last one reaching ``total`` with at least 16 numbers, give the same
    numbers as one draw (tests/test_perf_paths.py checks it for every dtype). Other devices' kernels
    lay numbers out by launch geometry, so there the whole draw is made once and sliced.
    """

    def __init__(self, total: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device):
        self.left, self.generator, self.dtype, self.device = total, generator, dtype, device
        self.buffer: Optional[Tensor] = None
        self.streaming = torch.device(device).type == "cpu" and torch.device(generator.device).type == "cpu"
        if not self.streaming:
            self._draw(total)

    def _draw(self, count: int) -> None:
        new = torch.empty(count, dtype=self.dtype, device=self.device).normal_(0.0, 1.0, generator=self.generator)
        self.left -= count
        self.buffer = new if self.buffer is None or self.buffer.numel() == 0 else torch.cat([self.buffer, new])

    def take(self, k: int) -> Tensor:
        if k == 0:
            return torch.empty(0, dtype=self.dtype, device=self.device)
        held = 0 if self.buffer is None else self.buffer.numel()
        if held < k:
            count = min(self.left, -(-(k - held) // 16) * 16)
            if self.left - count < 16:  # the last draw must reach the end with >= 16 numbers
                count = self.left
            self._draw(count)
        assert self.buffer is not None and self.buffer.numel() >= k
        out, self.buffer = self.buffer[:k], self.buffer[k:]
        if self.buffer.numel() == 0:
            self.buffer = None
        elif self.streaming:  # a few leftover numbers: copy them so the handed-out draw can be freed
            self.buffer = self.buffer.clone()
        return out

    def skip(self, k: int) -> None:
        while k > 0:
            n = min(k, 1 << 20)
            self.take(n)
            k -= n

    def finish(self) -> None:
        """Draw (and drop) what is left, so the generator ends where one whole draw leaves it."""
        self.skip(self.left + (0 if self.buffer is None else self.buffer.numel()))


def smoothgrad(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    n_samples: int = 16,
    noise: float = 0.15,
    seed: int = 0,
    generator: Optional[torch.Generator] = None,
    chunk_size: Optional[int] = None,
    shard: Optional[Tuple[int, int]] = None,
    output: OutputSpec = None,
) -> Tensor:
    """SmoothGrad (Smilkov et al. 2017): mean ``|gradient|`` over ``n_samples`` noisy copies.

    Noise is Gaussian with standard deviation ``noise`` in input units (Captum's ``stdevs``), drawn
    from a private ``torch.Generator`` seeded with ``seed`` (or the ``generator`` you pass): the
    global RNG stream is never consumed, and the same seed gives the same map.

    ``shard=(start, total)`` says that ``inputs`` are rows ``start..start+N`` of a ``total``-row probe
    (one rank's share under DDP): the share's rows get their place in the whole probe's noise
    stream, so the sharded maps equal the unsharded ones. A ``generator`` you pass ends where one
    draw for the whole probe leaves it, sharded or not.

    Memory: on a CPU the noise is drawn chunk by chunk (the same numbers as one draw), so one chunk
    of noisy copies is held at a time; on other devices the probe's ``n_samples`` noisy copies are
    drawn at once (their kernels do not give the same numbers in pieces).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 1, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[2., -1.]]))
        >>> smoothgrad(net, torch.zeros(3, 2), n_samples=4)   # a linear model's gradient is constant
        tensor([[2., 1.],
                [2., 1.],
                [2., 1.]])
    """
    _check_inputs(inputs)
    model = with_output(model, output)
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be a standard deviation >= 0, got {noise!r}")
    n = inputs.shape[0]
    chunk = _chunk_size(chunk_size, n)
    with explaining(model):
        x = _autograd_ready(inputs)
        own_generator = generator is None
        if generator is None:
            generator = torch.Generator(device=x.device)
            generator.manual_seed(seed)
        # Same layout and draw order as Captum's NoiseTunnel (sample-major repeat, one normal draw):
        # noisy row r is input r // n_samples plus noise row r of ``normal_(0, 1) * noise + 0`` drawn
        # for the whole probe. The noise is drawn chunk by chunk from a stream that gives exactly
        # those numbers (see ``_NoiseStream``), so memory holds one chunk of noise, not the probe's
        # n_samples copies. A shard skips the rows of the shares before it.
        first, total_rows = (0, n) if shard is None else (int(shard[0]), int(shard[1]))
        if first < 0 or first + n > total_rows:
            raise ValueError(f"shard={shard} does not hold {n} rows")
        row_shape = tuple(x.shape[1:])
        row_numel = math.prod(row_shape)
        stream = _NoiseStream(total_rows * n_samples * row_numel, generator, x.dtype, x.device)
        stream.skip(first * n_samples * row_numel)
        std = torch.full((), float(noise), dtype=x.dtype, device=x.device)
        total = torch.zeros_like(x)
        t = _resolve_predicted(model, x, _target_index(target, n, x.device), chunk)
        for s, e in _chunks(n * n_samples, chunk):
            noisy = stream.take((e - s) * row_numel).view((e - s,) + row_shape)
            noisy.mul_(std).add_(0.0)
            i = torch.arange(s, e, device=x.device) // n_samples
            if s % n_samples == 0 and e % n_samples == 0:  # whole inputs: add each one to its block of rows
                noisy.view((-1, n_samples) + row_shape).add_(x[s // n_samples : e // n_samples].unsqueeze(1))
            else:
                noisy.add_(x.index_select(0, i))
            gx, _, _ = _gradient_pass(
                model, noisy, None if t is None else t[i], validate=t if s == 0 else None, copy=False, rows=i
            )
            assert gx is not None
            del noisy
            total.index_add_(0, i, gx.abs_())  # gx is this pass's own buffer
            del gx
        if not own_generator:  # the caller's generator moves on as far as one whole-probe draw takes it
            stream.finish()
    return total / n_samples


# ----------------------------------------------------------------------------------------------
# occlusion
# ----------------------------------------------------------------------------------------------
def _window(window: Union[None, int, Sequence[int]], shape: Sequence[int], name: str) -> Tuple[int, ...]:
    """Normalise a window/stride to one int per non-batch dimension."""
    dims = len(shape)
    if window is None:
        if dims == 1:
            return (1,)
        # channels whole, each spatial dim cut in about 8 parts
        return (shape[0],) + tuple(max(1, d // 8) for d in shape[1:])
    if isinstance(window, int):
        if dims == 1:
            return (window,)
        return (shape[0],) + (window,) * (dims - 1)
    w = tuple(int(v) for v in window)
    if len(w) == dims - 1 and dims > 1:
        w = (shape[0],) + w
    if len(w) != dims:
        raise ValueError(
            f"occlusion {name} {tuple(window)} does not fit inputs with per-sample shape {tuple(shape)}: "
            f"give {dims} sizes (or {dims - 1} spatial ones)"
        )
    return w


def occlusion(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    window: Union[None, int, Sequence[int]] = None,
    stride: Union[None, int, Sequence[int]] = None,
    baseline: Union[float, Tensor] = 0.0,
    chunk_size: Optional[int] = None,
    output: OutputSpec = None,
) -> Tensor:
    """Occlusion (Zeiler & Fergus 2014), as Captum's ``Occlusion``.

    A window slides over each sample (``stride`` apart, the last one clipped at the edge); each
    position is replaced by ``baseline`` and the drop of the target output ``f(x) - f(x_occluded)``
    is credited to every feature in the window; a feature's attribution is the mean over the
    windows that cover it.

    Args:
        window: one size per non-batch dimension, the spatial sizes only (channels whole), or an int
            for every spatial dimension. Default: whole channels x 1/8 of each spatial size; 1 for
            tabular inputs.
        stride: as ``window``; default equal to ``window``.
        baseline: value (or tensor broadcastable to the inputs) put in the occluded window.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 1, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[1., -2., 3.]]))
        >>> occlusion(net, torch.ones(1, 3))   # linear model: occluding feature i drops w_i * x_i
        tensor([[ 1., -2.,  3.]])
    """
    _check_inputs(inputs)
    model = with_output(model, output)
    n = inputs.shape[0]
    shape = tuple(inputs.shape[1:])
    win = _window(window, shape, "window")
    strd = _window(stride, shape, "stride") if stride is not None else win
    for d, w, s in zip(shape, win, strd):
        if w < d and s > w:
            raise ValueError(
                f"occlusion stride {strd} is larger than the window {win}: features between windows would "
                "never be occluded; use a stride <= the window in every dimension the window does not cover"
            )
        if w < 1 or s < 1 or w > d:
            raise ValueError(
                f"occlusion window {win} with stride {strd} does not fit per-sample shape {shape}: "
                "each size must be between 1 and the input size"
            )
    counts = [math.ceil((d - w) / s) + 1 for d, w, s in zip(shape, win, strd)]
    positions = torch.cartesian_prod(*[torch.arange(c) for c in counts]).reshape(-1, len(shape))
    masks = torch.zeros((positions.shape[0],) + shape, dtype=torch.bool)
    for p, pos in enumerate(positions.tolist()):
        sl = tuple(slice(q * s, min(q * s + w, d)) for q, s, w, d in zip(pos, strd, win, shape))
        masks[(p,) + sl] = True
    chunk = _chunk_size(chunk_size, n)
    with explaining(model), torch.no_grad():
        x = _autograd_ready(inputs)
        masks = masks.to(x.device)
        base = baseline_like(baseline, x)
        total = torch.zeros_like(x)
        cover = masks.sum(0).to(x.dtype)
        t = _target_index(target, n, x.device)
        if isinstance(t, str):  # "predicted": read off the unoccluded forward that is needed anyway
            logits = _forward_logits(model, x, chunk)
            t = _predicted(logits)
            f0 = select_output(logits, t, None)
        else:
            f0 = _forward_selected(model, x, t, chunk)
        rows = positions.shape[0] * n
        column = (-1,) + (1,) * len(shape)
        for s, e in _chunks(rows, chunk):
            if s // n == (e - 1) // n:
                # the chunk occludes one window position: slices and a broadcast mask (same numbers)
                p0, a, b = s // n, s % n, (e - 1) % n + 1
                m = masks[p0]
                occluded = torch.where(m, base[a:b], x[a:b])
                with sample_rows(slice(a, b)):
                    f = select_output(model(occluded), None if t is None else t[a:b], None)
                _note("forward", e - s)
                total[a:b] += (f0[a:b] - f).view(column) * m.to(x.dtype)
                continue
            idx = torch.arange(s, e, device=x.device)
            where, i = idx // n, idx % n
            m = masks[where]
            occluded = torch.where(m, base[i], x[i])
            with sample_rows(i):
                f = select_output(model(occluded), None if t is None else t[i], None)
            _note("forward", e - s)
            drop = (f0[i] - f).view(column)
            total.index_add_(0, i, drop * m.to(x.dtype))
    return total / cover
