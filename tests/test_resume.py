"""Resume: every callback's state round-trips through the checkpoint; resumed == uninterrupted."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_xai import ProbeSet
from lightning_xai.callbacks import AttributionMonitor, FeatureDriftMonitor, SanityGate

from .fixtures import (
    GATE_CHECKS, STRUCTURED_CHECKS, LitClassifier, LitTwo, PlainCNN, image_data, read_events, structured_data,
    structured_model, structured_suite, suite, trainer, two_input_data, xai_scalars,
)
from .testers import TUPLE_MASKS


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and far faster on a busy machine (no spin-waiting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cnn() -> LitClassifier:
    return LitClassifier(PlainCNN((4, 6)))


def _fit(root, max_epochs: int, ckpt_path=None, version: int = 0, make_callbacks=suite, make_model=_cnn, data=None):
    """Fit ``make_model()`` (seeded) with ``make_callbacks()`` on ``data`` (``image_data(64)``), 16 samples a
    step, saving a checkpoint at every epoch under ``root/ckpt``; resumed from ``ckpt_path`` when given."""
    callbacks = make_callbacks()
    ckpt = ModelCheckpoint(dirpath=str(root / "ckpt"), filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    tr = trainer(root, [*callbacks, ckpt], max_epochs, version=version, enable_checkpointing=True)
    torch.manual_seed(0)
    model = make_model()
    loader = DataLoader(image_data(64) if data is None else data, batch_size=16)  # no shuffling: no RNG state
    tr.fit(model, loader, loader, ckpt_path=ckpt_path)
    return tr, callbacks, model


def _interrupted_and_resumed(tmp_path, **kw):
    """An uninterrupted 4-epoch run, and one stopped after 2 epochs then resumed to 4 from the epoch-2
    checkpoint with fresh callbacks: ``(full, resumed, checkpoint path)``, each run as ``_fit`` returns it."""
    full = _fit(tmp_path / "full", 4, **kw)
    _fit(tmp_path / "resumed", 2, **kw)
    ckpt = tmp_path / "resumed" / "ckpt" / "epoch=1.ckpt"
    with warnings.catch_warnings():  # every probe, drawn or given, is the checkpoint's own
        warnings.filterwarnings("error", message=".*the checkpoint was written with a different probe")
        resumed = _fit(tmp_path / "resumed", 4, ckpt_path=str(ckpt), **kw)
    assert resumed[0].current_epoch == full[0].current_epoch == 4
    for k, v in full[2].state_dict().items():  # the training itself resumed exactly
        assert torch.equal(v, resumed[2].state_dict()[k]), k
    return full, resumed, ckpt


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


def _checkpointed_states(ckpt, callbacks) -> dict:
    """Every callback's state in the checkpoint, under its own key, the probe selection included."""
    states = torch.load(str(ckpt), weights_only=False)["callbacks"]
    for cb in callbacks:
        assert cb.state_key in states, (cb.state_key, list(states))
        assert states[cb.state_key]["probe"]["indices"] == cb.probe.indices
    return states


def _same_scalars(full, resumed, prefixes) -> dict:
    """Every xai scalar, epoch by epoch, from the event files: resumed == uninterrupted, each value once
    at the same steps (each prefix logs some). Returns the uninterrupted run's scalars."""
    a = xai_scalars(read_events(full.logger.log_dir))
    b = xai_scalars(read_events(resumed.logger.log_dir))
    assert set(a) == set(b), set(a) ^ set(b)
    for prefix in prefixes:
        tags = [t for t in a if t.startswith(prefix)]
        assert tags, prefix
        for tag in tags:
            assert [s for s, _ in b[tag]] == [s for s, _ in a[tag]], tag
            assert [v for _, v in b[tag]] == pytest.approx([v for _, v in a[tag]], rel=1e-6, abs=1e-9, nan_ok=True), tag
    return a


def _same_images(full, resumed, tags, steps) -> None:
    """Images drawn with restored colour scales, histories and ranges: the same bytes, at every epoch."""
    ea, eb = read_events(full.logger.log_dir), read_events(resumed.logger.log_dir)
    for tag in tags:
        ia, ib = ea.Images(tag), eb.Images(tag)
        assert [i.step for i in ib] == [i.step for i in ia] == steps, tag
        assert [i.encoded_image_string for i in ib] == [i.encoded_image_string for i in ia], tag


def _same_final_states(full_cbs, res_cbs, wait_count: int) -> None:
    """The callbacks end in the same state (histories, reference, colour scales, gate counters); the gate's
    check values to float precision (the JSON report spans the resume)."""
    for x, y in zip(full_cbs, res_cbs):
        sa, sb = x.state_dict(), y.state_dict()
        if isinstance(x, SanityGate):
            assert sa["wait_count"] == sb["wait_count"] == wait_count
            for ra, rb in zip(sa.pop("report"), sb.pop("report")):
                assert ra["fails_in_a_row"] == rb["fails_in_a_row"] and ra["decision"] == rb["decision"]
                assert [c["value"] for c in ra["checks"]] == pytest.approx([c["value"] for c in rb["checks"]], nan_ok=True)
        _same(sa, sb, type(x).__name__)


STEPS = [4, 8, 12, 16]  # 64 samples, 16 a step


def test_resumed_run_logs_what_the_uninterrupted_run_logs(tmp_path):
    (full, full_cbs, _), (resumed, res_cbs, _), ckpt = _interrupted_and_resumed(tmp_path)

    states = _checkpointed_states(ckpt, res_cbs)
    attr_state = states[res_cbs[0].state_key]
    assert set(attr_state["vmax"]) == {"saliency", "integrated_gradients", "grad_cam"}  # colour scales
    drift_state = states[res_cbs[1].state_key]
    assert [h["epoch"] for h in drift_state["history"]] == [0, 1] and drift_state["reference"]["epoch"] == 1
    gate_state = states[res_cbs[3].state_key]
    assert gate_state["wait_count"] == 1 and len(gate_state["report"]) == 2

    a = _same_scalars(full, resumed, ("xai/attr/", "xai/drift/", "xai/dead_relu", "xai/check/"))
    for tag in ("xai/attr/saliency/gini", "xai/dead_relu/all", "xai/gate/passed"):
        assert [s for s, _ in a[tag]] == STEPS, tag
    # values that only a restored state can give: 'prev' at epoch 2 (history), 'ref' vs epoch 1 (reference)
    assert [s for s, _ in a["xai/drift/integrated_gradients/spearman/prev"]] == STEPS[1:]
    assert [s for s, _ in a["xai/drift/integrated_gradients/spearman/ref"]] == STEPS[1:]
    assert {f"xai/check/{c}" for c in GATE_CHECKS} <= set(a)
    assert [v for _, v in a["xai/gate/passed"]] == [1.0, 0.0, 0.0, 0.0]

    _same_images(
        full, resumed,
        ("xai/attr/saliency", "xai/attr/integrated_gradients", "xai/attr/grad_cam", "xai/drift/integrated_gradients/trajectory"),
        STEPS,
    )
    _same_final_states(full_cbs, res_cbs, wait_count=3)
    gate = res_cbs[3]
    assert [e["epoch"] for e in gate.report] == [0, 1, 2, 3]
    with open(os.path.join(resumed.logger.log_dir, SanityGate.REPORT_NAME)) as f:
        assert [e["fails_in_a_row"] for e in json.load(f)] == [0, 1, 2, 3]  # the JSON report spans the resume


def _several_inputs_callbacks():  # type: ignore[no-untyped-def]
    """A tuple probe for an AttributionMonitor and a dict probe for a FeatureDriftMonitor (image, metadata and a
    riding mask), on :class:`~tests.fixtures.LitTwo`."""
    image, meta, mask, y = two_input_data(32)
    monitor = AttributionMonitor(ProbeSet((image[:6], meta[:6], mask[:6]), targets=y[:6]), target="predicted",
                                 methods={"saliency": {}, "grad_cam": {}, "smoothgrad": {"n_samples": 3},
                                          "kernel_shap": {"n_samples": 16, "feature_mask": TUPLE_MASKS}})
    drift = FeatureDriftMonitor(ProbeSet({"image": image[:6], "meta": meta[:6], "mask": mask[:6]}, targets=y[:6]),
                                method="integrated_gradients", reference="epoch:1", target="true")
    return [monitor, drift]


def test_resumed_structured_probes_continue_as_the_uninterrupted_run(tmp_path):
    kw = dict(make_callbacks=_several_inputs_callbacks, make_model=LitTwo, data=TensorDataset(*two_input_data(32)))
    full, full_cbs, full_model = _fit(tmp_path / "full", 3, **kw)  # 2 steps per epoch
    _fit(tmp_path / "resumed", 2, **kw)
    ckpt = tmp_path / "resumed" / "ckpt" / "epoch=1.ckpt"
    resumed, res_cbs, res_model = _fit(tmp_path / "resumed", 3, ckpt_path=str(ckpt), **kw)
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


def test_resumed_run_with_probes_of_several_inputs_logs_what_the_uninterrupted_run_logs(tmp_path):
    """Attribution, drift and dead units on a tuple probe (an integer mask riding along), the gate and feature
    visualisation on a dict probe with multi-hot targets: resumed == uninterrupted."""
    (full, full_cbs, _), (resumed, res_cbs, _), ckpt = _interrupted_and_resumed(
        tmp_path, make_callbacks=lambda: structured_suite(featvis=True), make_model=structured_model,
        data=structured_data(64),
    )
    attr, named_attr, drift, _, gate, featvis = res_cbs

    states = _checkpointed_states(ckpt, res_cbs)
    methods = ("saliency", "integrated_gradients", "smoothgrad")
    # a colour scale per method and attributed input (the mask, input2, has no picture)
    assert set(states[attr.state_key]["vmax"]) == {f"{m}/input{i}" for m in methods for i in (0, 1)}
    assert set(states[named_attr.state_key]["vmax"]) == {f"{m}/{k}" for m in ("occlusion", "input_x_gradient") for k in ("image", "meta")}
    drift_state = states[drift.state_key]
    assert [h["epoch"] for h in drift_state["history"]] == [0, 1] and drift_state["reference"]["epoch"] == 1
    assert [len(h["importance"]) for h in drift_state["history"]] == [25 + 3] * 2  # image pixels, then metadata
    assert states[gate.state_key]["wait_count"] == 1 and len(states[gate.state_key]["report"]) == 2
    featvis_state = states[featvis.state_key]
    assert featvis_state["filter_vmax"] is not None and featvis_state["value_range"] is not None

    a = _same_scalars(full, resumed, ("xai/attr/", "xai/drift/", "xai/dead_relu", "xai/check/"))
    assert {f"xai/attr/{m}/input{i}/gini" for m in methods for i in (0, 1)} <= set(a)
    assert [s for s, _ in a["xai/drift/saliency/spearman/prev"]] == STEPS[1:]  # from the restored history
    assert [s for s, _ in a["xai/drift/saliency/spearman/ref"]] == STEPS[1:]  # against the restored reference
    assert {f"xai/check/{c}" for c in STRUCTURED_CHECKS} <= set(a)
    assert [v for _, v in a["xai/gate/passed"]] == [1.0, 0.0, 0.0, 0.0]
    assert [v for _, v in a["xai/dead_relu/meta"]] == pytest.approx([2 / 6] * 4)

    _same_images(
        full, resumed,
        [f"xai/attr/{m}" for m in (*methods, "occlusion", "input_x_gradient")]
        + ["xai/drift/saliency/trajectory", "xai/featvis/classes/image", "xai/featvis/classes/meta", "xai/filters/conv"],
        STEPS,
    )
    _same_final_states(full_cbs, res_cbs, wait_count=3)
    with open(os.path.join(resumed.logger.log_dir, SanityGate.REPORT_NAME)) as f:
        report = json.load(f)
    assert [e["fails_in_a_row"] for e in report] == [0, 1, 2, 3] and report[-1]["decision"] == "fail"
