"""Pictures of attributions: one :class:`Renderer` per kind of probe input, chosen from the probe.

A renderer turns one method's maps of the probe into an ``HxWx3`` uint8 picture. Ours:
:class:`ImageRenderer` (``(N, C, H, W)`` probes: the images above their heatmaps),
:class:`TabularRenderer` (``(N, F)`` probes: mean ``|attribution|`` per feature as bars),
:class:`SequenceRenderer` (``(N, C, T)`` signals), :class:`TextRenderer` (token ids) and
:class:`StructuredRenderer` (several inputs: one panel per attributed input, side by side, each
drawn by the renderer its input alone would get).
:func:`renderer_for` picks the first of :data:`RENDERERS` that accepts the probe; a user's own goes
in front of them with :func:`register_renderer`, or into one monitor with
``AttributionMonitor(..., renderer=MyRenderer())``.

What the picture needs from the monitor comes in a :class:`RenderContext`: the probe, the method,
the epoch and step, captions, and ``scale(values)``: the colour-scale maximum for the values the
picture encodes, under the monitor's policy (kept across epochs, saved in checkpoints). A panel of
one input of several gets :meth:`RenderContext.for_input`: the same callables bound to that input's
name, so each input keeps its own scale (``scale(values, part)``; the monitor keys it ``method/input``).

Example:
    >>> import torch
    >>> from lightning_xai import ProbeSet
    >>> probe = ProbeSet(torch.rand(4, 5), feature_names=["a", "b", "c", "d", "e"])
    >>> renderer = renderer_for(probe)
    >>> type(renderer).__name__
    'TabularRenderer'
    >>> ctx = RenderContext(probe=probe, method="saliency", epoch=0, step=10)
    >>> renderer.render(torch.rand(4, 5), ctx).shape[2]
    3
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable, List, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
from torch import Tensor

from . import functional as F
from .probe import ProbeSet

__all__ = [
    "Renderer",
    "RenderContext",
    "ImageRenderer",
    "TabularRenderer",
    "SequenceRenderer",
    "TextRenderer",
    "StructuredRenderer",
    "RENDERERS",
    "register_renderer",
    "renderer_for",
]


def _own_scale(values: Tensor, part: Optional[str] = None) -> float:
    return F.next_color_scale("per_epoch", None, values)


def _no_description(part: Optional[str] = None) -> str:
    return ""


def _bound_to_part(fn: Callable[..., Any], n_args: int, part: str) -> Callable[..., Any]:
    """``fn`` with ``part`` passed after its ``n_args`` arguments, where it takes one (a ``part`` parameter,
    one more positional, or ``*args``); else ``fn`` itself (a user's one-argument ``scale``: one shared scale)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature: call it as it is
        return fn
    named = params.get("part")
    if named is not None and named.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        return lambda *args: fn(*args, part=part)
    positional = [
        p for p in params.values() if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) > n_args or any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params.values()):
        return lambda *args: fn(*args, part)
    return fn


@dataclass
class RenderContext:
    """What a renderer may use besides the maps.

    Attributes:
        probe: the probe explained.
        method: the method's name.
        epoch, step: where in training the maps were made.
        labels: a caption per probe sample (true and predicted class), or None.
        mistakes: per probe sample, whether the model got it wrong, or None.
        scale: ``scale(values, part=None) -> vmax``: the colour-scale maximum for ``values`` under the
            monitor's policy (default: the values' own maximum); ``part`` names one input of several,
            which keeps its own scale. A renderer calls ``scale(values)``; a user's one-argument
            ``scale`` still works (the inputs of a structured probe then share it).
        describe_scale: ``describe_scale(part=None) -> str``: a line saying how that scale was chosen
            and how much of the values it clips (call it after ``scale``).
        signed: whether the maps are drawn on a diverging (signed) colour map.
        max_images: at most this many samples in a picture.
        columns: samples per row of a grid.
        padding: for token ids, ``(N, T)`` True at padding positions (left out of the picture).
    """

    probe: ProbeSet
    method: str
    epoch: int = 0
    step: int = 0
    labels: Optional[List[str]] = None
    mistakes: Optional[List[bool]] = None
    scale: Callable[..., float] = field(default=_own_scale)
    describe_scale: Callable[..., str] = field(default=_no_description)
    signed: bool = False
    max_images: int = 16
    columns: int = 4
    #: ``(N, T)`` True at the padding positions of a probe of token ids (None otherwise)
    padding: Optional[Tensor] = None

    def for_input(self, name: str, probe: ProbeSet, padding: Optional[Tensor] = None) -> "RenderContext":
        """This context for one input of several: ``probe`` (that input alone), ``padding`` (its token ids'
        padding, or None), and ``scale``/``describe_scale`` bound to ``name``, so that the input keeps its
        own colour scale; captions, method, epoch and the rest as they are.

        Example:
            >>> import torch
            >>> seen = []
            >>> ctx = RenderContext(probe=ProbeSet((torch.rand(2, 3), torch.rand(2, 4))), method="saliency",
            ...                     scale=lambda values, part=None: seen.append(part) or 1.0)
            >>> part = ctx.for_input("input1", ProbeSet(torch.rand(2, 4)))
            >>> part.scale(torch.rand(4)), seen, part.probe.kind, part.method
            (1.0, ['input1'], 'tabular', 'saliency')
        """
        return replace(
            self, probe=probe, padding=padding,
            scale=_bound_to_part(self.scale, 1, name), describe_scale=_bound_to_part(self.describe_scale, 0, name),
        )


@runtime_checkable
class Renderer(Protocol):
    """Draws one method's maps of the probe: ``render(attributions, ctx) -> HxWx3 uint8 array`` (or None
    to log nothing); ``accepts(probe)`` says whether it draws this kind of probe."""

    def accepts(self, probe: ProbeSet) -> bool: ...

    def render(self, attributions: Tensor, ctx: RenderContext) -> Optional[np.ndarray]: ...


class ImageRenderer:
    """``(N, C, H, W)`` probes: a grid of the images (small ones upscaled without blur) above their
    heatmaps, colour-blind-safe colour maps with a colour bar, captions, mistakes framed."""

    def accepts(self, probe: ProbeSet) -> bool:
        return probe.kind == "image"

    def render(self, attributions: Tensor, ctx: RenderContext) -> Optional[np.ndarray]:
        n = min(ctx.max_images, len(ctx.probe))
        a = attributions[:n].detach().float().cpu()
        if a.dim() != 4:  # e.g. a layer-resolution map of another shape: nothing sensible to overlay
            return None
        size = tuple(ctx.probe.inputs.shape[2:])
        if tuple(a.shape[2:]) != size:  # a layer's resolution (Grad-CAM, Captum's Layer*): drawn upsampled
            a = F.upsample_map(a, size)
        vmax = ctx.scale(a.sum(1))
        return F.overlay_grid(
            ctx.probe.inputs[:n], a, vmax=vmax, signed=ctx.signed,
            labels=None if ctx.labels is None else ctx.labels[:n],
            highlight=None if ctx.mistakes is None else ctx.mistakes[:n],
            columns=ctx.columns, title=f"{ctx.method}, epoch {ctx.epoch} (step {ctx.step})",
            legend=ctx.describe_scale(),
        )


class TabularRenderer:
    """``(N, F)`` probes: a bar chart of mean ``|attribution|`` per feature (names from the probe)."""

    def accepts(self, probe: ProbeSet) -> bool:
        return probe.kind == "tabular"

    def render(self, attributions: Tensor, ctx: RenderContext) -> Optional[np.ndarray]:
        importance = F.global_importance(attributions.float().cpu())
        vmax = ctx.scale(importance)
        return F.bar_chart(
            importance, ctx.probe.names, vmax=vmax,
            title=f"mean |{ctx.method}| per feature, epoch {ctx.epoch} (axis max {vmax:.3g})",
        )


class SequenceRenderer:
    """``(N, C, T)`` probes (signals, time series): each sample's channels as lines above a heat strip of
    its attribution summed over channels per time step."""

    #: at most this many samples in one picture (a picture of long signals grows tall)
    MAX_SAMPLES = 8

    def accepts(self, probe: ProbeSet) -> bool:
        return probe.kind == "sequence"

    def render(self, attributions: Tensor, ctx: RenderContext) -> Optional[np.ndarray]:
        n = min(ctx.max_images, len(ctx.probe), self.MAX_SAMPLES)
        a = attributions[:n].detach().float().cpu()
        x = ctx.probe.inputs[:n]
        if a.dim() != 3 or a.shape[-1] != x.shape[-1]:
            a = F.upsample_map(a.reshape(n, -1, 1, a.shape[-1]), (1, x.shape[-1]))[:, :, 0]
        vmax = ctx.scale(a.sum(1))
        return F.sequence_chart(
            x, a, vmax=vmax, signed=ctx.signed, labels=None if ctx.labels is None else ctx.labels[:n],
            title=f"{ctx.method}, epoch {ctx.epoch} (step {ctx.step})", legend=ctx.describe_scale(),
        )


class TextRenderer:
    """Probes of token ids ``(N, T)``: each sample's tokens on backgrounds coloured by their attribution;
    padding left out. Tokens are shown through the probe's ``vocab`` or ``decode`` (else as ids)."""

    def accepts(self, probe: ProbeSet) -> bool:
        return probe.kind == "text"

    def render(self, attributions: Tensor, ctx: RenderContext) -> Optional[np.ndarray]:
        n = min(ctx.max_images, len(ctx.probe))
        a = attributions[:n].detach().float().cpu()
        if a.dim() != 2:
            return None
        valid = None if ctx.padding is None else ~ctx.padding[:n].cpu()
        vmax = ctx.scale(a if valid is None else a[valid])
        return F.token_chart(
            [ctx.probe.tokens(i) for i in range(n)], a, valid, vmax=vmax, signed=ctx.signed,
            labels=None if ctx.labels is None else ctx.labels[:n],
            title=f"{ctx.method}, epoch {ctx.epoch} (step {ctx.step})", legend=ctx.describe_scale(),
        )


def _one_input(probe: ProbeSet, key: Any) -> ProbeSet:
    """Input ``key`` of a structured probe as a probe of its own, with the targets and the token vocabulary."""
    return ProbeSet(probe.inputs[key], targets=probe.targets, vocab=probe.vocab, decode=probe.decode)


def _as_picture(picture: Any) -> Optional[np.ndarray]:
    """An ``HxWx3`` uint8 array, or None when ``picture`` is not one."""
    if picture is None:
        return None
    a = np.asarray(picture)
    return a if a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8 else None


class StructuredRenderer:
    """Probes of several inputs (a tuple or dict): one panel per attributed input, side by side, under the
    input's name (``input0``, ``input1``, ... or the dict key); inputs without a map (a riding attention
    mask) get none. Each panel is drawn by the renderer that input alone would get (images, tables,
    signals, token ids with the probe's ``vocab``/``decode`` and its padding: the ``attention_mask``), with
    that input's own colour scale (:meth:`RenderContext.for_input`). An input no renderer draws gets a
    small "no picture for shape ..." panel.

    Args:
        renderers: the renderers a panel is chosen from, in order (default: :data:`RENDERERS` at the time
            of drawing, so a registered renderer draws the panels of the inputs it accepts).

    Example:
        >>> import torch
        >>> probe = ProbeSet((torch.rand(3, 1, 8, 8), torch.rand(3, 4), torch.ones(3, 2, dtype=torch.long)))
        >>> renderer = renderer_for(probe)
        >>> type(renderer).__name__
        'StructuredRenderer'
        >>> maps = (torch.rand(3, 1, 8, 8), torch.rand(3, 4), None)  # the integer input rides along
        >>> picture = renderer.render(maps, RenderContext(probe=probe, method="saliency"))
        >>> picture.shape[1] > renderer_for(ProbeSet(probe.inputs[0])).render(maps[0], RenderContext(
        ...     probe=ProbeSet(probe.inputs[0]), method="saliency")).shape[1]
        True
    """

    def __init__(self, renderers: Optional[Sequence[Any]] = None) -> None:
        self.renderers = None if renderers is None else list(renderers)

    def accepts(self, probe: ProbeSet) -> bool:
        return probe.kind == "structured"

    def render(self, attributions: Any, ctx: RenderContext) -> Optional[np.ndarray]:
        probe = ctx.probe
        if not probe.structured or not F.is_structured(attributions):
            return None
        choices = [r for r in (RENDERERS if self.renderers is None else self.renderers) if r is not self]
        ids = probe.token_ids()
        padding = ctx.padding if ctx.padding is not None else probe.padding()
        panels: List[np.ndarray] = []
        titles: List[str] = []
        for (key, attr), name in zip(F.input_entries(attributions), F.input_names(attributions)):
            if attr is None:
                continue  # a riding input: no map, no panel
            x = probe.inputs[key]
            view = _one_input(probe, key)
            renderer = renderer_for(view, choices)
            picture = None
            if renderer is not None:
                own = None
                if padding is not None and tuple(padding.shape) == tuple(x.shape) and x is ids:
                    own = padding  # the token ids' panel: padding (the attention mask's) left out
                picture = _as_picture(renderer.render(attr, ctx.for_input(name, view, own)))
            panels.append(picture if picture is not None else F.note_panel(f"no picture for shape {tuple(x.shape)}"))
            titles.append(name)
        return F.side_by_side(panels, titles) if panels else None


#: the renderers :func:`renderer_for` tries, in order
RENDERERS: List[Any] = [ImageRenderer(), TabularRenderer(), SequenceRenderer(), TextRenderer(), StructuredRenderer()]


def register_renderer(renderer: Renderer) -> None:
    """Put ``renderer`` first in :data:`RENDERERS`: every monitor then draws the probes it accepts with it."""
    if not isinstance(renderer, Renderer):
        raise TypeError(
            f"a renderer needs accepts(probe) -> bool and render(attributions, ctx) -> image; "
            f"got {type(renderer).__name__}"
        )
    RENDERERS.insert(0, renderer)


def renderer_for(probe: ProbeSet, renderers: Optional[Sequence[Any]] = None) -> Optional[Renderer]:
    """The first renderer that accepts ``probe`` (None: no picture for this kind of input)."""
    for r in RENDERERS if renderers is None else renderers:
        if r.accepts(probe):
            return r
    return None
