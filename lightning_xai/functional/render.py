"""Turn attributions into pictures (``HxWx3`` uint8 arrays) for TensorBoard or PNG files.

- :func:`overlay_grid`: probe images with their heatmaps, one column per sample (input above, overlay
  below), small inputs upscaled with nearest-neighbour so that 8x8 digits stay legible; a colour
  scale ``vmax`` that the caller keeps fixed across epochs; a colour bar as legend; optional labels.
- :func:`bar_chart`: one horizontal bar per feature (tabular inputs), feature names as labels.
- :func:`heatmap_chart`: a labelled matrix (e.g. features x epochs of importance), viridis, colour bar.
- :func:`image_grid`: inputs (e.g. feature visualisations) as tiles, on a fixed value range, captioned.
- :func:`filter_grid`: convolution kernels as tiles (signed: blue-white-red, or RGB for 3-channel kernels).
- :func:`side_by_side`: pictures joined left to right, each under its own title (one panel per input).

Colormaps are colour-blind safe: viridis for unsigned maps, a blue-white-red diverging map
(ColorBrewer RdBu) for signed ones. Text is drawn with Pillow when it is installed; without it the
pictures are the same minus the text.
"""

from __future__ import annotations

import functools
import struct
import zlib
from typing import Any, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ._sort import quantile as _quantile

__all__ = [
    "colormap",
    "overlay_grid",
    "upsample_map",
    "bar_chart",
    "heatmap_chart",
    "sequence_chart",
    "token_chart",
    "image_grid",
    "filter_grid",
    "side_by_side",
    "note_panel",
    "color_scale",
    "is_signed",
    "clipped_fraction",
    "next_color_scale",
    "COLOR_SCALE_POLICIES",
    "png_bytes",
]

#: Okabe-Ito vermillion for flagged (e.g. misclassified) samples: distinct under common colour-vision deficiencies
_VERMILLION = (213, 94, 0)

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
    v = _quantile(a[:1_000_000], quantile) if a.numel() > 1 else float(a[0])
    return v if v > 0 else (float(a.max()) or 1.0)


def clipped_fraction(attr: Tensor, vmax: float) -> float:
    """The fraction of finite values with ``|value| > vmax``: how much of a map a colour scale clips.

    Example:
        >>> import torch
        >>> clipped_fraction(torch.tensor([0.5, -2.0, 1.0, 3.0]), vmax=1.0)
        0.5
    """
    a = attr.detach().abs().reshape(-1)
    a = a[torch.isfinite(a)]
    if a.numel() == 0:
        return 0.0
    return float((a > vmax).double().mean())


#: the colour-scale policies of :func:`next_color_scale` (a positive number is accepted too)
COLOR_SCALE_POLICIES = ("fixed", "grow", "per_epoch")
#: the factor by which ``"grow"`` raises a colour scale that the maps have outgrown
GROW_STEP = float(np.sqrt(2.0))


def next_color_scale(policy: object, previous: Optional[float], attr: Tensor) -> float:
    """This epoch's colour-scale maximum for one method, given the policy and the previous maximum.

    - ``"fixed"``: the :func:`color_scale` of the first maps seen, kept for every later epoch, so
      the same colour means the same value in every epoch; maps that grow beyond it saturate
      (see :func:`clipped_fraction`).
    - ``"grow"``: like ``"fixed"``, but when the maps outgrow the scale it is raised in steps of
      ``GROW_STEP`` (sqrt 2, as many as needed) and never lowered: colours stay comparable between
      rescalings, which are few and shown by the colour bar, and the maps do not saturate.
    - ``"per_epoch"``: the :func:`color_scale` of each epoch's maps (shapes, not magnitudes, compare).
    - a positive number: that maximum, always.

    Example:
        >>> import torch
        >>> small, big = torch.full((4,), 1.0), torch.full((4,), 5.0)
        >>> next_color_scale("fixed", None, small), next_color_scale("fixed", 1.0, big)
        (1.0, 1.0)
        >>> round(next_color_scale("grow", 1.0, big), 3), next_color_scale("grow", 8.0, small)
        (5.657, 8.0)
        >>> next_color_scale("per_epoch", 1.0, big), next_color_scale(2.5, None, big)
        (5.0, 2.5)
    """
    if isinstance(policy, (int, float)) and not isinstance(policy, bool):
        if not policy > 0 or not np.isfinite(policy):
            raise ValueError(f"a numeric colour scale must be a finite number > 0, got {policy!r}")
        return float(policy)
    if policy not in COLOR_SCALE_POLICIES:
        raise ValueError(
            f"unknown colour-scale policy {policy!r}: use one of {', '.join(map(repr, COLOR_SCALE_POLICIES))} "
            "or a positive number (the fixed maximum)"
        )
    current = color_scale(attr)
    if previous is None or not previous > 0 or policy == "per_epoch":
        return current
    if policy == "grow" and current > previous:
        steps = np.ceil(np.log(current / previous) / np.log(GROW_STEP) - 1e-9)
        return float(previous * GROW_STEP**steps)
    return float(previous)


@functools.lru_cache(maxsize=8)
def _font(size: int = 11) -> Any:
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
    """Nearest-neighbour upscaling of (..., H, W, C) images by an integer factor."""
    if factor == 1:
        return img
    *lead, h, w, c = img.shape
    out = np.broadcast_to(img[..., :, None, :, None, :], (*lead, h, factor, w, factor, c))
    return out.reshape(*lead, h * factor, w * factor, c)


def _wrap(text: str, width: int, size: int) -> List[str]:
    """Split ``text`` at spaces into lines at most ``width`` pixels wide in the default font."""
    font = _font(size)

    def length(t: str) -> float:
        return float(font.getlength(t)) if font is not None and hasattr(font, "getlength") else 6.0 * len(t)

    lines: List[str] = []
    for word in text.split(" "):
        if lines and length(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _colorbar(width: int, signed: bool, vmax: float, legend: Optional[str] = None) -> np.ndarray:
    """The legend: the colormap from ``-vmax`` (or 0) to ``vmax``, ticks at the ends (and 0), a caption.

    Cached: callers keep ``vmax`` across epochs, so the same bar repeats.
    """
    return _colorbar_cached(int(width), bool(signed), float(vmax), legend).copy()


@functools.lru_cache(maxsize=32)
def _colorbar_cached(width: int, signed: bool, vmax: float, legend: Optional[str]) -> np.ndarray:
    lines = _wrap(legend, width - 20, 10) if legend else []
    height = 28 + 13 * len(lines)
    bar = np.full((height, width, 3), 255, dtype=np.uint8)
    ramp = np.linspace(-1 if signed else 0, 1, max(width - 20, 2))
    bar[2:12, 10 : 10 + len(ramp)] = _to_uint8(colormap(ramp, signed))[None]
    left = f"{-vmax:.3g}" if signed else "0"
    right = f"{vmax:.3g}"
    items = [(10, 13, left, (0, 0, 0)), (max(10, width - 10 - 6 * len(right)), 13, right, (0, 0, 0))]
    if signed:
        items.append((width // 2 - 3, 13, "0", (0, 0, 0)))
    for i, line in enumerate(lines):
        items.append((10, 27 + 13 * i, line, (60, 60, 60)))
    return _draw_text(bar, items, size=10)


def upsample_map(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Layer-resolution maps ``(N, C', h, w)`` brought to an image's ``size`` ``(H, W)`` for drawing:
    channels summed, bilinear interpolation (as Grad-CAM's upsampling).

    Example:
        >>> import torch
        >>> upsample_map(torch.ones(2, 3, 2, 2), (8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """
    a = maps.float().sum(1, keepdim=True)
    return torch.nn.functional.interpolate(a, size=tuple(int(v) for v in size), mode="bilinear", align_corners=False)


def overlay_grid(
    inputs: Tensor,
    attributions: Tensor,
    vmax: Optional[float] = None,
    signed: Optional[bool] = None,
    labels: Optional[Sequence[str]] = None,
    columns: int = 8,
    min_size: int = 64,
    alpha: float = 0.75,
    title: Optional[str] = None,
    highlight: Optional[Sequence[bool]] = None,
    legend: Optional[str] = None,
) -> np.ndarray:
    """A grid of probe images (top) and their heatmaps (below), as an HxWx3 uint8 array.

    Each heatmap tile is the colormap of ``attribution / vmax`` drawn at opacity ``alpha`` over the
    input (so the colours match the colour bar, and the digit or object still shows through).
    Small inputs are upscaled with nearest-neighbour (no blur) until a tile is ``min_size`` pixels.

    Args:
        inputs: ``(N, C, H, W)`` probe images.
        attributions: maps of the same shape (or ``(N, 1, H, W)``); channels are summed.
        vmax: colour-scale maximum (default: :func:`color_scale` of these maps). Keep it fixed across
            epochs to make change visible; values beyond it are clipped to the end colours.
        signed: diverging colormap (default: whether the maps have negative values).
        labels: one short caption per sample (e.g. ``"y=3 p=5"``).
        columns: samples per row; ``min_size``: upscale so each tile is at least this many pixels.
        alpha: opacity of the heatmap over the input, in ``[0, 1]``.
        title: a line of text above the grid.
        highlight: one flag per sample; flagged samples (e.g. misclassified) get a vermillion
            caption and frame.
        legend: text under the colour bar (e.g. how the scale was chosen).

    Example:
        >>> import torch
        >>> img = overlay_grid(torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8), labels=["a", "b", "c"])
        >>> img.shape[2], img.dtype.name, img.shape[1]   # 3 tiles of 8x8 upscaled x8, 4 px gaps
        (3, 'uint8', 208)
    """
    if inputs.dim() != 4:
        raise ValueError(f"overlay_grid needs (N, C, H, W) images, got shape {tuple(inputs.shape)}")
    a = attributions.detach().double().cpu()
    if a.dim() != 4 or a.shape[0] != inputs.shape[0] or a.shape[2:] != inputs.shape[2:]:
        raise ValueError(
            f"attributions of shape {tuple(a.shape)} do not match images of shape {tuple(inputs.shape)}"
        )
    n = inputs.shape[0]
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} images: pass one caption per probe sample")
    if highlight is not None and len(highlight) != n:
        raise ValueError(f"{len(highlight)} highlight flags for {n} images: pass one per probe sample")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    heat = a.sum(1).numpy()
    if signed is None:
        signed = bool((heat < 0).any())
    if vmax is None or not vmax > 0:
        vmax = color_scale(torch.from_numpy(heat))
    gray = _gray(inputs)
    _, h, w = heat.shape
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
    # every tile at once: inputs in grey or colour, heatmaps over them, both upscaled
    base_rgb = np.repeat(gray, 3, axis=3) if gray.shape[3] == 1 else gray
    over = base_rgb * (1 - alpha) + colormap(heat / vmax, signed) * alpha
    base_tiles = _upscale(_to_uint8(base_rgb), factor)
    over_tiles = _upscale(_to_uint8(over), factor)
    for k in range(n):
        r, c = divmod(k, columns)
        y0 = title_h + pad + r * (cell_h + pad)
        x0 = pad + c * (tw + pad)
        flagged = bool(highlight[k]) if highlight is not None else False
        if labels is not None:
            texts.append((x0, y0, labels[k], _VERMILLION if flagged else (0, 0, 0)))
        y1 = y0 + label_h
        if flagged:  # a 2-pixel frame around both tiles: visible without colour vision too
            grid[y1 - 2 : y1 + 2 * th + pad + 2, max(x0 - 2, 0) : x0 + tw + 2] = _VERMILLION
        grid[y1 : y1 + th, x0 : x0 + tw] = base_tiles[k]
        grid[y1 + th + pad : y1 + 2 * th + pad, x0 : x0 + tw] = over_tiles[k]
    grid = _draw_text(grid, texts)
    return np.concatenate([grid, _colorbar(width, signed, vmax, legend)], axis=0)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


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


#: the width the trajectory picture is made for: TensorBoard's image card shows about this much unscaled
HEATMAP_WIDTH = 330


def heatmap_chart(
    matrix: Tensor,
    row_labels: Optional[Sequence[str]] = None,
    col_labels: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    vmax: Optional[float] = None,
    max_rows: int = 64,
    col_title: Optional[str] = None,
) -> np.ndarray:
    """A labelled heatmap of a ``(rows, columns)`` matrix of values >= 0, as an HxWx3 uint8 array.

    Made for importance trajectories: one row per feature, one column per epoch. Colour is viridis
    from 0 to ``vmax`` (default: the largest finite value); NaN cells are grey. With more than
    ``max_rows`` rows, the rows with the largest maxima are kept (in their original order).

    Sized to be read in TensorBoard's image card without zooming: about :data:`HEATMAP_WIDTH` pixels
    wide, 13 px text, the label column as wide as the longest label. Rows are 18 px high while they
    fit in about 430 px, thinner beyond, with a label on every n-th row only; column labels are
    written under every column while they fit, else under every n-th. ``col_title`` names the
    columns' axis (e.g. ``"epoch"``); the title wraps.

    Example:
        >>> import torch
        >>> img = heatmap_chart(torch.rand(5, 3), [f"f{i}" for i in range(5)], ["0", "1", "2"], title="t")
        >>> img.dtype, img.shape[2]
        (dtype('uint8'), 3)
    """
    m = np.asarray(torch.as_tensor(matrix).detach().double().cpu().numpy(), dtype=np.float64)
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"heatmap_chart needs a non-empty (rows, columns) matrix, got shape {m.shape}")
    rows, cols = m.shape
    row_labels = list(row_labels) if row_labels is not None else [str(i) for i in range(rows)]
    col_labels = list(col_labels) if col_labels is not None else [str(j) for j in range(cols)]
    if len(row_labels) != rows or len(col_labels) != cols:
        raise ValueError(
            f"{len(row_labels)} row labels and {len(col_labels)} column labels for a {rows}x{cols} matrix"
        )
    keep = np.arange(rows)
    if rows > max_rows:
        peak = np.where(np.isnan(m), -np.inf, m).max(axis=1)
        keep = np.sort(np.argsort(-peak, kind="stable")[:max_rows])
        m = m[keep]
        row_labels = [row_labels[i] for i in keep]
    finite = m[np.isfinite(m)]
    top = float(finite.max()) if finite.size else 1.0
    vmax = float(vmax) if vmax is not None and vmax > 0 else (top if top > 0 else 1.0)

    size, line_h, pad = 13, 16, 6
    font = _font(size)

    def length(t: str) -> int:
        return int(np.ceil(font.getlength(t))) if font is not None and hasattr(font, "getlength") else 7 * len(t)

    shown = [str(name)[:24] for name in row_labels]
    label_w = min(max(length(t) for t in shown), 150) + pad
    cell_w = int(np.clip((HEATMAP_WIDTH - label_w - 2 * pad) // cols, 4, 40))
    n = len(keep)
    cell_h = 18 if n <= 24 else max(4, 430 // n)
    row_every = int(np.ceil(line_h / cell_h))
    width = max(label_w + cols * cell_w + 2 * pad, 240)
    title_lines = _wrap(title, width - 2 * pad, size) if title else []
    title_h = line_h * len(title_lines) + (4 if title_lines else 0)
    axis_h = line_h + (line_h if col_title else 0)
    height = title_h + pad + n * cell_h + axis_h + pad
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    colors = (colormap(np.clip(m / vmax, 0, 1), signed=False) * 255).astype(np.uint8)
    colors[~np.isfinite(m)] = 200
    y0, x0 = title_h + pad, label_w + pad
    block = colors.repeat(cell_h, axis=0).repeat(cell_w, axis=1)
    img[y0 : y0 + block.shape[0], x0 : x0 + block.shape[1]] = block
    texts: List[tuple] = [(pad, 2 + line_h * i, line, (0, 0, 0)) for i, line in enumerate(title_lines)]
    for r in range(0, n, row_every):
        texts.append((pad, y0 + r * cell_h + (cell_h - line_h) // 2, shown[r], (0, 0, 0)))
    widest = max(length(str(c)) for c in col_labels)
    col_every = max(1, int(np.ceil((widest + 6) / cell_w)))
    y_axis = y0 + n * cell_h + 2
    for c in range(0, cols, col_every):
        text = str(col_labels[c])
        x = x0 + c * cell_w + max(0, (cell_w - length(text)) // 2)
        texts.append((x, y_axis, text, (60, 60, 60)))
    if col_title:
        texts.append((x0 + max(0, (cols * cell_w - length(col_title)) // 2), y_axis + line_h, col_title, (0, 0, 0)))
    img = _draw_text(img, texts, size=size)
    return np.concatenate([img, _colorbar(img.shape[1], False, vmax)], axis=0)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(image: np.ndarray, level: int = 1) -> bytes:
    """A PNG file (bytes) of an HxW (grey) or HxWx3 / HxWx4 uint8 image: lossless, made for speed.

    Every row is stored with PNG's "Up" filter (the difference with the row above), which turns the
    repeated rows of upscaled tiles and flat backgrounds into zeros, and compressed with zlib at
    ``level`` (1: fast). Pictures of probe maps encode in about half the time Pillow takes at its
    fastest level, to files of about the same size.

    Example:
        >>> import io, numpy as np
        >>> from PIL import Image
        >>> img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
        >>> data = png_bytes(img)
        >>> data[:8] == b"\\x89PNG\\r\\n\\x1a\\n", np.array_equal(np.asarray(Image.open(io.BytesIO(data))), img)
        (True, True)
    """
    img = np.ascontiguousarray(image, dtype=np.uint8)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"png_bytes takes an HxW, HxWx3 or HxWx4 uint8 image, got shape {tuple(image.shape)}")
    height, width, channels = img.shape
    rows = img.reshape(height, width * channels)
    raw = np.empty((height, width * channels + 1), dtype=np.uint8)
    raw[:, 0] = 2  # filter type "Up"
    raw[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG's does
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), level))
        + _png_chunk(b"IEND", b"")
    )


def _tiles(
    tiles: np.ndarray, labels: Optional[Sequence[str]], columns: int, min_size: int, title: Optional[str],
    row_titles: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """``(N, h, w, 3)`` RGB tiles in [0, 1] laid out in a grid (upscaled nearest-neighbour to ``min_size``),
    a caption above each tile and, when ``row_titles`` is given, a caption left of each row."""
    n, h, w, _ = tiles.shape
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} tiles: pass one caption per tile")
    factor = max(1, int(np.ceil(min_size / max(h, w))))
    th, tw = h * factor, w * factor
    pad, label_h = 4, (14 if labels is not None else 0)
    columns = max(1, min(columns, n))
    rows = int(np.ceil(n / columns))
    if row_titles is not None and len(row_titles) != rows:
        raise ValueError(f"{len(row_titles)} row titles for {rows} rows")
    left = 0 if row_titles is None else 8 + 6 * max(len(str(t)) for t in row_titles)
    title_h = 16 if title else 0
    cell_h = th + label_h
    grid = np.full((title_h + rows * (cell_h + pad) + pad, left + columns * (tw + pad) + pad, 3), 255, dtype=np.uint8)
    texts: List[tuple] = [(pad, 2, title, (0, 0, 0))] if title else []
    up = _upscale(_to_uint8(tiles), factor)
    for k in range(n):
        r, c = divmod(k, columns)
        y0 = title_h + pad + r * (cell_h + pad)
        x0 = left + pad + c * (tw + pad)
        if labels is not None:
            texts.append((x0, y0, labels[k], (0, 0, 0)))
        grid[y0 + label_h : y0 + label_h + th, x0 : x0 + tw] = up[k]
        if row_titles is not None and c == 0:
            texts.append((pad, y0 + label_h + th // 2 - 6, row_titles[r], (0, 0, 0)))
    return _draw_text(grid, texts)


def image_grid(
    images: Tensor,
    value_range: Optional[Sequence[float]] = None,
    labels: Optional[Sequence[str]] = None,
    columns: int = 8,
    min_size: int = 64,
    title: Optional[str] = None,
    row_titles: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """``(N, C, H, W)`` images as captioned tiles, an HxWx3 uint8 array.

    ``value_range=(lo, hi)`` maps ``lo`` to black and ``hi`` to white (values beyond are clipped), the
    same for every tile: keep it fixed across epochs and the pictures compare (default: these images'
    own minimum and maximum). Three channels are drawn as RGB, other counts as the channels' mean in
    grey. Small images are upscaled nearest-neighbour (no blur) to ``min_size`` pixels.

    Example:
        >>> import torch
        >>> image_grid(torch.rand(10, 1, 8, 8), (0.0, 1.0), labels=[str(i) for i in range(10)], columns=5).shape
        (168, 344, 3)
    """
    if images.dim() != 4:
        raise ValueError(f"image_grid needs (N, C, H, W) images, got shape {tuple(images.shape)}")
    x = images.detach().double().cpu()
    lo, hi = (float(x.min()), float(x.max())) if value_range is None else (float(value_range[0]), float(value_range[1]))
    x = ((x - lo) / (hi - lo)).clamp(0, 1) if hi > lo else torch.zeros_like(x)
    x = x[:, :3] if x.shape[1] == 3 else x.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    return _tiles(x.permute(0, 2, 3, 1).numpy(), labels, columns, min_size, title, row_titles)


def filter_grid(
    weight: Tensor,
    vmax: Optional[float] = None,
    labels: Optional[Sequence[str]] = None,
    columns: int = 8,
    min_size: int = 32,
    title: Optional[str] = None,
    legend: Optional[str] = None,
) -> np.ndarray:
    """Convolution kernels ``(out, in, kh, kw)`` as tiles, an HxWx3 uint8 array.

    Kernels with 3 input channels are drawn as RGB (``0.5 + 0.5 * w / vmax``: grey is zero); others as
    the mean over input channels on the blue-white-red map from ``-vmax`` to ``vmax``, with a colour
    bar (and ``legend`` under it). ``vmax`` defaults to the largest ``|w|``.

    Example:
        >>> import torch
        >>> filter_grid(torch.randn(16, 1, 3, 3), columns=8).shape[2]
        3
    """
    if weight.dim() != 4:
        raise ValueError(f"filter_grid needs (out, in, kh, kw) kernels, got shape {tuple(weight.shape)}")
    w = weight.detach().double().cpu()
    top = float(w.abs().max()) if w.numel() else 1.0
    vmax = float(vmax) if vmax is not None and vmax > 0 else (top if top > 0 else 1.0)
    if w.shape[1] == 3:
        tiles = (0.5 + 0.5 * w / vmax).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        return _tiles(tiles, labels, columns, min_size, title)
    tiles = colormap((w.mean(1) / vmax).numpy(), signed=True)
    grid = _tiles(tiles, labels, columns, min_size, title)
    return np.concatenate([grid, _colorbar(grid.shape[1], True, vmax, legend)], axis=0)


def sequence_chart(
    inputs: Tensor,
    maps: Tensor,
    vmax: Optional[float] = None,
    signed: bool = False,
    labels: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    legend: Optional[str] = None,
    width: int = 480,
) -> np.ndarray:
    """Signals ``(N, C, T)`` as lines (one band per channel), each with a heat strip of its attribution
    summed over channels per time step, as an HxWx3 uint8 array.

    Example:
        >>> import torch
        >>> sequence_chart(torch.randn(2, 3, 50), torch.rand(2, 3, 50)).shape[2]
        3
    """
    x = inputs.detach().double().cpu()
    a = maps.detach().double().cpu()
    if x.dim() == 2:
        x, a = x[:, None], a[:, None] if a.dim() == 2 else a
    n, c, t = x.shape
    strip = a.reshape(n, -1, t).sum(1).numpy() if a.shape[-1] == t else np.zeros((n, t))
    top = float(np.nanmax(np.abs(strip))) if np.isfinite(strip).any() else 1.0
    vmax = float(vmax) if vmax and vmax > 0 else (top if top > 0 else 1.0)
    band, strip_h, pad, caption_h = 28, 12, 6, 14
    title_h = 18 if title else 0
    panel_h = caption_h + band * c + strip_h + pad
    img = np.full((title_h + panel_h * n + pad, width, 3), 255, dtype=np.uint8)
    cols = np.minimum((np.arange(width) * t) // width, t - 1)
    texts: List[tuple] = []
    if title:
        texts.append((pad, 2, title, (0, 0, 0)))
    line = (np.array(_VIRIDIS[2]) * 255).astype(np.uint8)
    for i in range(n):
        y0 = title_h + i * panel_h
        if labels is not None:
            texts.append((pad, y0, str(labels[i]), (0, 0, 0)))
        y0 += caption_h
        for ch in range(c):
            v = x[i, ch].numpy()
            lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
            u = (v - lo) / (hi - lo) if hi > lo else np.full_like(v, 0.5)
            ys = y0 + ch * band + 2 + np.rint((1 - u[cols]) * (band - 5)).astype(int)
            for px in range(width):  # a vertical run joins consecutive points: a continuous line
                a0, a1 = sorted((ys[px], ys[px - 1] if px else ys[px]))
                img[a0 : a1 + 1, px] = line
            img[y0 + (ch + 1) * band - 1, :] = 230
        heat = _to_uint8(colormap(strip[i] / vmax, signed))[cols]
        img[y0 + band * c : y0 + band * c + strip_h] = heat[None]
    grid = _draw_text(img, texts)
    return np.concatenate([grid, _colorbar(width, signed, vmax, legend)], axis=0)


def token_chart(
    tokens: Sequence[Sequence[str]],
    values: Tensor,
    valid: Optional[Tensor] = None,
    vmax: Optional[float] = None,
    signed: bool = False,
    labels: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    legend: Optional[str] = None,
    width: int = 480,
) -> np.ndarray:
    """Each sample's tokens on backgrounds coloured by their attribution ``values`` ``(N, T)``; tokens
    outside ``valid`` (padding) are left out. An HxWx3 uint8 array.

    Example:
        >>> import torch
        >>> token_chart([["the", "cat"], ["a", "dog"]], torch.tensor([[0.1, 0.9], [0.5, 0.2]])).shape[2]
        3
    """
    v = values.detach().double().cpu().numpy()
    ok = np.ones(v.shape, dtype=bool) if valid is None else valid.detach().cpu().bool().numpy()
    shown = np.abs(v[ok]) if ok.any() else np.zeros(1)
    top = float(np.nanmax(shown)) if np.isfinite(shown).any() else 1.0
    vmax = float(vmax) if vmax and vmax > 0 else (top if top > 0 else 1.0)
    font = _font(11)

    def length(text: str) -> int:
        return int(font.getlength(text)) if font is not None and hasattr(font, "getlength") else 6 * len(text)

    pad, row_h, gap = 6, 16, 3
    placed: List[tuple] = []  # (x, y, token, rgb background)
    texts: List[tuple] = []
    y = 18 if title else pad
    if title:
        texts.append((pad, 2, title, (0, 0, 0)))
    for i, row in enumerate(tokens):
        if labels is not None:
            texts.append((pad, y, str(labels[i]), (0, 0, 0)))
            y += row_h
        x = pad
        for j, tok in enumerate(row):
            if j >= v.shape[1] or not ok[i, j]:
                continue
            w = length(str(tok)) + 4
            if x + w > width - pad:
                x, y = pad, y + row_h
            placed.append((x, y, w, str(tok), _to_uint8(colormap(np.array(v[i, j] / vmax), signed))))
            x += w + gap
        y += row_h + pad
    img = np.full((y + pad, width, 3), 255, dtype=np.uint8)
    for x, y0, w, tok, rgb in placed:
        img[y0 : y0 + row_h - 2, x : x + w] = rgb
        light = float(np.asarray(rgb, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])) > 140
        texts.append((x + 2, y0, tok, (0, 0, 0) if light else (255, 255, 255)))
    grid = _draw_text(img, texts)
    return np.concatenate([grid, _colorbar(width, signed, vmax, legend)], axis=0)


#: :func:`side_by_side`'s layout: the margin around and between panels, and the height of a panel's title
PANEL_GAP, PANEL_TITLE_H = 8, 16


def side_by_side(panels: Sequence[np.ndarray], titles: Optional[Sequence[str]] = None) -> np.ndarray:
    """``HxWx3`` uint8 pictures joined left to right on white, each under its title, as one picture.

    Shorter panels are padded with white below; a panel ``i`` of ``h x w`` lies at rows
    ``PANEL_TITLE_H .. PANEL_TITLE_H + h`` (no titles: ``0 .. h``) and columns ``x .. x + w``, with
    ``x = PANEL_GAP + sum(width + PANEL_GAP of the panels before it)``.

    Example:
        >>> import numpy as np
        >>> a, b = np.zeros((20, 30, 3), np.uint8), np.zeros((10, 40, 3), np.uint8)
        >>> side_by_side([a, b], ["image", "meta"]).shape
        (36, 94, 3)
    """
    if not panels:
        raise ValueError("side_by_side needs at least one picture")
    if titles is not None and len(titles) != len(panels):
        raise ValueError(f"{len(titles)} titles for {len(panels)} pictures: pass one title per picture")
    for p in panels:
        if p.ndim != 3 or p.shape[2] != 3 or p.dtype != np.uint8:
            raise ValueError(f"side_by_side takes HxWx3 uint8 pictures, got {p.dtype} of shape {p.shape}")
    top = PANEL_TITLE_H if titles is not None else 0
    height = top + max(p.shape[0] for p in panels)
    width = PANEL_GAP + sum(p.shape[1] + PANEL_GAP for p in panels)
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    texts: List[tuple] = []
    x = PANEL_GAP
    for i, p in enumerate(panels):
        out[top : top + p.shape[0], x : x + p.shape[1]] = p
        if titles is not None:
            texts.append((x, 2, str(titles[i]), (0, 0, 0)))
        x += p.shape[1] + PANEL_GAP
    return _draw_text(out, texts) if texts else out


def note_panel(text: str, width: int = 220) -> np.ndarray:
    """A small white ``HxWx3`` uint8 picture holding one line of grey text (a panel with nothing to draw).

    Example:
        >>> note_panel("no picture for shape (3, 5)").shape
        (28, 220, 3)
    """
    img = np.full((28, int(width), 3), 255, dtype=np.uint8)
    return _draw_text(img, [(6, 8, text, (90, 90, 90))], size=10)
