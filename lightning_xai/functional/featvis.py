"""Feature visualisation by activation maximisation, in pure torch.

What input makes the model say "class 3", or makes channel 5 of ``conv1`` fire? Start from a small
seeded input and climb the gradient of that output with respect to the input (Erhan et al. 2009),
with the regularisers that Olah, Mordvintsev and Schubert survey in "Feature Visualization"
(Distill, 2017) to keep the picture from turning into high-frequency noise:

- **L2** (``l2``): a penalty ``l2 * ||x - centre||^2`` per image, where the centre is the middle of
  ``value_range`` (0 without one). For a linear model ``f(x) = W x + b`` the optimum of class ``c``
  is ``centre + W[c] / (2 * l2)``: the class's weight row, the known answer the tests check.
- **Jitter** (``jitter``): before each forward pass the image is shifted by a random whole number of
  pixels in ``[-jitter, jitter]`` along each spatial axis (circularly, ``torch.roll``), so that the
  picture must work wherever it lands (transformation robustness). Shifts come from a private
  generator seeded with ``seed``.
- **Blur** (``blur``): the standard deviation, in pixels, of a Gaussian blur applied to the image
  after every optimiser step (the choice of Yosinski et al. 2015: a transformation of the image,
  not a penalty in the loss, so it costs no extra backward). With the ``"fft"`` parametrisation the
  blur multiplies the spectrum by its transfer function ``exp(-2 pi^2 sigma^2 |f|^2)``, which is the
  same (circular) blur of the image before the sigmoid.
- **Decorrelated parametrisation** (``parametrization="fft"``): the optimiser works on a spectrum,
  not on pixels. The image is ``lo + (hi - lo) * sigmoid(irfft(spectrum * scale))`` with ``scale``
  proportional to ``1 / |frequency|`` (clamped at the lowest non-zero frequency) and normalised to
  unit mean square, so that a step of the optimiser changes low frequencies as much as high ones
  and the sigmoid keeps the picture inside ``value_range`` (default ``(0, 1)``). Spatial
  decorrelation only: channels are left as they are (no colour decorrelation, whose statistics
  would depend on the data set).

With ``jitter=0``, ``blur=0``, ``parametrization="pixel"`` and no ``value_range`` it is plain
gradient ascent on the raw input values with the L2 penalty (no squashing, no clipping), from
``centre + 0.01 * N(0, 1)``. ``value_range`` with ``"pixel"`` projects the image into the range after
every step (clamp), so that a picture is a valid input (per-feature bounds for tabular inputs).

The optimiser is Adam over the input (a leaf tensor; the update of ``torch.optim.Adam`` with its
defaults, written out): no model parameter is touched. The model is
run in eval mode with its parameters frozen (:func:`~lightning_xai.functional.explaining`), so no
parameter ``.grad`` is written and BatchNorm statistics do not move; the global RNG is not used.
All targets are optimised together in one batch, each row towards its own target, from the same
starting image (drawn from ``seed``) and with the same shifts: a target's picture does not depend
on which other targets share the batch, and the same seed gives the same start and shifts at every
epoch, so pictures of different epochs are comparable.

Targets: a class index (the model's output for that class: the logit, before any softmax, as Olah
et al. recommend), a ``(layer_name, channel)`` pair (the mean over positions of that channel of the
named module's output, read with a forward hook: channel is dimension 1), or a list of them.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ._guard import computing_in, explaining
from .structured import _Flat, input_entries, structure_like

__all__ = [
    "PARAMETRIZATIONS",
    "FeatvisTarget",
    "activation_maximization",
    "check_featvis_options",
    "check_featvis_units",
    "featvis_objective",
    "joint_inputs",
    "resolve_featvis_targets",
    "unit_width",
]

#: ``parametrization`` choices of :func:`activation_maximization`
PARAMETRIZATIONS = ("pixel", "fft")

#: the standard deviation of the seeded start (pixels, or spectrum coefficients for ``"fft"``)
INIT_STD = 0.01

FeatvisTarget = Union[int, Tuple[str, int]]
ValueRange = Optional[Tuple[Union[float, Tensor], Union[float, Tensor]]]


# ------------------------------------------------------------------------------------------ arguments
def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _one_target(t: Any) -> FeatvisTarget:
    if _is_int(t):
        if t < 0:
            raise ValueError(f"a class index must be >= 0, got {t}")
        return int(t)
    if isinstance(t, (tuple, list)) and len(t) == 2 and isinstance(t[0], str) and _is_int(t[1]):
        if not t[0]:
            raise ValueError("a unit target needs a layer name: ('conv1', 3), not ('', 3)")
        if t[1] < 0:
            raise ValueError(f"a channel index must be >= 0, got {tuple(t)}")
        return (t[0], int(t[1]))
    raise TypeError(
        f"a feature-visualisation target is a class index (int) or a (layer_name, channel) pair, got {t!r}"
    )


def resolve_featvis_targets(target: Any) -> List[FeatvisTarget]:
    """The targets as a list: ``3 -> [3]``, ``("conv1", 2) -> [("conv1", 2)]``, lists element-wise.

    Example:
        >>> resolve_featvis_targets([0, ("features.0", 5)])
        [0, ('features.0', 5)]
    """
    if _is_int(target) or (isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], str)):
        return [_one_target(target)]
    if isinstance(target, (list, tuple)) and len(target) > 0:
        return [_one_target(t) for t in target]
    raise TypeError(
        "target must be a class index, a (layer_name, channel) pair, or a non-empty list of them; "
        f"got {target!r}"
    )


def check_featvis_options(
    steps: Any = 256, lr: Any = 0.05, l2: Any = 1e-3, jitter: Any = 0, blur: Any = 0, parametrization: Any = "pixel",
    seed: Any = 0,
) -> Dict[str, Any]:
    """Validate the options of :func:`activation_maximization`; returns them normalised.

    Example:
        >>> check_featvis_options(steps=0)
        Traceback (most recent call last):
        ...
        ValueError: steps must be an int >= 1, got 0
    """
    if not _is_int(steps) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    for name, value, strict in (("lr", lr, True), ("l2", l2, False), ("blur", blur, False)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or (
            value <= 0 if strict else value < 0
        ):
            raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} 0, got {value!r}")
    if not _is_int(jitter) or jitter < 0:
        raise ValueError(f"jitter must be an int >= 0 (pixels), got {jitter!r}")
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization must be one of {', '.join(map(repr, PARAMETRIZATIONS))}, got {parametrization!r}")
    if not _is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return dict(steps=int(steps), lr=float(lr), l2=float(l2), jitter=int(jitter), blur=float(blur),
                parametrization=parametrization, seed=int(seed))


def unit_width(module: nn.Module) -> Optional[int]:
    """The number of channels a module outputs when its type says so (conv, linear, norm), else None."""
    for attr in ("out_channels", "out_features", "num_features"):
        value = getattr(module, attr, None)
        if value is not None and _is_int(value):
            return int(value)
    return None


def check_featvis_units(model: nn.Module, targets: Sequence[FeatvisTarget]) -> Dict[str, nn.Module]:
    """The modules named by the unit targets; a ValueError naming the candidates for an unknown
    layer, or the valid range for a channel beyond a layer's known width."""
    modules = dict(model.named_modules())
    found: Dict[str, nn.Module] = {}
    for t in targets:
        if not isinstance(t, tuple):
            continue
        name, channel = t
        if name not in modules or not name:
            candidates = [n for n in modules if n]
            raise ValueError(
                f"layer {name!r} not found in {type(model).__name__}; layers: {', '.join(candidates[:40])}"
                + (" ..." if len(candidates) > 40 else "")
            )
        width = unit_width(modules[name])
        if width is not None and channel >= width:
            raise ValueError(
                f"channel {channel} of layer {name!r} is out of range: it has {width} channels (valid 0..{width - 1})"
            )
        found[name] = modules[name]
    return found


# ------------------------------------------------------------------------------------------ the objective
class _Objective:
    """Each row's objective (its class logit, or its unit's mean activation) from one forward pass."""

    def __init__(self, model: nn.Module, targets: Sequence[FeatvisTarget], device: torch.device) -> None:
        self.model = model
        self.n = len(targets)
        self.modules = check_featvis_units(model, targets)
        cls = [(i, t) for i, t in enumerate(targets) if not isinstance(t, tuple)]
        self.class_rows = torch.tensor([i for i, _ in cls], dtype=torch.long, device=device)
        self.classes = torch.tensor([c for _, c in cls], dtype=torch.long, device=device)
        self.units: Dict[str, Tuple[Tensor, Tensor]] = {}
        for name in self.modules:
            pairs = [(i, t[1]) for i, t in enumerate(targets) if isinstance(t, tuple) and t[0] == name]
            self.units[name] = (
                torch.tensor([i for i, _ in pairs], dtype=torch.long, device=device),
                torch.tensor([c for _, c in pairs], dtype=torch.long, device=device),
            )
        self.all_rows = len(cls) == self.n
        # the pieces come class rows first, then each layer's rows: ``order`` puts them back in place
        placed = [i for i, _ in cls] + [int(i) for rows, _ in self.units.values() for i in rows.tolist()]
        self.order = None if placed == list(range(self.n)) else torch.tensor(placed, device=device).argsort()
        self.checked = False
        self._values: Dict[str, Tensor] = {}

    def _hook(self, name: str) -> Any:
        rows, channels = self.units[name]

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            if not self.checked:
                if not isinstance(out, Tensor) or out.dim() < 2:
                    raise ValueError(
                        f"layer {name!r} returns {type(out).__name__ if not isinstance(out, Tensor) else tuple(out.shape)}; "
                        "a unit target needs an output of shape (N, channels, ...)"
                    )
                bad = int(channels.max())
                if bad >= out.shape[1]:
                    raise ValueError(
                        f"channel {bad} of layer {name!r} is out of range: it has {out.shape[1]} channels "
                        f"(valid 0..{out.shape[1] - 1})"
                    )
            # reduced here, before a later in-place op (ReLU(inplace=True)) can change the output
            picked = out[rows, channels]
            self._values[name] = picked.reshape(picked.shape[0], -1).mean(1)

        return hook

    def __call__(self, inputs: Tensor) -> Tensor:
        """``(N,)``: row i's objective for target i."""
        handles = [m.register_forward_hook(self._hook(name)) for name, m in self.modules.items()]
        try:
            self._values = {}
            out = self.model(inputs)
        finally:
            for h in handles:
                h.remove()
        pieces: List[Tensor] = []
        if len(self.classes):
            logits = out[0] if isinstance(out, (tuple, list)) else out
            if not isinstance(logits, Tensor):
                raise ValueError(f"{type(self.model).__name__} returns {type(logits).__name__}; class targets need a tensor")
            if logits.dim() == 1:
                logits = logits[:, None]
            if not self.checked:
                if logits.dim() != 2:
                    raise ValueError(
                        f"{type(self.model).__name__} returns outputs of shape {tuple(logits.shape)}; class targets "
                        "need (N, classes) (or (N,)) outputs"
                    )
                k = logits.shape[1]
                bad = int(self.classes.max())
                if bad >= k:
                    raise ValueError(
                        f"class {bad} is out of range: {type(self.model).__name__} returns {k} "
                        f"class{'es' if k > 1 else ''} (valid 0..{k - 1})"
                    )
            rows = logits if self.all_rows else logits[self.class_rows]
            pieces.append(rows.gather(1, self.classes[:, None])[:, 0])
        pieces.extend(self._values[name] for name in self.units)
        values = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        if self.order is not None:
            values = values[self.order]  # back to the targets' order
        self.checked = True
        return values


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def featvis_objective(model: nn.Module, inputs: Tensor, target: Any) -> Tensor:
    """The objective that :func:`activation_maximization` climbs, evaluated on ``inputs``: ``(N,)``,
    row i for target i (the class logit, or the unit's mean activation). Eval mode, no gradient.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.eye(2, 3)); _ = net.bias.zero_()
        >>> featvis_objective(net, torch.tensor([[1., 2., 3.], [1., 2., 3.]]), [0, 1])
        tensor([1., 2.])
    """
    targets = resolve_featvis_targets(target)
    if inputs.shape[0] != len(targets):
        raise ValueError(f"{inputs.shape[0]} inputs for {len(targets)} targets: pass one input per target")
    with explaining(model), torch.no_grad():
        return _Objective(model, targets, inputs.device)(inputs).detach()


# ------------------------------------------------------------------------------------------ transforms
def _spatial_dims(input_shape: Sequence[int]) -> int:
    """Spatial axes (at most two, the last ones) of ``(C, *spatial)`` inputs; 0 for ``(F,)`` rows."""
    return min(2, len(input_shape) - 1)


def _gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur(x: Tensor, kernel: Tensor, dims: int) -> Tensor:
    """Separable Gaussian blur over the last ``dims`` axes (edges replicated), channel by channel."""
    k = kernel.numel()
    r = k // 2
    shape = x.shape
    flat = x.reshape(-1, 1, *shape[-dims:])
    if dims == 1:
        out = nn.functional.conv1d(nn.functional.pad(flat, (r, r), mode="replicate"), kernel.view(1, 1, k))
    else:
        out = nn.functional.pad(flat, (r, r, r, r), mode="replicate")
        out = nn.functional.conv2d(out, kernel.view(1, 1, k, 1))
        out = nn.functional.conv2d(out, kernel.view(1, 1, 1, k))
    return out.reshape(shape)


def _frequencies(sizes: Sequence[int], device: torch.device, dtype: torch.dtype) -> Tensor:
    """``|f|`` (cycles per pixel) on the grid of ``torch.fft.rfftn`` of an image of ``sizes``."""
    if len(sizes) == 1:
        return torch.fft.rfftfreq(sizes[0], device=device, dtype=dtype)
    fy = torch.fft.fftfreq(sizes[0], device=device, dtype=dtype)[:, None]
    fx = torch.fft.rfftfreq(sizes[1], device=device, dtype=dtype)[None, :]
    return torch.sqrt(fy * fy + fx * fx)


def _bounds(value_range: ValueRange, input_shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    lo, hi = value_range  # type: ignore[misc]
    lo_t = torch.as_tensor(lo, dtype=dtype).to(device)
    hi_t = torch.as_tensor(hi, dtype=dtype).to(device)
    try:
        torch.broadcast_shapes(lo_t.shape, tuple(input_shape))
        torch.broadcast_shapes(hi_t.shape, tuple(input_shape))
    except RuntimeError as err:
        raise ValueError(
            f"value_range bounds of shapes {tuple(lo_t.shape)} and {tuple(hi_t.shape)} do not broadcast to the "
            f"input shape {tuple(input_shape)}"
        ) from err
    if not bool((hi_t > lo_t).all()) or not bool(torch.isfinite(lo_t).all() and torch.isfinite(hi_t).all()):
        raise ValueError("value_range must be finite (lo, hi) with hi > lo everywhere")
    return lo_t, hi_t


class _Adam:
    """Adam (Kingma & Ba 2015) on one tensor, as ``torch.optim.Adam`` with its defaults (betas 0.9 and
    0.999, eps 1e-8, no weight decay) computes it, without the optimiser's per-step bookkeeping, which
    costs more than the update itself on an input-sized tensor."""

    def __init__(self, param: Tensor, lr: float, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.t = 0

    def step(self, grad: Tensor) -> None:
        b1, b2 = self.betas
        self.t += 1
        self.m.lerp_(grad, 1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.v.sqrt() / math.sqrt(1 - b2**self.t)).add_(self.eps)
        self.param.addcdiv_(self.m, denom, value=-self.lr / (1 - b1**self.t))


# ------------------------------------------------------------------------------------------ the method
def joint_inputs(model: nn.Module, inputs: Any) -> Tuple[nn.Module, int, Callable[[Tensor], Any]]:
    """A model of several floating-point inputs as a model of one flat vector, for activation maximisation.

    Returns ``(flat_model, size, split)``: ``flat_model`` takes ``(K, size)`` rows (every input flattened
    and concatenated, in the inputs' order) and calls ``model(*inputs)`` or ``model(**inputs)``; ``split``
    turns such rows back into the inputs' structure. ``inputs`` (a tuple or dict of ``(N, ...)`` tensors)
    gives only the structure and shapes. Integer inputs (token ids, masks) cannot be optimised: a
    ``ValueError`` names them. Layer names stay the model's own (unit targets read the same modules).

    Example:
        >>> class Two(nn.Module):
        ...     def forward(self, a, b):
        ...         return a.sum(1, keepdim=True) + 2 * b.sum((1, 2)).unsqueeze(1)
        >>> flat, size, split = joint_inputs(Two(), {"a": torch.zeros(1, 3), "b": torch.zeros(1, 2, 2)})
        >>> size, flat(torch.ones(1, size)).item(), {k: tuple(v.shape) for k, v in split(torch.ones(2, size)).items()}
        (7, 11.0, {'a': (2, 3), 'b': (2, 2, 2)})
    """
    entries = input_entries(inputs)
    fixed = [str(k) for k, t in entries if not t.is_floating_point()]
    if fixed:
        raise ValueError(
            f"inputs {', '.join(fixed)} hold integers (token ids, masks), which cannot be optimised; activation "
            "maximisation takes models whose inputs are all floating-point"
        )
    keys = [k for k, _ in entries]
    shapes = [tuple(int(d) for d in t.shape[1:]) for _, t in entries]
    sizes = [math.prod(s) for s in shapes]
    flat = _Flat(model, inputs, keys, shapes, {})

    def split(rows: Tensor) -> Any:
        parts = rows.split(sizes, dim=1)
        return structure_like(inputs, {k: p.reshape((rows.shape[0], *s)) for k, p, s in zip(keys, parts, shapes)})

    return flat, sum(sizes), split


def activation_maximization(
    model: nn.Module,
    input_shape: Sequence[int],
    target: Any,
    *,
    steps: int = 256,
    lr: float = 0.05,
    l2: float = 1e-3,
    jitter: int = 0,
    blur: float = 0,
    parametrization: str = "pixel",
    seed: int = 0,
    value_range: ValueRange = None,
) -> Tensor:
    """Inputs that maximise each target, optimised together: ``(len(targets), *input_shape)``.

    Args:
        model: the network (left as it was: flags, parameters, buffers, hooks, global RNG).
        input_shape: one input's shape without the batch axis, e.g. ``(1, 8, 8)`` or ``(6,)``.
        target: a class index, a ``(layer_name, channel)`` pair, or a list of them.
        steps: Adam steps; lr: Adam's learning rate.
        l2: weight of the L2 penalty ``||x - centre||^2`` (centre: the middle of ``value_range``, or 0).
        jitter: largest random shift in pixels along each spatial axis before each forward (0: none).
        blur: standard deviation in pixels of the Gaussian blur applied after each step (0: none).
        parametrization: ``"pixel"`` (the raw input values) or ``"fft"`` (a 1/f-scaled spectrum
            through a sigmoid into ``value_range``); see the module's documentation.
        seed: seeds the private generator of the starting point and the shifts.
        value_range: ``(lo, hi)``, numbers or tensors that broadcast to ``input_shape`` (per-feature
            bounds): ``"pixel"`` clamps into it after each step; ``"fft"`` maps the sigmoid onto it
            (default ``(0, 1)``).

    Returns the optimised inputs, detached, on the model's device, in float32 (or the parameters'
    dtype when higher).

    Example:
        >>> net = nn.Linear(4, 2)
        >>> x = activation_maximization(net, (4,), 1, l2=0.5, steps=200)
        >>> torch.nn.functional.cosine_similarity(x[0], net.weight[1], dim=0) > 0.99
        tensor(True)
    """
    opts = check_featvis_options(steps, lr, l2, jitter, blur, parametrization, seed)
    targets = resolve_featvis_targets(target)
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be one input's shape without the batch axis, e.g. (1, 28, 28); got {input_shape!r}")
    dims = _spatial_dims(shape)
    if dims == 0 and (opts["jitter"] or opts["blur"] or parametrization == "fft"):
        raise ValueError(
            f"jitter, blur and parametrization='fft' act on spatial axes; inputs of shape {shape} have none "
            "(use them with (C, L) or (C, H, W) inputs)"
        )
    device = _model_device(model)
    n = len(targets)
    g = torch.Generator().manual_seed(opts["seed"])
    with explaining(model), computing_in(model, torch.float32, device.type) as dtype:
        dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        objective = _Objective(model, targets, device)
        if value_range is None and parametrization == "fft":
            value_range = (0.0, 1.0)
        lo, hi = _bounds(value_range, shape, device, dtype) if value_range is not None else (None, None)
        centre: Any = 0.0 if lo is None or hi is None else (lo + hi) / 2
        kernel = _gaussian_kernel(opts["blur"], device, dtype) if opts["blur"] > 0 else None
        spatial = shape[len(shape) - dims:]
        if parametrization == "pixel":
            start = INIT_STD * torch.randn((1, *shape), generator=g, dtype=torch.float32).expand(n, *shape)
            param = (start.to(device=device, dtype=dtype) + centre).detach().contiguous().requires_grad_(True)

            def image() -> Tensor:
                return param
        else:
            freqs = _frequencies(spatial, device, dtype)
            scale = 1.0 / freqs.clamp(min=1.0 / max(spatial))
            scale = scale / scale.pow(2).mean().sqrt()
            transfer = torch.exp(-2 * math.pi**2 * opts["blur"] ** 2 * freqs**2) if opts["blur"] > 0 else None
            fshape = (*shape[: len(shape) - dims], *freqs.shape, 2)
            start = INIT_STD * torch.randn((1, *fshape), generator=g, dtype=torch.float32).expand(n, *fshape)
            param = start.to(device=device, dtype=dtype).contiguous().requires_grad_(True)
            axes = tuple(range(-dims, 0))
            assert lo is not None and hi is not None
            low, high = lo, hi

            def image() -> Tensor:
                spectrum = torch.view_as_complex(param) * scale
                raw = torch.fft.irfftn(spectrum, s=spatial, dim=axes, norm="ortho")
                return low + (high - low) * torch.sigmoid(raw)

        # every shift drawn up front from the private generator: the same sequence every call
        shifts = (
            torch.randint(-opts["jitter"], opts["jitter"] + 1, (opts["steps"], dims), generator=g).tolist()
            if opts["jitter"] else None
        )
        adam = _Adam(param, opts["lr"])
        for step in range(opts["steps"]):
            x = image()
            seen = torch.roll(x, shifts=tuple(shifts[step]), dims=tuple(range(-dims, 0))) if shifts else x
            loss = -objective(seen).sum()
            if opts["l2"] > 0 and parametrization == "fft":
                loss = loss + opts["l2"] * (x - centre).pow(2).sum()
            (grad,) = torch.autograd.grad(loss, param)
            with torch.no_grad():
                if opts["l2"] > 0 and parametrization == "pixel":  # the penalty's gradient, added directly
                    grad.add_(param - centre, alpha=2 * opts["l2"])
                adam.step(grad)
                if parametrization == "pixel":
                    if kernel is not None:
                        param.copy_(_blur(param, kernel, dims))
                    if lo is not None and hi is not None:
                        param.copy_(torch.maximum(torch.minimum(param, hi), lo))
                elif transfer is not None:
                    param.mul_(transfer[..., None])
        with torch.no_grad():
            return image().detach().clone()
