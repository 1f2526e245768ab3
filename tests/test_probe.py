"""ProbeSet: seeded, stratified, any batch shape, clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from lightning_xai import ProbeSet


def _labelled(n=60, classes=3):
    x = torch.arange(n * 4, dtype=torch.float32).reshape(n, 4)
    return TensorDataset(x, torch.arange(n) % classes)


def test_same_seed_same_probe_and_different_seed_differs():
    ds = _labelled()
    a, b = ProbeSet.from_dataset(ds, 9, seed=3), ProbeSet.from_dataset(ds, 9, seed=3)
    assert a.indices == b.indices and torch.equal(a.inputs, b.inputs) and a.fingerprint() == b.fingerprint()
    c = ProbeSet.from_dataset(ds, 9, seed=4)
    assert c.indices != a.indices
    # the global RNG is not used (same selection whatever its state, and its state is untouched)
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    assert ProbeSet.from_dataset(ds, 9, seed=3).indices == a.indices
    assert torch.equal(torch.random.get_rng_state(), state)


def test_same_probe_in_another_process():
    code = (
        "import torch; from torch.utils.data import TensorDataset; from lightning_xai import ProbeSet;"
        "ds = TensorDataset(torch.arange(240, dtype=torch.float32).reshape(60, 4), torch.arange(60) % 3);"
        "print(ProbeSet.from_dataset(ds, 9, seed=3).indices)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(ProbeSet.from_dataset(_labelled(), 9, seed=3).indices)


def test_stratified_by_class_and_interleaved():
    x = torch.randn(100, 2)
    y = torch.tensor([0] * 70 + [1] * 20 + [2] * 10)
    p = ProbeSet.from_dataset(TensorDataset(x, y), 10, seed=0)
    assert p.targets.bincount().tolist() == [7, 2, 1]
    assert p.targets[:3].tolist() == [0, 1, 2]  # classes interleaved for the image grid
    tiny = ProbeSet.from_dataset(TensorDataset(x, y), 3, seed=0)
    assert sorted(tiny.targets.tolist()) == [0, 1, 2]  # every class while n allows


class DictData(Dataset):
    def __len__(self):
        return 20

    def __getitem__(self, i):
        return {"image": torch.full((1, 2, 2), float(i)), "label": i % 2, "mask": torch.ones(1, 2, 2)}


class NumpyTuples(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return np.full(3, i, dtype=np.float32), np.int64(i % 2)


def test_dict_tuple_and_numpy_items():
    p = ProbeSet.from_dataset(DictData(), 4)
    assert p.inputs.shape == (4, 1, 2, 2) and p.targets is not None and p.masks is not None
    assert torch.equal(p.inputs[:, 0, 0, 0].long() % 2, p.targets)
    q = ProbeSet.from_dataset(NumpyTuples(), 4)
    assert q.inputs.dtype == torch.float32 and q.kind == "tabular"
    r = ProbeSet.from_dataset(DictData(), 4, input_key=lambda d: d["image"] * 2, target_key="label")
    assert torch.equal(r.inputs, p.inputs * 2)


def test_from_dataloader_uses_dataset_or_iterates():
    ds = _labelled()
    via_loader = ProbeSet.from_dataloader(DataLoader(ds, batch_size=7, shuffle=True), 9, seed=3)
    assert via_loader.indices == ProbeSet.from_dataset(ds, 9, seed=3).indices

    class Stream(IterableDataset):
        def __iter__(self):
            for i in range(30):
                yield torch.full((2,), float(i)), i % 3

    p = ProbeSet.from_dataloader(DataLoader(Stream(), batch_size=4), 6)
    assert p.inputs[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match=r"probe size n=40 is larger than the loader's data \(30 samples\)"):
        ProbeSet.from_dataloader(DataLoader(Stream(), batch_size=4), 40)


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"probe size n=61 is larger than the dataset \(60 items\): pass n <= 60"):
        ProbeSet.from_dataset(_labelled(), 61)

    class Strings(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return ("a picture", "cat")

    with pytest.raises(ValueError, match="hold no input tensor.*input_key"):
        ProbeSet.from_dataset(Strings(), 2, stratify=False)
    with pytest.raises(ValueError, match="feature_names for inputs with 4 features"):
        ProbeSet(torch.zeros(2, 4), feature_names=["a"])
    with pytest.raises(ValueError, match="masks of shape"):
        ProbeSet(torch.zeros(2, 1, 4, 4), masks=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="targets must be 2 values"):
        ProbeSet(torch.zeros(2, 4), targets=torch.zeros(3))


def test_moved_to_model_device_and_dtype():
    p = ProbeSet(torch.rand(2, 3))
    net = torch.nn.Linear(3, 1).double()
    assert p.inputs_for(net).dtype == torch.float64
    assert p.state_dict()["fingerprint"] == p.fingerprint()


def test_functional_never_imports_lightning():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('pytorch_lightning', 'lightning', 'tensorboard'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import lightning_xai.functional as F, lightning_xai\n"
        "import torch\n"
        "print(F.saliency(torch.nn.Linear(2, 2), torch.ones(1, 2), 0).shape)\n"
        "assert not any(m.split('.')[0] in ('pytorch_lightning', 'lightning', 'tensorboard') for m in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
