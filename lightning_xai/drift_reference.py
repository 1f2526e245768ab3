"""Drift references on disk, and the feature names drift logs: no Lightning here.

A reference file is a ``torch.save`` of a dict (``format``, ``version``, ``method``, ``epoch``,
``grid``, ``importance``, ``maps``, ``probe_fingerprint``, ``feature_names``) of tensors and plain
values, written by :meth:`~lightning_xai.callbacks.FeatureDriftMonitor.save_reference` and read by
:func:`load_reference`.

Example:
    >>> import os, tempfile, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "ref.pt")
    >>> write_reference(path, method="saliency", epoch=3, grid=[4, 4], importance=torch.ones(5), maps=None,
    ...                 probe_fingerprint="abc", feature_names=list("abcde"))
    >>> load_reference(path)["epoch"], tag_names(["x 1", "x 1", "a/b"])
    (3, ['x_1', 'x_1_1', 'a_b'])
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import functional as F

__all__ = ["REFERENCE_FORMAT", "load_reference", "write_reference", "reference_entry", "tag_names"]

#: The ``"format"`` entry of a reference file written by :meth:`FeatureDriftMonitor.save_reference`.
REFERENCE_FORMAT = "lightning_xai.drift_reference"
_REFERENCE_VERSION = 1



def load_reference(path: "Union[str, os.PathLike[str]]") -> Dict[str, Any]:
    """Read a reference file written by :meth:`FeatureDriftMonitor.save_reference`.

    Returns its dict: ``importance`` (1-D float64 tensor), ``maps`` (per-sample maps or None),
    ``method``, ``epoch``, ``grid``, ``probe_fingerprint``, ``feature_names``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"reference file {path!r} does not exist; write one with FeatureDriftMonitor.save_reference(path)"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the fix
        raise ValueError(
            f"cannot read {path!r} as a drift reference ({type(err).__name__}: {err}); "
            "write one with FeatureDriftMonitor.save_reference(path)"
        ) from err
    if not isinstance(data, dict) or data.get("format") != REFERENCE_FORMAT:
        raise ValueError(
            f"{path!r} is not a drift reference file (no format {REFERENCE_FORMAT!r}); "
            "write one with FeatureDriftMonitor.save_reference(path)"
        )
    if int(data.get("version", 0)) > _REFERENCE_VERSION:
        raise ValueError(
            f"{path!r} was written by a newer lightning_xai (reference format version {data['version']}); upgrade"
        )
    return data


def write_reference(path: "Union[str, os.PathLike[str]]", *, method: str, epoch: Optional[int], grid: List[int],
                    importance: Tensor, maps: Optional[Tensor], probe_fingerprint: str,
                    feature_names: List[str]) -> None:
    """Write a reference file that :func:`load_reference` reads."""
    torch.save(
        {
            "format": REFERENCE_FORMAT,
            "version": _REFERENCE_VERSION,
            "method": method,
            "epoch": epoch,
            "grid": list(grid),
            "importance": importance.clone(),
            "maps": None if maps is None else maps.clone(),
            "probe_fingerprint": probe_fingerprint,
            "feature_names": list(feature_names),
        },
        os.fspath(path),
    )


def reference_entry(t: Tensor, probe_shape: Tuple[int, ...], grid: Tuple[int, int], size: int) -> Dict[str, Any]:
    """A reference given as a tensor: an importance vector of ``size`` values, or attributions shaped
    like the probe's inputs (reduced to importance and per-sample maps); a ``ValueError`` otherwise."""
    t = t.detach()
    if t.dim() == 1:
        if t.numel() != size:
            raise ValueError(
                f"reference tensor has {t.numel()} values; an importance vector for this probe "
                f"{tuple(probe_shape)} with grid={grid} has {size} "
                "(or pass attributions shaped like the probe's inputs)"
            )
        if bool((t < 0).any()):
            raise ValueError("a reference importance vector must be >= 0 (mean |attribution| per feature)")
        return {"epoch": None, "importance": t.double().cpu().clone(), "maps": None}
    if tuple(t.shape) != tuple(probe_shape):
        raise ValueError(
            f"reference tensor of shape {tuple(t.shape)} is neither an importance vector ({size} values) "
            f"nor attributions shaped like the probe's inputs {tuple(probe_shape)}"
        )
    return {"epoch": None, "importance": F.feature_importance(t, grid), "maps": F.per_sample_maps(t)}


def tag_names(names: Sequence[str]) -> List[str]:
    """Feature names made safe and unique as TensorBoard tag parts."""
    return _unique([_tag_name(n) for n in names])


def _tag_name(name: str) -> str:
    """A feature name made safe for a TensorBoard tag part (no '/', no spaces)."""
    return re.sub(r"[^\w.\-\[\],]+", "_", name.strip()) or "_"


def _unique(names: Sequence[str]) -> List[str]:
    seen: Dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}_{seen[n]}")
        else:
            seen[n] = 0
            out.append(n)
    return out


