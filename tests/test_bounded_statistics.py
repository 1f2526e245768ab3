"""Per-sample statistics run a few dozen samples at a time (bounded memory) and give exactly the numbers
of one pass over the whole probe."""

from __future__ import annotations

import warnings

import pytest
import torch

from lightning_xai import functional as F
from lightning_xai.functional import drift as D


@pytest.fixture
def maps():  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(150, 3, 12, 12, generator=g), torch.rand(150, 3, 12, 12, generator=g)
    a[7] = 0.0  # a degenerate sample inside a chunk: its defined value must survive the chunking
    return a, b


def _at_once(fn, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(D, "ROWS_PER_CHUNK", 10**9)
    try:
        return fn()
    finally:
        monkeypatch.undo()


def test_chunked_statistics_equal_one_pass(maps, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    a, b = maps
    assert D.ROWS_PER_CHUNK < len(a)  # the probe really is split
    stats = [
        lambda: F.map_spearman(F.per_sample_maps(a), F.per_sample_maps(b)),
        lambda: F.map_ssim(F.per_sample_maps(a), F.per_sample_maps(b)),
        lambda: F.map_similarity(a, b, "spearman"),
        lambda: F.map_similarity(a, b, "ssim"),
        lambda: F.spearman(a, b),
        lambda: torch.tensor(list(F.summarize(a).values())),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", F.DegenerateInputWarning)
        for stat in stats:
            chunked = stat()
            whole = _at_once(stat, monkeypatch)
            assert torch.equal(chunked, whole) or torch.allclose(chunked, whole, rtol=0, atol=1e-12, equal_nan=True)


def test_a_degenerate_sample_warns_once_whatever_the_chunks(maps) -> None:  # type: ignore[no-untyped-def]
    a, b = maps
    with pytest.warns(F.DegenerateInputWarning) as record:
        F.map_spearman(F.per_sample_maps(a), F.per_sample_maps(b))
    assert len(record) == 1 and "1 of 150 samples" in str(record[0].message)
