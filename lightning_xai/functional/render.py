"""Turn attributions into pictures (``HxWx3`` uint8 arrays) for TensorBoard or PNG files.

- :func:`overlay_grid`: probe images with their heatmaps, one column per sample (input above, overlay
  below), small inputs upscaled with nearest-neighbour so that 8x8 digits stay legible; a colour
  scale ``vmax`` that the caller keeps fixed across epochs; a colour bar as legend; optional labels.
- :func:`bar_chart`: one horizontal bar per feature (tabular inputs), feature names as labels.

Colormaps are colour-blind safe: viridis for unsigned maps, a blue-white-red diverging map
(ColorBrewer RdBu) for signed ones. Text is drawn with Pillow when it is installed; without it the
pictures are the same minus the text.
"""

from __future__ import annotations

import functools
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["colormap", "overlay_grid", "bar_chart", "color_scale", "is_signed"]

_VIRIDIS = np.array(
    [
        [0.267, 0.005, 0.329],
        [0.283, 0.141, 0.458],
        [0.254, 0.265, 0.530],
        [0.207, 0.372, 0.553],
        [0.164, 0.471, 0.558],
        [0.128, 0.567, 0.551],
        [0.135, 0.659, 0.518],
        [0.267, 0.749, 0.441],
        [0.478, 0.821, 0.318],
        [0.741, 0.873, 0.150],
        [0.993, 0.906, 0.144],
    ]
)
_RDBU = np.array(
    [
        [0.020, 0.188, 0.380],
        [0.129, 0.400, 0.675],
        [0.263, 0.576, 0.765],
        [0.573, 0.773, 0.871],
        [0.820, 0.898, 0.941],
        [0.969, 0.969, 0.969],
        [0.992, 0.859, 0.780],
        [0.957, 0.647, 0.510],
        [0.839, 0.376, 0.302],
        [0.698, 0.094, 0.169],
        [0.404, 0.000, 0.122],
    ]
)


def colormap(values: np.ndarray, signed: bool) -> np.ndarray:
    """Map values to RGB in [0, 1]: ``[0, 1]`` through viridis, or ``[-1, 1]`` through RdBu (signed)."""
    table = _RDBU if signed else _VIRIDIS
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    u = (np.clip(v, -1, 1) + 1) / 2 if signed else np.clip(v, 0, 1)
    pos = u * (len(table) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(table) - 1)
    frac = (pos - lo)[..., None]
    return table[lo] * (1 - frac) + table[hi] * frac


def is_signed(attr: Tensor) -> bool:
    """Whether a map has negative values (then it is drawn with the diverging colormap)."""
    return bool((attr.detach() < 0).any())


def color_scale(attr: Tensor, quantile: float = 0.995) -> float:
    """A robust colour-scale maximum: the ``quantile`` of ``|attr|`` (1.0 when the map is all zero)."""
    a = attr.detach().abs().reshape(-1).double()
    a = a[torch.isfinite(a)]
    if a.numel() == 0:
        return 1.0
    v = float(torch.quantile(a[:1_000_000], quantile)) if a.numel() > 1 else float(a[0])
    return v if v > 0 else (float(a.max()) or 1.0)


@functools.lru_cache(maxsize=8)
def _font(size: int = 11):  # type: ignore[no-untyped-def]
    """Pillow's default font at ``size`` (loaded once per size: loading it costs more than drawing)."""
    try:
        from PIL import ImageFont
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return None
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _draw_text(img: np.ndarray, items: Sequence[tuple], size: int = 11) -> np.ndarray:
    """Draw ``(x, y, text, rgb)`` items onto an HxWx3 uint8 image (no-op without Pillow)."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:  # pragma: no cover
        return img
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    font = _font(size)
    for x, y, text, rgb in items:
        draw.text((x, y), str(text), fill=tuple(int(c) for c in rgb), font=font)
    return np.asarray(pil).copy()


def _gray(inputs: Tensor) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W) in [0, 1], one min-max over the whole probe (so samples compare)."""
    x = inputs.detach().double().cpu()
    if x.dim() == 4 and x.shape[1] in (3, 4):
        g = x[:, :3]
    else:
        g = x.mean(1, keepdim=True)
    lo, hi = float(g.min()), float(g.max())
    g = (g - lo) / (hi - lo) if hi > lo else torch.zeros_like(g)
    return g.permute(0, 2, 3, 1).numpy()  # N,H,W,C' with C' in {1, 3}


def _upscale(img: np.ndarray, factor: int) -> np.ndarray:
    return img.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else img


def _colorbar(width: int, signed: bool, vmax: float) -> np.ndarray:
    """The colour-bar legend (cached: callers keep ``vmax`` fixed across epochs, so it repeats)."""
    return _colorbar_cached(int(width), bool(signed), float(vmax)).copy()


@functools.lru_cache(maxsize=32)
def _colorbar_cached(width: int, signed: bool, vmax: float) -> np.ndarray:
    height = 28
    bar = np.full((height, width, 3), 255, dtype=np.uint8)
    ramp = np.linspace(-1 if signed else 0, 1, max(width - 20, 2))
    colors = (colormap(ramp, signed) * 255).astype(np.uint8)
    bar[2:12, 10 : 10 + len(ramp)] = colors[None]
    left = f"{-vmax:.2g}" if signed else "0"
    items = [(10, 13, left, (0, 0, 0)), (max(10, width - 60), 13, f"{vmax:.2g}", (0, 0, 0))]
    if signed:
        items.append((width // 2 - 3, 13, "0", (0, 0, 0)))
    return _draw_text(bar, items, size=10)


def overlay_grid(
    inputs: Tensor,
    attributions: Tensor,
    vmax: Optional[float] = None,
    signed: Optional[bool] = None,
    labels: Optional[Sequence[str]] = None,
    columns: int = 8,
    min_size: int = 64,
    alpha: float = 0.8,
    title: Optional[str] = None,
) -> np.ndarray:
    """A grid of probe images (top) and their heatmap overlays (below), as an HxWx3 uint8 array.

    Args:
        inputs: ``(N, C, H, W)`` probe images.
        attributions: maps of the same shape (or ``(N, 1, H, W)``); channels are summed.
        vmax: colour-scale maximum (default: :func:`color_scale` of these maps). Keep it fixed across
            epochs to make change visible.
        signed: diverging colormap (default: whether the maps have negative values).
        labels: one short caption per sample (e.g. ``"y=3 p=5"``).
        columns: samples per row; ``min_size``: upscale so each tile is at least this many pixels.

    Example:
        >>> import torch
        >>> overlay_grid(torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)).shape[2]
        3
    """
    if inputs.dim() != 4:
        raise ValueError(f"overlay_grid needs (N, C, H, W) images, got shape {tuple(inputs.shape)}")
    a = attributions.detach().double().cpu()
    if a.dim() != 4 or a.shape[0] != inputs.shape[0] or a.shape[2:] != inputs.shape[2:]:
        raise ValueError(
            f"attributions of shape {tuple(a.shape)} do not match images of shape {tuple(inputs.shape)}"
        )
    heat = a.sum(1).numpy()
    if signed is None:
        signed = bool((heat < 0).any())
    if vmax is None or not vmax > 0:
        vmax = color_scale(torch.from_numpy(heat))
    gray = _gray(inputs)
    n, h, w = heat.shape
    factor = max(1, int(np.ceil(min_size / max(h, w))))
    th, tw = h * factor, w * factor
    pad, label_h = 4, (14 if labels is not None else 0)
    columns = max(1, min(columns, n))
    rows = int(np.ceil(n / columns))
    cell_h = 2 * th + pad + label_h
    title_h = 16 if title else 0
    width = columns * (tw + pad) + pad
    grid = np.full((title_h + rows * (cell_h + pad) + pad, width, 3), 255, dtype=np.uint8)
    texts: List[tuple] = []
    if title:
        texts.append((pad, 2, title, (0, 0, 0)))
    for k in range(n):
        r, c = divmod(k, columns)
        y0 = title_h + pad + r * (cell_h + pad)
        x0 = pad + c * (tw + pad)
        base = gray[k]
        base_rgb = np.repeat(base, 3, axis=2) if base.shape[2] == 1 else base
        v = heat[k] / vmax
        color = colormap(v, signed)
        strength = np.clip(np.abs(np.nan_to_num(v)), 0, 1)[..., None] * alpha
        over = base_rgb * (1 - strength) + color * strength
        if label_h:
            texts.append((x0, y0, labels[k], (0, 0, 0)))  # type: ignore[index]
        y1 = y0 + label_h
        grid[y1 : y1 + th, x0 : x0 + tw] = _upscale((base_rgb * 255).astype(np.uint8), factor)
        grid[y1 + th + pad : y1 + 2 * th + pad, x0 : x0 + tw] = _upscale((over * 255).astype(np.uint8), factor)
    grid = _draw_text(grid, texts)
    return np.concatenate([grid, _colorbar(width, signed, vmax)], axis=0)


def bar_chart(
    values: Tensor,
    names: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    vmax: Optional[float] = None,
    max_features: int = 40,
) -> np.ndarray:
    """Horizontal bars of one importance value per feature (largest first), as an HxWx3 uint8 array.

    Example:
        >>> import torch
        >>> bar_chart(torch.tensor([0.1, 0.5, 0.2]), ["a", "b", "c"]).shape[2]
        3
    """
    v = values.detach().double().cpu().reshape(-1).numpy()
    names = list(names) if names is not None else [f"f{i}" for i in range(len(v))]
    if len(names) != len(v):
        raise ValueError(f"{len(names)} feature names for {len(v)} features")
    order = np.argsort(-np.nan_to_num(np.abs(v), nan=-1.0), kind="stable")[:max_features]
    top = np.nanmax(np.abs(v)) if np.isfinite(v).any() else 1.0
    vmax = float(vmax) if vmax and vmax > 0 else (float(top) if top > 0 else 1.0)
    label_w, bar_w, row_h, pad = 150, 360, 16, 6
    title_h = 18 if title else 0
    height = title_h + pad + row_h * len(order) + pad
    img = np.full((height, label_w + bar_w + 70, 3), 255, dtype=np.uint8)
    color = (np.array(_VIRIDIS[3]) * 255).astype(np.uint8)
    neg = (np.array(_RDBU[9]) * 255).astype(np.uint8)
    texts: List[tuple] = []
    if title:
        texts.append((pad, 2, title, (0, 0, 0)))
    for r, i in enumerate(order):
        y = title_h + pad + r * row_h
        length = int(round(min(abs(v[i]) / vmax, 1.0) * bar_w)) if np.isfinite(v[i]) else 0
        img[y + 2 : y + row_h - 2, label_w : label_w + length] = color if v[i] >= 0 else neg
        texts.append((pad, y + 1, str(names[i])[:24], (0, 0, 0)))
        texts.append((label_w + length + 4, y + 1, f"{v[i]:.3g}", (60, 60, 60)))
    return _draw_text(img, texts)
