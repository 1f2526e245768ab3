"""Pictures of attributions: one :class:`Renderer` per kind of probe input, chosen from the probe.

A renderer turns one method's maps of the probe into an ``HxWx3`` uint8 picture. Ours:
:class:`ImageRenderer` (``(N, C, H, W)`` probes: the images above their heatmaps) and
:class:`TabularRenderer` (``(N, F)`` probes: mean ``|attribution|`` per feature as bars).
:func:`renderer_for` picks the first of :data:`RENDERERS` that accepts the probe; a user's own goes
in front of them with :func:`register_renderer`, or into one monitor with
``AttributionMonitor(..., renderer=MyRenderer())``.

What the picture needs from the monitor comes in a :class:`RenderContext`: the probe, the method,
the epoch and step, captions, and ``scale(values)``: the colour-scale maximum for the values the
picture encodes, under the monitor's policy (kept across epochs, saved in checkpoints).

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

from dataclasses import dataclass, field
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
    "RENDERERS",
    "register_renderer",
    "renderer_for",
]


def _own_scale(values: Tensor) -> float:
    return F.next_color_scale("per_epoch", None, values)


@dataclass
class RenderContext:
    """What a renderer may use besides the maps.

    Attributes:
        probe: the probe explained.
        method: the method's name.
        epoch, step: where in training the maps were made.
        labels: a caption per probe sample (true and predicted class), or None.
        mistakes: per probe sample, whether the model got it wrong, or None.
        scale: ``scale(values) -> vmax``: the colour-scale maximum for ``values`` under the monitor's
            policy (default: the values' own maximum).
        describe_scale: ``describe_scale() -> str``: a line saying how that scale was chosen and how
            much of the values it clips (call it after ``scale``).
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
    scale: Callable[[Tensor], float] = field(default=_own_scale)
    describe_scale: Callable[[], str] = field(default=lambda: "")
    signed: bool = False
    max_images: int = 16
    columns: int = 4
    #: ``(N, T)`` True at the padding positions of a probe of token ids (None otherwise)
    padding: Optional[Tensor] = None


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


#: the renderers :func:`renderer_for` tries, in order
RENDERERS: List[Any] = [ImageRenderer(), TabularRenderer(), SequenceRenderer(), TextRenderer()]


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
