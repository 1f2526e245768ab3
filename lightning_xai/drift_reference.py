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
import warnings
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import functional as F

__all__ = [
    "REFERENCE_FORMAT",
    "ReferenceSpec",
    "parse_reference",
    "load_reference",
    "reference_from_file",
    "write_reference",
    "reference_entry",
    "tag_names",
]

#: The ``"format"`` entry of a reference file written by :meth:`FeatureDriftMonitor.save_reference`.
REFERENCE_FORMAT = "lightning_xai.drift_reference"
_REFERENCE_VERSION = 1



class ReferenceSpec(NamedTuple):
    """A parsed ``reference=``: its description, a fixed reference to read once the probe is known
    (``("tensor"|"file", value)``), and the run epoch of ``"epoch:N"``."""

    description: str
    pending: Optional[Tuple[str, Any]] = None
    epoch: Optional[int] = None


def parse_reference(reference: Any, warmup_epochs: int = 0, every_n_epochs: int = 1) -> ReferenceSpec:
    """Check a ``FeatureDriftMonitor(reference=...)``: ``"first"``, ``"epoch:N"`` (a monitored epoch after
    the warmup), a tensor, or the path of a reference file (read now, so a wrong file fails here).

    Example:
        >>> parse_reference("epoch:3", warmup_epochs=1)
        ReferenceSpec(description='epoch:3', pending=None, epoch=3)
        >>> parse_reference("epoch:0", warmup_epochs=1)
        Traceback (most recent call last):
        ...
        ValueError: reference='epoch:0' falls in the warmup (warmup_epochs=1): pick an epoch >= 1
    """
    if isinstance(reference, Tensor):
        return ReferenceSpec("tensor", ("tensor", reference.detach().clone()))
    if isinstance(reference, os.PathLike):
        reference = os.fspath(reference)
    if not isinstance(reference, str):
        raise TypeError(
            "reference must be 'first', 'epoch:N', a tensor or the path of a file written by "
            f"FeatureDriftMonitor.save_reference; got {type(reference).__name__}"
        )
    if reference == "first":
        return ReferenceSpec("first")
    match = re.fullmatch(r"epoch:(\d+)", reference.strip())
    if match:
        n = int(match.group(1))
        if n < warmup_epochs:
            raise ValueError(
                f"reference={reference!r} falls in the warmup (warmup_epochs={warmup_epochs}): "
                f"pick an epoch >= {warmup_epochs}"
            )
        if (n + 1) % every_n_epochs:
            raise ValueError(
                f"reference={reference!r} is not a monitored epoch with every_n_epochs={every_n_epochs} "
                f"(it runs at epochs {every_n_epochs - 1}, {2 * every_n_epochs - 1}, ...)"
            )
        return ReferenceSpec(f"epoch:{n}", epoch=n)
    if reference.startswith("epoch") or not os.path.isfile(reference):
        raise ValueError(
            f"reference must be 'first', 'epoch:N' (N an epoch number), a tensor, or the path of a file "
            f"written by FeatureDriftMonitor.save_reference; got {reference!r} (no such file)"
        )
    load_reference(reference)  # a file that is not a reference fails now, not at setup
    return ReferenceSpec(f"file:{reference}", ("file", reference))


def reference_from_file(path: str, method: str, size: int, grid: Tuple[int, int], probe_fingerprint: str) -> Dict[str, Any]:
    """The reference in the file at ``path`` for a monitor of ``method`` whose importance has ``size``
    values: ``{"epoch", "importance", "maps"}`` (the maps only when written with the same probe)."""
    data = load_reference(path)
    if data.get("method") != method:
        raise ValueError(
            f"the reference file {path!r} holds {data.get('method')!r} importances but this monitor "
            f"uses {method!r}: pass method={data.get('method')!r} or save a reference with {method!r}"
        )
    importance = torch.as_tensor(data["importance"]).double()
    if importance.numel() != size:
        raise ValueError(
            f"the reference file {path!r} has {importance.numel()} importance values (grid {data.get('grid')}), "
            f"this probe needs {size} (grid {list(grid)}): use the same probe shape and grid"
        )
    maps = data.get("maps")
    if maps is not None and data.get("probe_fingerprint") != probe_fingerprint:
        warnings.warn(
            f"FeatureDriftMonitor: the reference file {path!r} was written with another probe; its global "
            "importance is used, its per-sample maps are not (map_* metrics have no 'ref' values)",
            stacklevel=4,
        )
        maps = None
    return {"epoch": data.get("epoch"), "importance": importance, "maps": maps}


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


