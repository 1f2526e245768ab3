"""The whole suite under real 2-process DDP (gloo, CPU), on one input and on several (tuple and dict probes):
same values as one process, each tag once per epoch."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_xai.callbacks import SanityGate

from .fixtures import (
    GATE_CHECKS, STRUCTURED_CHECKS, Interleave, LitClassifier, OneThread, PlainCNN, image_data, images_in, read_events,
    structured_data, structured_model, structured_suite, suite, trainer, xai_scalars,
)

EPOCHS = 3


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _run(root, devices: int, callbacks, make_model, data, epochs: int = EPOCHS):
    """Fit ``make_model()`` (seeded) with ``callbacks`` on ``data`` in one process or two (gloo); every xai
    scalar of the run's event files, and the files' reader. 32 samples a step: 32 in one process, 2 x 16."""
    kwargs = {"strategy": "ddp_spawn", "devices": 2} if devices == 2 else {}
    tr = trainer(root, [*callbacks, OneThread()], max_epochs=epochs, use_distributed_sampler=False, **kwargs)
    torch.manual_seed(0)
    model = make_model()
    loader = DataLoader(data, batch_size=32 // devices, sampler=Interleave(len(data)))
    tr.fit(model, loader, loader)
    ea = read_events(os.path.join(str(root), "run", "version_0"))
    return xai_scalars(ea), ea, model


def _cnn() -> LitClassifier:
    return LitClassifier(PlainCNN((4, 6)))


def test_whole_suite_under_ddp_logs_the_single_process_values_once(tmp_path):
    single, ea_single, _ = _run(tmp_path / "single", 1, suite(), _cnn, image_data(64))
    ddp, ea_ddp, _ = _run(tmp_path / "ddp", 2, suite(), _cnn, image_data(64))
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


def test_probes_of_several_inputs_under_ddp_give_the_single_process_values(tmp_path):
    """A tuple probe with a riding integer mask (attribution, drift), a tuple drawn from the validation data
    (dead units) and a dict probe with multi-hot targets (attribution of the predicted class, gate, feature
    visualisation): every rank explains its share (7 rows: 4 and 3, padded for the gather), and what rank 0
    logs is what one process logs."""
    data = structured_data(64)
    runs = [_run(tmp_path / run, devices, structured_suite(n=7, featvis=True), structured_model, data, epochs=2)
            for run, devices in (("single", 1), ("ddp", 2))]
    (single, ea_single, m_single), (ddp, ea_ddp, m_ddp) = runs
    steps = [2, 4]  # 64 samples, 32 per step (2 x 16 under DDP)
    # the tolerances' ground: DDP's weights differ from one process's only by the order of float sums (the
    # mean of two half-batch gradients against one mean): 1.5e-8 at most after these 4 steps (measured). The
    # logged values then differ by 1.5e-5 relative at most (completeness, a ratio of small differences; the
    # others by under 4e-6), so rel=1e-4 leaves a margin of about 6; SmoothGrad's noise taken from the wrong
    # place in the stream (a rank's rows not told their offset) moves its values by 1.4e-3 and fails
    for k, v in m_single.state_dict().items():
        assert torch.allclose(m_ddp.state_dict()[k], v, rtol=0, atol=1e-7), k
    assert set(ddp) == set(single), set(ddp) ^ set(single)
    # summaries per attributed input (the integer mask, input2, rides along and has none)
    for method in ("saliency", "integrated_gradients", "smoothgrad"):
        assert {f"xai/attr/{method}/input{i}/{s}" for i in (0, 1) for s in ("gini", "entropy", "top10_mass")} <= set(ddp)
    assert not any("/input2/" in t for t in ddp)
    for method in ("occlusion", "input_x_gradient"):  # the dict probe's inputs by name
        assert {f"xai/attr/{method}/{k}/gini" for k in ("image", "meta")} <= set(ddp)
    assert {f"xai/check/{c}" for c in STRUCTURED_CHECKS} <= set(ddp)
    assert {"xai/dead_relu/conv", "xai/dead_relu/meta", "xai/drift/saliency/spearman/prev"} <= set(ddp)
    for tag, values in ddp.items():
        expected = steps[1:] if tag.removesuffix("/bound").endswith(("/prev", "/ref")) else steps
        assert [s for s, _ in values] == expected, tag  # once per epoch, from rank 0
        ref = [v for _, v in single[tag]]
        assert [v for _, v in values] == pytest.approx(ref, rel=1e-4, abs=1e-6, nan_ok=True), tag
    # dead units: counted on the whole probe and summed over the ranks, the fractions are one process's,
    # and the known answer (metadata units 0 and 4 are never positive on metadata in [0, 1))
    assert [v for _, v in ddp["xai/dead_relu/meta"]] == pytest.approx([2 / 6, 2 / 6])
    assert [v for _, v in ddp["xai/dead_relu/all"]] == pytest.approx([2 / 10, 2 / 10])
    for layer, units in (("conv", 4), ("meta", 6)):
        hs, hd = ea_single.Histograms(f"xai/dead_relu_onrate/{layer}"), ea_ddp.Histograms(f"xai/dead_relu_onrate/{layer}")
        assert [h.step for h in hd] == [h.step for h in hs] == steps
        for a, b in zip(hd, hs):
            assert a.histogram_value.num == b.histogram_value.num == units
            assert a.histogram_value.sum == pytest.approx(b.histogram_value.sum, rel=1e-6)
    # feature visualisation runs on rank 0 only: each picture once per epoch, as one process draws it
    # (identical pixels when measured; one colour level allowed for the weights' 1.5e-8)
    for tag in ("xai/featvis/classes/image", "xai/featvis/classes/meta", "xai/filters/conv"):
        got, want = (images_in(os.path.join(str(tmp_path / run), "run", "version_0"), tag) for run in ("ddp", "single"))
        assert [s for s, _ in got] == [s for s, _ in want] == steps, tag
        for (_, a), (_, b) in zip(got, want):
            assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1, tag
    # the gate: the same values and decisions in the JSON report; under DDP each rank's values, all equal
    reports = []
    for run in ("single", "ddp"):
        with open(os.path.join(str(tmp_path / run), "run", "version_0", SanityGate.REPORT_NAME)) as f:
            reports.append(json.load(f))
    one, two = reports
    assert [e["decision"] for e in two] == [e["decision"] for e in one] == ["pass", "fail"]
    assert [v for _, v in ddp["xai/gate/passed"]] == [1.0, 0.0]
    for e1, e2 in zip(one, two):
        assert [c["name"] for c in e2["checks"]] == [c["name"] for c in e1["checks"]]
        for c1, c2 in zip(e1["checks"], e2["checks"]):
            assert c2["passed"] == c1["passed"] and c2["skipped"] == c1["skipped"], c1["name"]
            if c1["skipped"]:  # drift against the previous epoch, at the first one: no value ("nan")
                assert c1["value"] == c2["value"] == "nan", c1
                continue
            assert c2["value"] == pytest.approx(c1["value"], rel=1e-4, abs=1e-6), c1["name"]
            ranks = [p["value"] for p in c2["per_rank"]]
            assert ranks == pytest.approx([c1["value"]] * 2, rel=1e-4, abs=1e-6), c1["name"]
