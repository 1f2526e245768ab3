"""Resume: every callback's state round-trips through the checkpoint; resumed == uninterrupted."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_xai import ProbeSet
from lightning_xai.callbacks import AttributionMonitor, FeatureDriftMonitor, SanityGate

from .fixtures import GATE_CHECKS, LitClassifier, PlainCNN, image_data, read_events, suite, trainer, xai_scalars
from .testers import TUPLE_MASKS


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and far faster on a busy machine (no spin-waiting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _image_run():  # type: ignore[no-untyped-def]
    """The suite's callbacks, a CNN and 64 images (no shuffling: the order needs no RNG state)."""
    torch.manual_seed(0)
    return suite(), LitClassifier(PlainCNN((4, 6))), DataLoader(image_data(64), batch_size=16)


def _fit(root, max_epochs: int, ckpt_path=None, version: int = 0, run=_image_run):
    """``run() -> (callbacks, model, loader)`` fitted for ``max_epochs`` (from ``ckpt_path``), a checkpoint per epoch."""
    callbacks, model, loader = run()
    ckpt = ModelCheckpoint(dirpath=str(root / "ckpt"), filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    tr = trainer(root, [*callbacks, ckpt], max_epochs, version=version, enable_checkpointing=True)
    tr.fit(model, loader, loader, ckpt_path=ckpt_path)
    return tr, callbacks, model


def _same(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def test_resumed_run_logs_what_the_uninterrupted_run_logs(tmp_path):
    # uninterrupted: 4 epochs
    full, full_cbs, full_model = _fit(tmp_path / "full", 4)
    # interrupted after 2 epochs, then resumed from the epoch-2 checkpoint with fresh callbacks
    _fit(tmp_path / "resumed", 2)
    ckpt = tmp_path / "resumed" / "ckpt" / "epoch=1.ckpt"
    resumed, res_cbs, res_model = _fit(tmp_path / "resumed", 4, ckpt_path=str(ckpt))
    assert resumed.current_epoch == full.current_epoch == 4
    for k, v in full_model.state_dict().items():  # the training itself resumed exactly
        assert torch.equal(v, res_model.state_dict()[k]), k

    # the checkpoint holds every callback's state under its own key, the probe selection included
    states = torch.load(str(ckpt), weights_only=False)["callbacks"]
    for cb in res_cbs:
        assert cb.state_key in states, (cb.state_key, list(states))
        assert states[cb.state_key]["probe"]["indices"] == cb.probe.indices
    attr_state = states[res_cbs[0].state_key]
    assert set(attr_state["vmax"]) == {"saliency", "integrated_gradients", "grad_cam"}  # colour scales
    drift_state = states[res_cbs[1].state_key]
    assert [h["epoch"] for h in drift_state["history"]] == [0, 1] and drift_state["reference"]["epoch"] == 1
    gate_state = states[res_cbs[3].state_key]
    assert gate_state["wait_count"] == 1 and len(gate_state["report"]) == 2

    # every xai scalar, epoch by epoch, from the event files: resumed == uninterrupted
    a = xai_scalars(read_events(full.logger.log_dir))
    b = xai_scalars(read_events(resumed.logger.log_dir))
    assert set(a) == set(b), set(a) ^ set(b)
    steps = [4, 8, 12, 16]
    prefixes = {
        "AttributionMonitor": "xai/attr/", "FeatureDriftMonitor": "xai/drift/", "DeadReLUMonitor": "xai/dead_relu",
        "SanityGate": "xai/check/",
    }
    for name, prefix in prefixes.items():
        tags = [t for t in a if t.startswith(prefix)]
        assert tags, name
        for tag in tags:
            assert [s for s, _ in b[tag]] == [s for s, _ in a[tag]], tag  # each value once, same steps
            assert [v for _, v in b[tag]] == pytest.approx([v for _, v in a[tag]], rel=1e-6, abs=1e-9, nan_ok=True), tag
    for tag in ("xai/attr/saliency/gini", "xai/dead_relu/all", "xai/gate/passed"):
        assert [s for s, _ in a[tag]] == steps, tag
    # values that only a restored state can give: 'prev' at epoch 2 (history), 'ref' vs epoch 1 (reference)
    assert [s for s, _ in a["xai/drift/integrated_gradients/spearman/prev"]] == steps[1:]
    assert [s for s, _ in a["xai/drift/integrated_gradients/spearman/ref"]] == steps[1:]
    assert {f"xai/check/{c}" for c in GATE_CHECKS} <= set(a)
    assert [v for _, v in a["xai/gate/passed"]] == [1.0, 0.0, 0.0, 0.0]

    # images drawn with the restored colour scales and drift history are the same bytes
    ea, eb = read_events(full.logger.log_dir), read_events(resumed.logger.log_dir)
    for tag in ("xai/attr/saliency", "xai/attr/integrated_gradients", "xai/attr/grad_cam", "xai/drift/integrated_gradients/trajectory"):
        ia, ib = ea.Images(tag), eb.Images(tag)
        assert [i.step for i in ib] == [i.step for i in ia] == steps, tag
        assert [i.encoded_image_string for i in ib] == [i.encoded_image_string for i in ia], tag

    # and the callbacks end in the same state: histories, reference, colour scales, gate counters
    for x, y in zip(full_cbs, res_cbs):
        sa, sb = x.state_dict(), y.state_dict()
        if isinstance(x, SanityGate):
            assert sa["wait_count"] == sb["wait_count"] == 3
            for ra, rb in zip(sa.pop("report"), sb.pop("report")):
                assert ra["fails_in_a_row"] == rb["fails_in_a_row"] and ra["decision"] == rb["decision"]
                assert [c["value"] for c in ra["checks"]] == pytest.approx([c["value"] for c in rb["checks"]], nan_ok=True)
        _same(sa, sb, type(x).__name__)
    gate = res_cbs[3]
    assert [e["epoch"] for e in gate.report] == [0, 1, 2, 3]
    with open(os.path.join(resumed.logger.log_dir, SanityGate.REPORT_NAME)) as f:
        assert [e["fails_in_a_row"] for e in json.load(f)] == [0, 1, 2, 3]  # the JSON report spans the resume


def _several_inputs_run():  # type: ignore[no-untyped-def]
    """A tuple probe for an AttributionMonitor and a dict probe for a FeatureDriftMonitor (image, metadata and a
    riding mask), on the model of tests/test_structured_inputs.py."""
    from .test_structured_inputs import LitTwo, two_input_data

    image, meta, mask, y = two_input_data(16)
    monitor = AttributionMonitor(ProbeSet((image[:6], meta[:6], mask[:6]), targets=y[:6]), target="predicted",
                                 methods={"saliency": {}, "grad_cam": {}, "smoothgrad": {"n_samples": 3},
                                          "kernel_shap": {"n_samples": 16, "feature_mask": TUPLE_MASKS}})
    drift = FeatureDriftMonitor(ProbeSet({"image": image[:6], "meta": meta[:6], "mask": mask[:6]}, targets=y[:6]),
                                method="integrated_gradients", reference="epoch:1", target="true")
    torch.manual_seed(0)
    return [monitor, drift], LitTwo(), DataLoader(TensorDataset(image, meta, mask, y), batch_size=8)


def test_resumed_structured_probes_continue_as_the_uninterrupted_run(tmp_path):
    full, full_cbs, full_model = _fit(tmp_path / "full", 3, run=_several_inputs_run)
    _fit(tmp_path / "resumed", 2, run=_several_inputs_run)
    ckpt = tmp_path / "resumed" / "ckpt" / "epoch=1.ckpt"
    resumed, res_cbs, res_model = _fit(tmp_path / "resumed", 3, ckpt_path=str(ckpt), run=_several_inputs_run)
    for k, v in full_model.state_dict().items():
        assert torch.equal(v, res_model.state_dict()[k]), k
    states = torch.load(str(ckpt), weights_only=False)["callbacks"]
    assert [h["epoch"] for h in states[res_cbs[1].state_key]["history"]] == [0, 1]
    a = xai_scalars(read_events(full.logger.log_dir))
    b = xai_scalars(read_events(resumed.logger.log_dir))
    assert set(a) == set(b), set(a) ^ set(b)
    assert {"xai/attr/grad_cam/input0/gini", "xai/attr/kernel_shap/input1/gini", "xai/drift/integrated_gradients/spearman/ref"} <= set(a)
    assert not any(t.startswith("xai/attr/grad_cam/input1") for t in a)  # the conv never sees the metadata
    for tag in a:
        assert [s for s, _ in b[tag]] == [s for s, _ in a[tag]], tag
        assert [v for _, v in b[tag]] == pytest.approx([v for _, v in a[tag]], rel=1e-6, abs=1e-9, nan_ok=True), tag
    assert [s for s, _ in a["xai/drift/integrated_gradients/spearman/ref"]] == [4, 6]  # from the restored reference
    for x, y in zip(full_cbs, res_cbs):
        _same(x.state_dict(), y.state_dict(), type(x).__name__)
    for m in ("saliency", "grad_cam", "smoothgrad", "kernel_shap"):  # the last epoch's maps, the same
        _same(full_cbs[0].last_attributions[m], res_cbs[0].last_attributions[m], m)
