"""The whole suite under real 2-process DDP (gloo, CPU): same values as one process, each tag once per epoch."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import DataLoader

from .fixtures import GATE_CHECKS, Interleave, LitClassifier, OneThread, PlainCNN, image_data, read_events, suite, trainer, xai_scalars

EPOCHS = 3


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _run(root, devices: int):
    kwargs = {"strategy": "ddp_spawn", "devices": 2} if devices == 2 else {}
    tr = trainer(root, [*suite(), OneThread()], max_epochs=EPOCHS, use_distributed_sampler=False, **kwargs)
    torch.manual_seed(0)
    model = LitClassifier(PlainCNN((4, 6)))
    ds = image_data(64)
    loader = DataLoader(ds, batch_size=32 // devices, sampler=Interleave(len(ds)))
    tr.fit(model, loader, loader)
    return xai_scalars(read_events(os.path.join(str(root), "run", "version_0"))), read_events(
        os.path.join(str(root), "run", "version_0")
    )


def test_whole_suite_under_ddp_logs_the_single_process_values_once(tmp_path):
    single, ea_single = _run(tmp_path / "single", devices=1)
    ddp, ea_ddp = _run(tmp_path / "ddp", devices=2)
    steps = [2 * (e + 1) for e in range(EPOCHS)]  # 64 samples, 32 per step (2 x 16 under DDP)
    assert set(ddp) == set(single), set(ddp) ^ set(single)
    families = ("xai/attr/", "xai/drift/", "xai/dead_relu/", "xai/dead_relu_dormant/", "xai/check/", "xai/gate/")
    for family in families:
        assert any(t.startswith(family) for t in ddp), family
    assert {f"xai/check/{c}" for c in GATE_CHECKS} <= set(ddp)
    assert {"xai/dead_relu/net.conv1", "xai/dead_relu/net.conv2", "xai/dead_relu/all"} <= set(ddp)
    for tag, values in ddp.items():
        # drift 'prev' starts at the second epoch, 'ref' at the reference epoch (1), and so do the checks on
        # them and their bounds; the rest at every epoch
        expected = steps[1:] if tag.removesuffix("/bound").endswith(("/prev", "/ref")) else steps
        assert [s for s, _ in values] == expected, tag  # written once per epoch, by rank 0 only
        ref = [v for _, v in single[tag]]
        assert [v for _, v in values] == pytest.approx(ref, rel=1e-3, abs=1e-5, nan_ok=True), tag
    assert [v for _, v in ddp["xai/gate/passed"]] == [1.0, 0.0, 0.0]  # every rank agreed on each decision
    # images and histograms: one per epoch, from rank 0
    for tag in ("xai/attr/saliency", "xai/attr/integrated_gradients", "xai/attr/grad_cam", "xai/drift/integrated_gradients/trajectory"):
        assert [i.step for i in ea_ddp.Images(tag)] == steps, tag
    assert [h.step for h in ea_ddp.Histograms("xai/dead_relu_onrate/net.conv1")] == steps
