"""``ProbeSet``: the fixed inputs the callbacks explain, epoch after epoch."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .functional.structured import Inputs, input_entries, is_structured, map_tensors

__all__ = ["ProbeSet"]

Key = Union[None, int, str, Callable[[Any], Any]]
#: ``input_key``: one key, or a tuple of keys (a model with several inputs)
InputKey = Union[Key, Tuple[Union[int, str], ...]]

_INPUT_KEYS = ("input", "inputs", "x", "image", "images", "pixel_values", "features")
_TARGET_KEYS = ("target", "targets", "y", "label", "labels")
_MASK_KEYS = ("mask", "masks")
_MASK_NAMES = ("attention_mask", "mask")


def _as_tensor(value: Any) -> Optional[Tensor]:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype != object:
        return torch.from_numpy(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return torch.tensor(int(value))
    return None


def _tensors(x: Any) -> List[Tensor]:
    """The tensors of an inputs structure, in order."""
    return [t for _, t in input_entries(x)]


def _input_positions(input_key: Any) -> Optional[List[int]]:
    """The tuple positions ``input_key`` takes (None when it is not made of positions)."""
    if input_key is None:
        return [0]
    keys = input_key if isinstance(input_key, tuple) else (input_key,)
    if all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
        return [int(k) for k in keys]
    return None


def _default_target_position(input_key: Any) -> Optional[int]:
    """For tuple items: the first position the inputs do not take (``(img, meta, y)`` with
    ``input_key=(0, 1)`` -> 2), so that a riding input is never taken for the target."""
    positions = _input_positions(input_key)
    if positions is None:
        return None
    return next(i for i in range(len(positions) + 1) if i not in positions)


def _pick_inputs(item: Any, input_key: Any) -> Any:
    """The input part of an item: one tensor, or a tuple (int keys) / dict (str keys) for a tuple key."""
    if not isinstance(input_key, tuple):
        return _as_tensor(_pick(item, input_key, _INPUT_KEYS, "input"))
    if not input_key:
        raise ValueError("input_key=() names no input")
    parts = [_as_tensor(_pick(item, k, _INPUT_KEYS, "input")) for k in input_key]
    for k, part in zip(input_key, parts):
        if part is None:
            raise ValueError(f"input_key {k!r} does not hold a tensor in a dataset item of type {type(item).__name__}")
    if all(isinstance(k, str) for k in input_key):
        return dict(zip(input_key, parts))
    return tuple(parts)


def _pick(item: Any, key: Key, defaults: Sequence[Union[str, int]], what: str, position: Optional[int] = None) -> Any:
    if callable(key):
        return key(item)
    if key is not None:
        try:
            return item[key]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"cannot take {what} key {key!r} from a dataset item of type {type(item).__name__}") from None
    if isinstance(item, Mapping):
        for k in defaults:
            if k in item:
                return item[k]
        return None
    if isinstance(item, (tuple, list)):
        pos = {"input": 0, "target": 1, "mask": 2}[what] if position is None else position
        return item[pos] if len(item) > pos else None
    return item if what == "input" else None


def split_item(
    item: Any, input_key: InputKey = None, target_key: Key = None, mask_key: Key = None
) -> Tuple[Any, Optional[Tensor], Optional[Tensor]]:
    """Split a dataset item or batch (tensor, ``(x, y, ...)`` tuple, or dict) into input, target, mask.

    ``input_key`` may be a tuple of keys (several model inputs): the input is then a tuple of tensors
    (positions) or a dict (names), and the default target of a tuple item is the first position the
    inputs do not take."""
    x = _pick_inputs(item, input_key)
    if x is None:
        kind = type(item).__name__
        hint = (
            f"keys {sorted(map(str, item.keys()))}" if isinstance(item, Mapping) else f"an item of type {kind}"
        )
        raise ValueError(
            f"the dataset's items hold no input tensor ({hint}). Items must be tensors, "
            "(input, target, ...) tuples or dicts; pass input_key=<key or function> to say where "
            "the input is, and convert images to tensors in the dataset's transform"
        )
    y = _pick(item, target_key, _TARGET_KEYS, "target", _default_target_position(input_key))
    m = _pick(item, mask_key, _MASK_KEYS, "mask") if mask_key is not None or isinstance(item, Mapping) else None
    return x, _as_tensor(y), _as_tensor(m)


class ProbeSet:
    """The fixed, seeded set of inputs (with optional targets, masks and feature names) to explain.

    Build one from tensors, a dataset or a dataloader; the same seed selects the same samples on
    every run and every rank. Callbacks move it to the model's device and dtype when they use it,
    and save its selection in their checkpoint state.

    Args:
        inputs: ``(N, ...)`` tensor of model inputs; or a tuple of them (the model is called
            ``model(*inputs)``) or a dict (``model(**inputs)``). Floating-point tensors are attributed,
            the others (attention masks, ids) ride along to the model unchanged.
        targets: optional ``(N,)`` tensor of class indices (needed for ``target="true"``).
        masks: optional ground-truth masks, shaped like ``inputs`` or ``(N, 1, H, W)``/``(N, H, W)``.
        feature_names: optional names of the features of tabular inputs ``(N, F)``.
        vocab, decode: for token ids, how the pictures show them: ``vocab[id]`` or ``decode(ids)``.

    Example:
        >>> import torch
        >>> from lightning_xai import ProbeSet
        >>> data = torch.utils.data.TensorDataset(torch.randn(100, 4), torch.arange(100) % 3)
        >>> probe = ProbeSet.from_dataset(data, n=12, seed=0)
        >>> len(probe), probe.targets.bincount().tolist()
        (12, [4, 4, 4])
        >>> ProbeSet.from_dataset(data, n=12, seed=0).indices == probe.indices
        True
    """

    def __init__(
        self,
        inputs: Inputs,
        targets: Optional[Tensor] = None,
        masks: Optional[Tensor] = None,
        feature_names: Optional[Sequence[str]] = None,
        *,
        indices: Optional[Sequence[int]] = None,
        vocab: Optional[Sequence[str]] = None,
        decode: Optional[Callable[[List[int]], Sequence[str]]] = None,
    ) -> None:
        #: how token ids are shown: ``vocab[id]``, or ``decode(ids) -> tokens`` (pictures of text probes)
        self.vocab: Optional[List[str]] = None if vocab is None else [str(v) for v in vocab]
        self.decode = decode
        if is_structured(inputs):
            inputs = self._check_structure(inputs, masks, feature_names)
            inputs_t: Optional[Tensor] = _tensors(inputs)[0]
        else:
            inputs_t = _as_tensor(inputs)
        if inputs_t is None:
            raise TypeError(
                f"ProbeSet inputs must be a tensor, a tuple of tensors or a dict of tensors, got {type(inputs).__name__}"
            )
        if inputs_t.dim() < 2 or inputs_t.shape[0] == 0:
            raise ValueError(
                f"ProbeSet inputs must be (N, ...) with N >= 1 samples, got shape {tuple(inputs_t.shape)}"
            )
        n = inputs_t.shape[0]
        self._inputs: Any = (
            map_tensors(lambda t: t.detach().clone(), inputs) if is_structured(inputs) else inputs_t.detach().clone()
        )
        self._targets: Optional[Tensor] = None
        if targets is not None:
            t = _as_tensor(targets)
            if t is not None and t.dim() == 2 and t.shape[0] == n and t.shape[1] > 1:
                # multi-label: one multi-hot row per input
                if not bool(((t == 0) | (t == 1)).all()):
                    raise ValueError("ProbeSet targets of shape (N, classes) must be multi-hot (0/1 per class)")
                self._targets = t.detach().clone()
            else:
                if t is None or t.reshape(-1).shape[0] != n:
                    raise ValueError(
                        f"ProbeSet targets must be {n} values, one per input (or (N, classes) multi-hot rows); "
                        f"got {targets!r:.80}"
                    )
                self._targets = t.detach().reshape(-1).clone()
        self._masks: Optional[Tensor] = None
        if masks is not None:
            m = _as_tensor(masks)
            if m is None or m.shape[0] != n:
                raise ValueError(f"ProbeSet masks must have one mask per input ({n}); got {type(masks).__name__}")
            if m.dim() == inputs_t.dim() - 1:
                m = m.unsqueeze(1)
            if m.dim() != inputs_t.dim() or m.shape[2:] != inputs_t.shape[2:]:
                raise ValueError(
                    f"ProbeSet masks of shape {tuple(m.shape)} do not fit inputs of shape {tuple(inputs_t.shape)}: "
                    "give (N, H, W), (N, 1, H, W) or the inputs' shape"
                )
            self._masks = m.detach().clone().bool() if m.dtype == torch.bool else m.detach().clone().float()
        self.feature_names: Optional[List[str]] = None
        if feature_names is not None:
            names = [str(f) for f in feature_names]
            n_features = int(np.prod(inputs_t.shape[1:]))
            if len(names) != n_features:
                raise ValueError(f"{len(names)} feature_names for inputs with {n_features} features per sample")
            self.feature_names = names
        self.indices: Optional[List[int]] = None if indices is None else [int(i) for i in indices]
        self._fingerprint: Optional[Tuple[Tuple[int, ...], str]] = None
        self._device_copies: Dict[Tuple[Any, Any], Tuple[Tensor, int, int]] = {}

    @staticmethod
    def _check_structure(inputs: Any, masks: Any, feature_names: Any) -> Any:
        if isinstance(inputs, Mapping):
            if not inputs or not all(isinstance(k, str) for k in inputs):
                raise ValueError("a dict of ProbeSet inputs needs at least one entry, with str keys (the model's argument names)")
        elif not inputs:
            raise ValueError("a tuple of ProbeSet inputs needs at least one tensor")
        converted = {k: _as_tensor(v) for k, v in (inputs.items() if isinstance(inputs, Mapping) else enumerate(inputs))}
        bad = [k for k, v in converted.items() if v is None or v.dim() < 1]
        if bad:
            raise TypeError(f"ProbeSet inputs {bad} are not tensors with a batch dimension")
        rows = {k: int(v.shape[0]) for k, v in converted.items()}  # type: ignore[union-attr]
        if len(set(rows.values())) != 1:
            raise ValueError(f"every ProbeSet input needs the same number of samples, got {rows}")
        if masks is not None or feature_names is not None:
            raise ValueError("masks and feature_names describe a single input tensor; a probe of several inputs takes neither")
        if isinstance(inputs, Mapping):
            return dict(converted)
        return tuple(converted.values())

    # The probe is fixed once built: its tensors cannot be re-bound, and the fingerprint and device
    # copies are cached. A tensor changed in place anyway is noticed (torch's version counter) and
    # the caches are refreshed, so that they never go stale.
    @property
    def inputs(self) -> Any:
        """``(N, ...)`` model inputs: a tensor, or a tuple or dict of them (read-only attribute)."""
        return self._inputs

    @property
    def structured(self) -> bool:
        """True when the model takes several inputs (a tuple or dict of tensors)."""
        return is_structured(self._inputs)

    @property
    def targets(self) -> Optional[Tensor]:
        """``(N,)`` class indices, or None (read-only attribute)."""
        return self._targets

    @property
    def multilabel(self) -> bool:
        """True when the targets are ``(N, classes)`` multi-hot rows (several labels per sample)."""
        return self._targets is not None and self._targets.dim() == 2

    @property
    def masks(self) -> Optional[Tensor]:
        """Ground-truth masks, or None (read-only attribute)."""
        return self._masks

    def _versions(self) -> Tuple[int, ...]:
        return tuple(-1 if t is None else t._version for t in (*_tensors(self._inputs), self._targets))

    # ---------------------------------------------------------------------------------- builders
    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        n: int,
        seed: int = 0,
        stratify: bool = True,
        *,
        input_key: InputKey = None,
        target_key: Key = None,
        mask_key: Key = None,
        feature_names: Optional[Sequence[str]] = None,
    ) -> "ProbeSet":
        """Draw ``n`` samples from a map-style dataset with a private generator seeded by ``seed``.

        With ``stratify=True`` and targets present, classes are represented in proportion to the
        dataset (at least one sample per class while ``n`` allows), in a class-interleaved order.
        Items may be tensors, ``(x, y, ...)`` tuples or dicts; ``input_key``/``target_key``/``mask_key``
        (a key, an index or a function of the item) say where the parts are when the defaults don't;
        ``input_key`` may be a tuple of keys for a model with several inputs (``(0, 1)``: a tuple probe,
        ``("input_ids", "attention_mask")``: a dict probe). On ``(img, meta, y)`` items,
        ``input_key=(0, 1)`` takes the target from position 2 (or pass ``target_key=2``).
        """
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"ProbeSet.from_dataset needs a map-style dataset (with __len__ and __getitem__), got "
                f"{type(dataset).__name__}; use ProbeSet.from_dataloader for iterable datasets"
            )
        size = len(dataset)
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"probe size n must be a positive int, got {n!r}")
        if n > size:
            raise ValueError(
                f"probe size n={n} is larger than the dataset ({size} items): pass n <= {size}"
            )
        g = torch.Generator().manual_seed(int(seed))
        labels = _dataset_targets(dataset, input_key, target_key, mask_key) if stratify else None
        if labels is not None and labels.is_floating_point():
            if not bool((labels == labels.round()).all()):  # regression targets: no classes to balance
                warnings.warn(
                    "ProbeSet.from_dataset: the targets are real numbers, not class indices; the probe is drawn "
                    "without stratification (pass stratify=False to say so)",
                    stacklevel=2,
                )
                labels = None
        if labels is not None:
            chosen = _stratified(labels, n, g)
        else:
            chosen = torch.randperm(size, generator=g)[:n].tolist()
        items = [split_item(dataset[i], input_key, target_key, mask_key) for i in chosen]
        return cls._from_items(items, chosen, feature_names)

    @classmethod
    def from_dataloader(
        cls,
        loader: Any,
        n: int,
        seed: int = 0,
        stratify: bool = True,
        *,
        input_key: InputKey = None,
        target_key: Key = None,
        mask_key: Key = None,
        feature_names: Optional[Sequence[str]] = None,
    ) -> "ProbeSet":
        """Draw ``n`` samples from a dataloader's dataset (seeded, as :meth:`from_dataset`).

        For an iterable dataset the first ``n`` samples the loader yields are taken; make the loader
        deterministic (no shuffling) so that every run gets the same probe.
        """
        dataset = getattr(loader, "dataset", None)
        if dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__") and not isinstance(
            dataset, torch.utils.data.IterableDataset
        ):
            return cls.from_dataset(
                dataset, n, seed, stratify, input_key=input_key, target_key=target_key,
                mask_key=mask_key, feature_names=feature_names,
            )
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"probe size n must be a positive int, got {n!r}")
        items: List[Tuple[Tensor, Optional[Tensor], Optional[Tensor]]] = []
        for batch in loader:
            x, y, m = split_item(batch, input_key, target_key, mask_key)
            for i in range(_tensors(x)[0].shape[0]):
                items.append((map_tensors(lambda t: t[i], x), None if y is None else y[i], None if m is None else m[i]))
                if len(items) == n:
                    break
            if len(items) == n:
                break
        if len(items) < n:
            raise ValueError(f"probe size n={n} is larger than the loader's data ({len(items)} samples): pass n <= {len(items)}")
        return cls._from_items(items, list(range(n)), feature_names)

    @classmethod
    def _from_items(
        cls,
        items: List[Tuple[Any, Optional[Tensor], Optional[Tensor]]],
        indices: List[int],
        feature_names: Optional[Sequence[str]],
    ) -> "ProbeSet":
        shapes = {tuple(tuple(t.shape) for t in _tensors(x)) for x, _, _ in items}
        if len(shapes) != 1:
            raise ValueError(f"the selected items have inputs of different shapes {sorted(shapes)}; a probe needs one shape")
        first = items[0][0]
        inputs: Any
        if isinstance(first, Mapping):
            inputs = {k: torch.stack([x[k] for x, _, _ in items]) for k in first}
        elif isinstance(first, (tuple, list)):
            inputs = tuple(torch.stack([x[j] for x, _, _ in items]) for j in range(len(first)))
        else:
            inputs = torch.stack([x for x, _, _ in items])
        ys = [y for _, y, _ in items if y is not None]
        targets = (
            torch.stack([y.reshape(()) if y.numel() == 1 else y.reshape(-1) for y in ys]) if len(ys) == len(items) else None
        )
        ms = [m for _, _, m in items if m is not None]
        masks = torch.stack(ms) if len(ms) == len(items) else None
        return cls(inputs, targets, masks, feature_names, indices=indices)

    # ---------------------------------------------------------------------------------- use
    def __len__(self) -> int:
        return int(_tensors(self.inputs)[0].shape[0])

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}" for name, v in (("targets", self.targets), ("masks", self.masks)) if v is not None
        )
        shape = map_tensors(lambda t: tuple(t.shape[1:]), self.inputs) if self.structured else tuple(self.inputs.shape[1:])
        return f"ProbeSet(n={len(self)}, shape={shape}{extra})"

    @property
    def kind(self) -> str:
        """``"image"`` for ``(N, C, H, W)``, ``"tabular"`` for ``(N, F)``, ``"sequence"`` for floating
        ``(N, C, T)``, ``"text"`` for integer ``(N, T)`` token ids, ``"structured"`` for several inputs (a
        tuple or dict), else ``"other"``."""
        if self.structured:
            return "structured"
        if self.inputs.dim() == 2 and not self.inputs.is_floating_point() and self.inputs.dtype != torch.bool:
            return "text"
        if self.inputs.dim() == 3 and self.inputs.is_floating_point():
            return "sequence"
        return {4: "image", 2: "tabular"}.get(self.inputs.dim(), "other")

    def tokens(self, i: int) -> List[str]:
        """Sample ``i``'s tokens as text: through ``decode`` (ids -> list of strings), ``vocab[id]``, or the ids."""
        ids = self.token_ids()
        if ids is None:
            raise ValueError(f"{self!r} holds no token ids")
        return self.token_text([int(v) for v in ids[i].tolist()])

    def token_text(self, ids: Sequence[int]) -> List[str]:
        """Token ids as text: through ``decode`` (ids -> list of strings), ``vocab[id]``, or the ids themselves.

        Example:
            >>> import torch
            >>> ProbeSet(torch.tensor([[1, 2]]), vocab=["<pad>", "good", "film"]).token_text([2, 1, 7])
            ['film', 'good', '<7>']
        """
        row = [int(v) for v in ids]
        if self.decode is not None:
            return [str(t) for t in self.decode(row)]
        if self.vocab is not None:
            return [self.vocab[v] if 0 <= v < len(self.vocab) else f"<{v}>" for v in row]
        return [str(v) for v in row]

    def token_ids(self) -> Optional[Tensor]:
        """The ``(N, T)`` token ids of a text probe: the inputs themselves, or the integer entry named
        ``input_ids``/``ids``/``tokens`` of several inputs (else the first ``(N, T)`` integer one that is
        not a mask); None when the probe holds no ids."""
        key = self.token_key()
        if key is None:
            return self.inputs if self.kind == "text" else None
        return dict(input_entries(self.inputs))[key]

    def token_key(self) -> Any:
        """Where :meth:`token_ids` are among several inputs: their dict key or tuple position (None for a
        probe of one input, or of several with no ids). Whether a model reads them with an embedding is
        the model's business: maps have an entry there only when it does (else the ids ride along).

        Example:
            >>> import torch
            >>> ids = torch.tensor([[5, 2, 0], [7, 0, 0]])
            >>> mask = (ids != 0).long()
            >>> ProbeSet({"input_ids": ids, "attention_mask": mask}).token_key(), ProbeSet((mask, ids)).token_key()
            ('input_ids', 1)
        """
        if not self.structured:
            return None
        ints = {
            k: t for k, t in input_entries(self.inputs)
            if t.dim() == 2 and not t.is_floating_point() and t.dtype != torch.bool
        }
        for k in ("input_ids", "ids", "tokens"):
            if k in ints:
                return k
        rest = [k for k in ints if str(k) not in _MASK_NAMES]
        # a tuple names nothing: an attention mask holds only 0 and 1, ids (almost always) more
        ids = [k for k in rest if ints[k].numel() and int(ints[k].max()) > 1]
        return (ids or rest or [None])[0]

    def padding(self, pad_id: int = 0) -> Optional[Tensor]:
        """``(N, T)`` True at padding positions of a text probe: where an ``attention_mask`` (or ``mask``)
        input is 0, else where the ids equal ``pad_id``; None when the probe holds no ids."""
        ids = self.token_ids()
        if ids is None:
            return None
        if isinstance(self.inputs, Mapping):
            for k in _MASK_NAMES:
                m = self.inputs.get(k)
                if isinstance(m, Tensor) and tuple(m.shape) == tuple(ids.shape):
                    return m == 0
        return ids == int(pad_id)

    @property
    def names(self) -> List[str]:
        """Feature names for tabular probes (``f0, f1, ...`` when none were given)."""
        if self.feature_names is not None:
            return list(self.feature_names)
        return [f"f{i}" for i in range(int(np.prod(self.inputs.shape[1:])))]

    def inputs_for(self, module: torch.nn.Module) -> Any:
        """The inputs on ``module``'s device, in its floating dtype when the inputs are floating.

        The copy is made once per device and dtype and reused (a probe on a GPU is not copied
        from the host at every epoch); it is made again if either tensor was changed in place.
        Several inputs (a tuple or dict) are moved each; only floating-point ones change dtype.
        """
        param = next(iter(module.parameters()), None)
        if self.structured:
            if param is None:
                return self._inputs
            return map_tensors(
                lambda t: t.to(device=param.device, dtype=param.dtype if t.is_floating_point() and param.is_floating_point() else t.dtype),
                self._inputs,
            )
        if param is None:
            return self._inputs
        dtype = param.dtype if self._inputs.is_floating_point() and param.is_floating_point() else self._inputs.dtype
        if param.device == self._inputs.device and dtype == self._inputs.dtype:
            return self._inputs
        key = (param.device, dtype)
        cached = self._device_copies.get(key)
        if cached is not None and cached[1] == self._inputs._version and cached[2] == cached[0]._version:
            return cached[0]
        x = self._inputs.to(device=param.device, dtype=dtype)
        self._device_copies[key] = (x, self._inputs._version, x._version)
        return x

    def fingerprint(self) -> str:
        """A hash of the probe's inputs (and targets): equal probes have equal fingerprints.

        Hashed once and cached (the probe is fixed once built).

        Example:
            >>> import torch
            >>> a = ProbeSet(torch.ones(2, 3), targets=torch.tensor([0, 1]))
            >>> a.fingerprint() == ProbeSet(torch.ones(2, 3), targets=torch.tensor([0, 1])).fingerprint()
            True
            >>> a.fingerprint() == ProbeSet(torch.ones(2, 3), targets=torch.tensor([1, 1])).fingerprint()
            False
        """
        versions = self._versions()
        if self._fingerprint is not None and self._fingerprint[0] == versions:
            return self._fingerprint[1]
        h = hashlib.sha1()
        if self.structured:  # each input with its key, shape and dtype
            entries = self._inputs.items() if isinstance(self._inputs, Mapping) else enumerate(self._inputs)
            for k, t in entries:
                h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
                h.update(_raw_bytes(t))
        else:
            h.update(str(tuple(self._inputs.shape)).encode())
            h.update(_raw_bytes(self._inputs))
        if self._targets is not None:
            h.update(_raw_bytes(self._targets))
        digest = h.hexdigest()[:16]
        self._fingerprint = (versions, digest)
        return digest

    def state_dict(self) -> Dict[str, Any]:
        """The probe's selection, saved in callback state (indices and a fingerprint)."""
        return {"indices": self.indices, "fingerprint": self.fingerprint(), "n": len(self)}


def _raw_bytes(t: Tensor) -> bytes:
    """The tensor's bytes, for any dtype (numpy has no bfloat16)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _dataset_targets(dataset: Any, input_key: InputKey, target_key: Key, mask_key: Key) -> Optional[Tensor]:
    """All targets of a dataset, cheaply where it exposes them; None when it has none."""
    tensors = getattr(dataset, "tensors", None)  # TensorDataset
    position = _default_target_position(input_key) if target_key is None else target_key
    if isinstance(position, int) and isinstance(tensors, tuple) and len(tensors) > position:
        t = tensors[position]
        return t.reshape(-1) if t.dim() <= 1 or t.shape[1:].numel() == 1 else None
    attr = getattr(dataset, "targets", None)
    if target_key is None and input_key is None and attr is not None:
        t = _as_tensor(np.asarray(attr)) if not isinstance(attr, Tensor) else attr
        if t is not None and t.dim() == 1 and len(t) == len(dataset):
            return t
    if len(dataset) == 0:
        return None
    _, y0, _ = split_item(dataset[0], input_key, target_key, mask_key)
    if y0 is None or y0.numel() != 1:
        return None
    ys = []
    for i in range(len(dataset)):
        _, y, _ = split_item(dataset[i], input_key, target_key, mask_key)
        ys.append(float(y) if y0.is_floating_point() else int(y))  # type: ignore[arg-type]
    return torch.tensor(ys)  # real numbers (regression targets) are drawn unstratified, with a notice


def _stratified(labels: Tensor, n: int, g: torch.Generator) -> List[int]:
    labels = labels.reshape(-1).long()
    classes = torch.unique(labels).tolist()
    counts = torch.tensor([(labels == c).sum().item() for c in classes], dtype=torch.float64)
    # proportional allocation, largest remainder; at least one per class while n allows
    quota = counts / counts.sum() * n
    alloc = torch.floor(quota).long()
    if n >= len(classes):
        alloc = torch.maximum(alloc, torch.ones_like(alloc))
    alloc = torch.minimum(alloc, counts.long())
    rem = (quota - torch.floor(quota)).tolist()
    order = sorted(range(len(classes)), key=lambda i: (-rem[i], i))
    while int(alloc.sum()) < n:
        for i in order:
            if int(alloc.sum()) >= n:
                break
            if alloc[i] < counts[i]:
                alloc[i] += 1
    while int(alloc.sum()) > n:
        i = int(torch.argmax(alloc))
        alloc[i] -= 1
    per_class: List[List[int]] = []
    for c, k in zip(classes, alloc.tolist()):
        idx = torch.nonzero(labels == c).reshape(-1)
        per_class.append(idx[torch.randperm(len(idx), generator=g)[:k]].tolist())
    chosen: List[int] = []
    depth = max(len(p) for p in per_class)
    for r in range(depth):  # interleave classes: 0, 1, 2, ..., 0, 1, 2, ...
        for p in per_class:
            if r < len(p):
                chosen.append(p[r])
    return chosen


class ProbeSpec:
    """A probe described by size, seed and source, drawn when training starts (for YAML/LightningCLI).

    Callbacks accept it wherever they accept a :class:`ProbeSet`; at ``setup`` it becomes
    ``ProbeSet.from_dataloader(<source loader>, n, seed, stratify)``, the loader taken from the
    datamodule (or the LightningModule's ``*_dataloader`` hooks), or, for loaders passed straight to
    ``fit``/``validate``, from the trainer when validation starts.

    Args:
        n: number of samples. seed: selection seed. stratify: balance classes.
        source: ``"val"`` (default), ``"train"`` or ``"test"``: which dataloader to draw from.
        input_key, target_key, mask_key: where the parts of an item are (see ``ProbeSet.from_dataset``);
            ``input_key`` may be a tuple (a list in YAML) of keys for a model with several inputs.
        feature_names: names of tabular features.

    In a LightningCLI config::

        trainer:
          callbacks:
            - class_path: lightning_xai.callbacks.AttributionMonitor
              init_args:
                probe: {class_path: lightning_xai.ProbeSpec, init_args: {n: 16, seed: 0, source: val}}
                methods: [saliency, integrated_gradients]

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> spec = ProbeSpec(n=4, seed=1)
        >>> loader = DataLoader(TensorDataset(torch.randn(20, 3), torch.arange(20) % 2), batch_size=8)
        >>> spec.build_from(loader).inputs.shape
        torch.Size([4, 3])
    """

    SOURCES = ("val", "train", "test")

    def __init__(
        self,
        n: int = 16,
        seed: int = 0,
        source: str = "val",
        stratify: bool = True,
        input_key: Union[None, int, str, Tuple[Union[int, str], ...], List[Union[int, str]]] = None,
        target_key: Optional[Union[int, str]] = None,
        mask_key: Optional[Union[int, str]] = None,
        feature_names: Optional[List[str]] = None,
    ) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"ProbeSpec n must be a positive int, got {n!r}")
        if source not in self.SOURCES:
            raise ValueError(f"ProbeSpec source must be one of {', '.join(self.SOURCES)}, got {source!r}")
        self.n, self.seed, self.source, self.stratify = n, int(seed), source, bool(stratify)
        if isinstance(input_key, list):  # a YAML list: several inputs
            input_key = tuple(input_key)
        self.input_key, self.target_key, self.mask_key = input_key, target_key, mask_key
        self.feature_names = feature_names

    def __repr__(self) -> str:
        return f"ProbeSpec(n={self.n}, seed={self.seed}, source={self.source!r})"

    def build_from(self, loader: Any) -> ProbeSet:
        """Draw the probe from a dataloader (the first one when given a list or dict of loaders)."""
        if isinstance(loader, (list, tuple)):
            loader = loader[0] if loader else None
        elif isinstance(loader, Mapping):
            loader = next(iter(loader.values()), None)
        if loader is None:
            raise ValueError(f"{self!r}: there is no {self.source} dataloader to draw the probe from")
        return ProbeSet.from_dataloader(
            loader, self.n, self.seed, self.stratify, input_key=self.input_key,
            target_key=self.target_key, mask_key=self.mask_key, feature_names=self.feature_names,
        )
