"""The numbers behind the explanation sanity checks, in pure torch.

Each function takes attribution maps (and masks, or a model) and returns per-sample values or one
summary number; :mod:`lightning_xai.checks` turns them into pass/fail results and
:class:`~lightning_xai.callbacks.SanityGate` acts on them during training.

- :func:`spearman` and :func:`ssim`: rank correlation (scipy's ``spearmanr``, ties averaged) and
  structural similarity (scikit-image's ``structural_similarity`` with a uniform 7x7 window and
  sample covariance) of each row of two batches;
- :func:`map_similarity`: similarity of ``|maps|`` as the parameter-randomisation test uses it;
- :func:`randomized_copy`, :func:`top_layers`, :func:`parameter_randomization`: Adebayo et al. (2018)
  model-parameter randomisation test (MPRT) on a copy of the model;
- :func:`relevance_mass`, :func:`region_mass`, :func:`pointing_game`: localisation of
  ``|attribution|`` with respect to ground-truth masks (Arras et al. 2022; Zhang et al. 2016);
- :func:`completeness_error`, :func:`ig_completeness`: how far integrated gradients are from summing
  to ``f(x) - f(baseline)``.

Degenerate inputs have defined values (documented per function); NaN in the inputs gives NaN out,
never a silent number.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ._guard import named_modules
from .attribution import integrated_gradients
from .drift import DegenerateInputWarning, map_ssim, spearman
from .structured import input_entries, input_names, is_structured, map_tensors

__all__ = [
    "SIMILARITIES",
    "pool_maps",
    "map_similarity",
    "map_similarity_per_input",
    "top_layers",
    "randomized_copy",
    "parameter_randomization",
    "relevance_mass",
    "region_mass",
    "pointing_game",
    "completeness_error",
    "ig_completeness",
]

#: Similarity measures the randomisation checks accept.
SIMILARITIES: Tuple[str, ...] = ("spearman", "ssim")

ExplainFn = Callable[[nn.Module, Any, Optional[Tensor]], Any]


# ----------------------------------------------------------------------------------------------
# similarity of two batches of maps
# ----------------------------------------------------------------------------------------------
def _rows(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).double()


def pool_maps(maps: Tensor) -> Tensor:
    """``|maps|`` summed over the channel axis for image maps ``(N, C, H, W)`` -> ``(N, H, W)``.

    Other shapes are returned as ``|maps|`` unchanged.
    """
    m = maps.detach().abs()
    return m.sum(1) if m.dim() == 4 else m


def map_similarity(a: Any, b: Any, similarity: str = "spearman") -> Tensor:
    """Per-sample similarity of ``|a|`` and ``|b|``, as in the randomisation tests (Adebayo et al. 2018).

    Image maps are pooled over channels (:func:`pool_maps`). ``"spearman"`` ranks the pooled maps;
    ``"ssim"`` is :func:`~lightning_xai.functional.map_ssim` (each map scaled to ``[0, 1]`` by its
    maximum; Gaussian window as Wang et al. 2004), the same statistic ``FeatureDriftMonitor`` logs.

    Maps of several inputs (the tuple or dict a probe of several inputs gets, ``None`` for riding
    inputs) are compared input by input (:func:`map_similarity_per_input`) and each sample's value is
    the mean over the attributed inputs: every input counts once, whatever its size, since inputs have
    their own units and a similarity over their concatenation would mostly rank the larger one.

    Degenerate maps (common for Grad-CAM after randomisation) have defined values: for Spearman, a
    constant map against a non-constant one scores 0 (nothing of the ranking survived) and two
    constant maps score 1 (nothing changed); for SSIM an all-zero map stays zero. NaN maps give NaN.

    Example:
        >>> import torch
        >>> a = torch.tensor([[1., -2., 3., 0.]])
        >>> map_similarity(a, -a), map_similarity(a, torch.zeros(1, 4))
        (tensor([1.], dtype=torch.float64), tensor([0.], dtype=torch.float64))
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}; use one of {', '.join(SIMILARITIES)}")
    if is_structured(a) or is_structured(b):
        per_input = map_similarity_per_input(a, b, similarity)
        return torch.stack(list(per_input.values())).mean(0)
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be compared")
    pa, pb = pool_maps(a), pool_maps(b)
    nan = torch.isnan(_rows(pa)).any(1) | torch.isnan(_rows(pb)).any(1)
    if similarity == "spearman":
        rho = spearman(pa, pb, constant="defined")  # constant maps: 1 if both are, else 0 (no warning)
    else:
        if pa.dim() != 3:
            raise ValueError(
                f"ssim compares 2-D maps, but these maps have shape {tuple(a.shape)}; use similarity='spearman' "
                "for tabular or 1-D inputs"
            )
        with warnings.catch_warnings():  # all-zero maps are expected here (Grad-CAM after randomisation)
            warnings.simplefilter("ignore", DegenerateInputWarning)
            rho = map_ssim(pa, pb)
    return torch.where(nan, torch.full_like(rho, float("nan")), rho)


def map_similarity_per_input(a: Any, b: Any, similarity: str = "spearman") -> Dict[str, Tensor]:
    """``{input name: (N,) similarities}`` of two maps of several inputs, one entry per attributed input
    (:func:`map_similarity` on each; riding inputs, ``None`` in the maps, are left out). One tensor of maps
    gives one entry named ``""``.

    Example:
        >>> import torch
        >>> a = (torch.tensor([[1., 2., 3.]]), torch.tensor([[1., 2.]]), None)
        >>> b = (torch.tensor([[3., 2., 1.]]), torch.tensor([[1., 2.]]), None)
        >>> {k: v.tolist() for k, v in map_similarity_per_input(a, b).items()}
        {'input0': [-1.0], 'input1': [1.0]}
        >>> map_similarity(a, b).tolist()
        [0.0]
    """
    if not (is_structured(a) or is_structured(b)):
        return {"": map_similarity(a, b, similarity)}
    if type(a) is not type(b) and not (isinstance(a, Mapping) and isinstance(b, Mapping)):
        raise ValueError(f"maps of different structures ({type(a).__name__}, {type(b).__name__}) cannot be compared")
    left, right = dict(input_entries(a)), dict(input_entries(b))
    if set(left) != set(right):
        raise ValueError(f"maps of different inputs ({sorted(map(str, left))}, {sorted(map(str, right))}) cannot be compared")
    names = dict(zip([k for k, _ in input_entries(a)], input_names(a)))
    result: Dict[str, Tensor] = {}
    for key, ta in left.items():
        tb = right[key]
        if (ta is None) != (tb is None):
            raise ValueError(f"input {names[key]!r} has maps on one side only")
        if ta is not None:
            result[names[key]] = map_similarity(ta, tb, similarity)
    if not result:
        raise ValueError("the maps hold no attributed input to compare")
    return result


# ----------------------------------------------------------------------------------------------
# model parameter randomisation (Adebayo et al. 2018)
# ----------------------------------------------------------------------------------------------
def top_layers(model: nn.Module, k: Optional[int] = None) -> List[str]:
    """Dotted names of the modules that own parameters, from the output back (registration order reversed).

    Registration order stands in for the forward order, as in most models (``nn.Sequential``,
    layers defined in the order they are used). ``k`` keeps the top ``k``. A model with parameters of
    its own (a bare ``nn.Linear``) lists ``""`` last: re-initialising ``""`` re-initialises everything.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> top_layers(net), top_layers(net, 1)
        (['2', '0'], ['2'])
    """
    names = [n for n, m in named_modules(model).items() if any(True for _ in m.parameters(recurse=False))]
    names.reverse()  # a model with parameters of its own (a bare nn.Linear) gets "" last: the whole model
    return names if k is None else names[:k]


def _seed_from(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def _reinit(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise ``module``'s own parameters with its default initialiser, without touching the global RNG.

    The initialiser runs inside ``torch.random.fork_rng`` with the generator of the parameters'
    device seeded from ``generator``, so the global stream (CPU and CUDA) is restored afterwards.
    Modules without ``reset_parameters`` get ``N(0, 0.01)`` weights drawn from ``generator``.
    """
    params = list(module.parameters(recurse=False))
    if not params:
        return
    device = params[0].device
    seed = _seed_from(generator)
    with torch.no_grad():
        if hasattr(module, "reset_parameters"):
            cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda, device_type="cuda"):
                if device.type == "cuda":
                    torch.cuda.default_generators[cuda[0]].manual_seed(seed)
                else:
                    torch.random.default_generator.manual_seed(seed)
                module.reset_parameters()  # type: ignore[operator]
        else:
            g = torch.Generator(device=device).manual_seed(seed)
            for p in params:
                p.copy_(torch.randn(p.shape, generator=g, device=device, dtype=p.dtype) * 0.01)


def randomized_copy(
    model: nn.Module, layers: Sequence[str], generator: Optional[torch.Generator] = None, seed: int = 0
) -> nn.Module:
    """A deep copy of ``model`` with the named layers re-initialised; ``model`` itself is untouched.

    The draws come from ``generator`` (or a private one seeded with ``seed``): the global RNG stream
    is not consumed, and the same seed gives the same copy.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> before = torch.random.get_rng_state()
        >>> copy = randomized_copy(net, ["2"], seed=1)
        >>> torch.equal(copy[0].weight, net[0].weight), torch.equal(copy[2].weight, net[2].weight)
        (True, False)
        >>> torch.equal(before, torch.random.get_rng_state())
        True
    """
    modules = named_modules(model)
    unknown = [name for name in layers if name not in modules]
    if unknown:
        raise ValueError(
            f"layer(s) {', '.join(map(repr, unknown))} not found in {type(model).__name__}; "
            f"layers with parameters, from the top: {', '.join(top_layers(model))}"
        )
    g = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    clone = copy.deepcopy(model)
    for m in clone.modules():
        # a module compiled by Lightning (``trainer.fit(torch.compile(module))``) keeps its compiled forward
        # as an attribute bound to the ORIGINAL module, which the copy would call: use the class's forward
        if getattr(m, "_compiler_ctx", None) and "forward" in m.__dict__:
            del m.__dict__["forward"]
    clone_modules = named_modules(clone)
    for name in layers:
        for sub in clone_modules[name].modules():
            _reinit(sub, g)
    return clone


def parameter_randomization(
    model: nn.Module,
    inputs: Any,
    target: Optional[Tensor],
    explain: ExplainFn,
    layers: Optional[Sequence[str]] = None,
    mode: str = "cascading",
    similarity: str = "spearman",
    seed: int = 0,
    original: Any = None,
) -> Dict[str, Tensor]:
    """Model-parameter randomisation test (Adebayo et al. 2018): how similar do maps stay?

    For each step the named layers of a copy of ``model`` are re-initialised (``"cascading"``: the
    top layer, then the top two, ... in the order given; ``"independent"``: each layer alone), the
    copy is explained with ``explain(model, inputs, target)``, and its maps are compared with the
    original model's maps by :func:`map_similarity`. A method that is sensitive to the model gives
    low similarities; one that ignores the model (an edge detector, the input itself) gives ~1.

    Args:
        explain: ``fn(model, inputs, target) -> maps``.
        layers: dotted layer names, top first (default: :func:`top_layers` of the model).
            Cascading makes one deep copy of the model; independent one per layer.
        original: the original model's maps when already computed.

    Returns:
        ``{step: (N,) similarities}``, with step the last layer randomised in that step.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
        >>> same = parameter_randomization(net, x, None, lambda m, x, t: x)   # ignores the model
        >>> {k: v.tolist() for k, v in same.items()}
        {'2': [1.0, 1.0, 1.0, 1.0], '0': [1.0, 1.0, 1.0, 1.0]}
    """
    if mode not in ("cascading", "independent"):
        raise ValueError(f"mode must be 'cascading' or 'independent', got {mode!r}")
    names = list(top_layers(model) if layers is None else layers)
    if not names:
        raise ValueError(f"{type(model).__name__} has no layers with parameters to randomise")
    g = torch.Generator().manual_seed(int(seed))
    if original is None:
        original = explain(model, inputs, target)
    original = map_tensors(lambda t: t.detach(), original)
    result: Dict[str, Tensor] = {}
    cascade: Optional[nn.Module] = None
    for name in names:
        if mode == "cascading":
            # one copy, randomised one more layer per step
            if cascade is None:
                cascade = randomized_copy(model, [name], generator=g)
            else:
                for sub in named_modules(cascade)[name].modules():
                    _reinit(sub, g)
            clone = cascade
        else:
            clone = randomized_copy(model, [name], generator=g)
        maps = map_tensors(lambda t: t.detach(), explain(clone, inputs, target))
        result[name] = map_similarity(original, maps, similarity)
    return result


# ----------------------------------------------------------------------------------------------
# localisation
# ----------------------------------------------------------------------------------------------
def _broadcast_mask(mask: Tensor, attr: Tensor) -> Tensor:
    m = torch.as_tensor(mask, device=attr.device)
    try:
        return torch.broadcast_to(m, attr.shape).to(attr.dtype if attr.is_floating_point() else torch.float64)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(m.shape)} does not broadcast to attributions of shape {tuple(attr.shape)}; "
            "give (N, 1, H, W), (N, H, W) with a channel axis added, or the inputs' shape"
        ) from None


def relevance_mass(attr: Tensor, mask: Tensor) -> Tensor:
    """Share of ``|attr|`` inside ``mask`` per sample: relevance mass accuracy (Arras et al. 2022).

    ``sum(|attr| * mask) / sum(|attr|)`` per sample; ``mask`` (0/1 or weights in ``[0, 1]``)
    broadcasts to ``attr`` (an ``(N, 1, H, W)`` mask counts every channel). An all-zero map has no
    mass anywhere, hence none inside: 0. NaN in a map gives NaN.

    Example:
        >>> import torch
        >>> attr = torch.tensor([[[[3., -1.], [0., 0.]]]])
        >>> mask = torch.tensor([[[[1, 0], [0, 0]]]])
        >>> relevance_mass(attr, mask)
        tensor([0.7500], dtype=torch.float64)
    """
    a = attr.detach().abs().double()
    m = _broadcast_mask(mask, a)
    inside = (a * m).reshape(a.shape[0], -1).sum(1)
    total = a.reshape(a.shape[0], -1).sum(1)
    return torch.where(total == 0, torch.zeros_like(total), inside / total)


def region_mass(attr: Tensor, region: Tensor) -> Tensor:
    """Share of ``|attr|`` inside one ``region`` shared by all samples (e.g. a watermark corner).

    ``region`` broadcasts to one sample's shape: ``(H, W)``, ``(1, H, W)``, ``(C, H, W)``, or
    ``(F,)`` for tabular inputs. Values as :func:`relevance_mass`.

    Example:
        >>> import torch
        >>> attr = torch.ones(2, 1, 4, 4)
        >>> corner = torch.zeros(4, 4); corner[:2, :2] = 1
        >>> region_mass(attr, corner)
        tensor([0.2500, 0.2500], dtype=torch.float64)
    """
    r = torch.as_tensor(region, device=attr.device)
    try:
        r = torch.broadcast_to(r, attr.shape[1:])
    except RuntimeError:
        raise ValueError(
            f"region of shape {tuple(r.shape)} does not broadcast to one sample of shape {tuple(attr.shape[1:])}; "
            "give (H, W), (1, H, W), the sample's shape, or (F,) for tabular inputs"
        ) from None
    return relevance_mass(attr, r.unsqueeze(0))


def pointing_game(attr: Tensor, mask: Tensor) -> Tensor:
    """Pointing game (Zhang et al. 2016): 1 where the peak of ``|attr|`` lies inside ``mask``, else 0.

    Image maps are pooled over channels and the mask is any-over-channels. To be tie-safe a hit
    needs the largest value inside the mask to exceed every value outside it: a constant (e.g.
    all-zero) map points nowhere and misses. NaN in a map gives NaN.

    Example:
        >>> import torch
        >>> attr = torch.tensor([[0., 5., 1.], [2., 2., 2.]])
        >>> mask = torch.tensor([[0, 1, 0], [1, 0, 0]])
        >>> pointing_game(attr, mask)
        tensor([1., 0.], dtype=torch.float64)
    """
    a = attr.detach().double()
    m = _broadcast_mask(mask, a) > 0
    if a.dim() == 4:
        p = a.abs().sum(1)
        m = m.any(1)
    else:
        p = a.abs()
    p = p.reshape(p.shape[0], -1)
    m = m.reshape(m.shape[0], -1)
    neg = torch.full_like(p, float("-inf"))
    inside = torch.where(m, p, neg).amax(1)
    outside = torch.where(m, neg, p).amax(1)
    hit = (inside > outside).double()
    return torch.where(torch.isnan(p).any(1), torch.full_like(hit, float("nan")), hit)


# ----------------------------------------------------------------------------------------------
# completeness of integrated gradients
# ----------------------------------------------------------------------------------------------
def completeness_error(attr: Tensor, f_x: Tensor, f_baseline: Tensor) -> Tensor:
    """Relative completeness error of attributions: ``sum_i |sum(attr_i) - d_i| / sum_i |d_i|``.

    ``d_i = f(x_i) - f(baseline_i)`` is what integrated gradients must distribute. Summing over the
    probe before dividing keeps the number stable when one sample's ``d_i`` is near zero; for one
    sample it is ``|sum(attr) - d| / |d|``. When every ``d_i`` is 0 the error is 0 if the
    attributions sum to 0 as well, else infinite. NaN gives NaN.

    Example:
        >>> import torch
        >>> completeness_error(torch.tensor([[1., 2.]]), torch.tensor([4.]), torch.tensor([0.]))
        tensor(0.2500, dtype=torch.float64)
    """
    total = attr.detach().double().reshape(attr.shape[0], -1).sum(1)
    d = (f_x.detach().double() - f_baseline.detach().double()).reshape(-1)
    num = (total - d).abs().sum()
    den = d.abs().sum()
    if torch.isnan(num) or torch.isnan(den):
        return torch.tensor(float("nan"), dtype=torch.float64)
    if den == 0:
        return torch.tensor(0.0 if num == 0 else float("inf"), dtype=torch.float64)
    return num / den


def ig_completeness(
    model: nn.Module,
    inputs: Tensor,
    target: Union[None, int, Tensor] = None,
    *,
    n_steps: int = 32,
    baseline: Union[None, float, Tensor] = None,
    method: str = "gausslegendre",
    chunk_size: Optional[int] = None,
) -> Tensor:
    """:func:`completeness_error` of integrated gradients, from their convergence delta.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 1)     # linear: the integral is exact with any number of steps
        >>> bool(ig_completeness(net, torch.randn(4, 3), n_steps=2) < 1e-6)
        True
    """
    attr, delta = integrated_gradients(
        model, inputs, target, baseline=baseline, n_steps=n_steps, method=method,
        chunk_size=chunk_size, return_convergence_delta=True,
    )
    total = attr.detach().double().reshape(attr.shape[0], -1).sum(1)
    d = total - delta.detach().double()  # f(x) - f(baseline)
    return completeness_error(attr, d, torch.zeros_like(d))
