"""Production concerns: both Lightning packages, mixed precision, faults, Captum methods, YAML probes."""

from __future__ import annotations


import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import pytorch_lightning as pl

from lightning_xai import ProbeSet, ProbeSpec
from lightning_xai import functional as F
from lightning_xai.callbacks import AttributionMonitor

from .fixtures import CrossEntropySteps, LitClassifier, SmallCNN, image_data, read_events, trainer


# ---------------------------------------------------------------------------- both packages
@pytest.mark.parametrize("package", ["pytorch_lightning", "lightning.pytorch"])
def test_both_lightning_packages_accept_the_callbacks(tmp_path, package):
    lp = pytest.importorskip(package)
    ds = image_data(32)

    class Lit(CrossEntropySteps, lp.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = SmallCNN()

        def forward(self, x):
            return self.net(x)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    monitor = AttributionMonitor(ProbeSet.from_dataset(ds, n=4), methods=["saliency"])
    assert isinstance(monitor, lp.Callback)
    tr = lp.Trainer(
        default_root_dir=str(tmp_path), max_epochs=1, accelerator="cpu", devices=1, callbacks=[monitor],
        logger=lp.loggers.TensorBoardLogger(str(tmp_path)), enable_progress_bar=False, enable_checkpointing=False,
        enable_model_summary=False,
    )
    tr.fit(Lit(), DataLoader(ds, batch_size=16), DataLoader(ds, batch_size=16))
    ea = read_events(tr.logger.log_dir)
    assert "xai/attr/saliency" in ea.Tags()["images"] and "xai/attr/saliency/gini" in ea.Tags()["scalars"]


# ---------------------------------------------------------------------------- mixed precision
@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true", "16-mixed"])
def test_mixed_precision_attributions_in_fp32_by_default(tmp_path, precision):
    ds = image_data(32)
    probe = ProbeSet.from_dataset(ds, n=6)
    fp32 = AttributionMonitor(probe, methods=["saliency", "integrated_gradients"], target="true")
    low = AttributionMonitor(probe, methods=["saliency", "integrated_gradients"], target="true", dtype="bfloat16")
    torch.manual_seed(0)
    model = LitClassifier(SmallCNN())
    # on CPU Lightning runs "16-mixed" as "bf16-mixed" (with a warning): fp16 AMP needs a GPU
    tr = trainer(tmp_path, [fp32, low], max_epochs=1, precision=precision)
    tr.fit(model, *[DataLoader(ds, batch_size=16)] * 2)
    for m in ("saliency", "integrated_gradients"):
        a, b = fp32.last_attributions[m], low.last_attributions[m]
        assert a.dtype == torch.float32
        # reference: the same maps computed in float32 from the trained weights
        net = model.net.float().eval()
        ref = F.attribute(net, probe.inputs, probe.targets, m)
        tol = 0.05 if precision == "bf16-true" else 1e-5  # bf16-true weights are rounded to bf16
        assert float((a - ref).abs().max() / ref.abs().max()) <= tol, m
        # bf16 attributions: documented error bound vs fp32 (README "Mixed precision"): relative L2 error
        rel_l2 = float((b.float() - a).norm() / a.norm())
        print(f"{precision} {m} bf16 vs fp32 relative L2 error {rel_l2:.4f}")
        assert rel_l2 <= 0.25, m


def test_fp32_attributions_of_a_bf16_model_leave_its_weights_bit_identical():
    net = SmallCNN().to(torch.bfloat16)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with F.computing_in(net, torch.float32) as dtype:
        attr = F.saliency(net, torch.rand(2, 1, 8, 8, dtype=dtype), 0)
    assert attr.dtype == torch.float32
    for k, v in net.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k


# ---------------------------------------------------------------------------- faults
class OOMOverFour(nn.Module):
    """Raises the accelerator out-of-memory error for batches larger than 4 rows."""

    def __init__(self) -> None:
        super().__init__()
        self.net = SmallCNN()
        self.calls = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        if x.shape[0] > 4 and not self.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.net(x)


def test_out_of_memory_halves_the_chunk_and_retries(tmp_path):
    ds = image_data(32)
    probe = ProbeSet.from_dataset(ds, n=16)
    monitor = AttributionMonitor(probe, methods=["saliency", "integrated_gradients"], target="true")
    inner = OOMOverFour()
    tr = trainer(tmp_path, [monitor], max_epochs=2)
    with pytest.warns(RuntimeWarning, match="out of memory while explaining with chunk_size=(16|8); retrying") as caught:
        tr.fit(LitClassifier(inner), *[DataLoader(ds, batch_size=4)] * 2)
    retries = [str(w.message).split(";")[0] for w in caught if issubclass(w.category, RuntimeWarning)]
    assert retries == [f"out of memory while explaining with chunk_size={c}" for c in (16, 8)], retries
    assert monitor.chunking.current == 4  # kept for the next epochs: no more retries there
    ref = F.integrated_gradients(inner.net.eval(), probe.inputs, probe.targets)
    assert torch.allclose(monitor.last_attributions["integrated_gradients"], ref, atol=1e-6)


def test_on_error_warn_keeps_training_and_state(tmp_path):
    ds = image_data(32)
    monitor = AttributionMonitor(ProbeSet.from_dataset(ds, n=4), methods=["saliency"], on_error="warn")
    monitor._vmax = {"saliency": 0.5}
    calls = {"n": 0}
    original = F.attribute_many

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the first epoch's pass (the first call is the one-sample trial at setup)
            raise RuntimeError("injected failure")
        return original(*args, **kwargs)

    tr = trainer(tmp_path, [monitor], max_epochs=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(F, "attribute_many", flaky)
        with pytest.warns(UserWarning, match="AttributionMonitor.on_validation_epoch_end failed and was skipped.*injected failure"):
            tr.fit(LitClassifier(SmallCNN()), *[DataLoader(ds, batch_size=32)] * 2)
    assert tr.current_epoch == 3  # training went on to the end
    assert monitor._vmax == {"saliency": 0.5}  # state intact
    steps = [e.step for e in read_events(tr.logger.log_dir).Scalars("xai/attr/saliency/gini")]
    assert steps == [2, 3]  # the failed epoch logged nothing, the next ones did

    failing = AttributionMonitor(ProbeSet.from_dataset(ds, n=4), methods=["saliency"])  # default: raise
    tr = trainer(tmp_path, [failing], max_epochs=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(F, "attribute_many", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("injected failure")))
        # a method that always fails fails at setup, before training, naming the method
        with pytest.raises(ValueError, match="method 'saliency' .*fails on one probe sample .*injected failure"):
            tr.fit(LitClassifier(SmallCNN()), *[DataLoader(ds, batch_size=32)] * 2)
    assert tr.global_step == 0


def test_on_error_warn_restores_the_state_a_failed_epoch_had_changed(tmp_path):
    from lightning_xai.callbacks import FeatureDriftMonitor

    ds = image_data(32)
    probe = ProbeSet.from_dataset(ds, n=4)
    drift = FeatureDriftMonitor(probe, method="saliency", on_error="warn")
    monitor = AttributionMonitor(probe, methods=["saliency"], color_scale="per_epoch", on_error="warn")

    def fail_at(cb, name, bad_epoch):  # the step runs after the epoch's state was updated
        real = getattr(cb, name)

        def failing(trainer, *args, **kwargs):
            if trainer.current_epoch == bad_epoch:
                raise OSError("injected logging failure")
            return real(trainer, *args, **kwargs)

        setattr(cb, name, failing)

    fail_at(drift, "_publish", 1)  # after update(): history, reference, last maps
    fail_at(monitor, "_summary_markdown", 2)  # after _render(): colour scale, clipped share
    tr = trainer(tmp_path, [monitor, drift], max_epochs=3)
    with pytest.warns(UserWarning, match="failed and was skipped.*injected logging failure"):
        tr.fit(LitClassifier(SmallCNN()), *[DataLoader(ds, batch_size=32)] * 2)

    assert [h["epoch"] for h in drift.history] == [0, 2]  # the failed epoch left nothing behind
    # epoch 2 is compared with epoch 0, the last one that went through
    expected = F.drift_scores(
        drift.history[0]["importance"], drift.history[1]["importance"], metrics=["spearman"]
    )["spearman"]
    assert drift.last_scores["xai/drift/saliency/spearman/prev"] == pytest.approx(expected, abs=1e-12)

    assert monitor._vmax_epoch == {"saliency": 1}  # epoch 2's new colour scale was rolled back
    # the "last epoch" results outside the checkpoint state are rolled back with it
    kept = monitor.last_attributions
    snapshot = monitor._snapshot()
    monitor.last_attributions, monitor._clipped["saliency"] = {"saliency": torch.zeros(1)}, 0.75
    monitor._restore(snapshot)
    assert monitor.last_attributions.keys() == kept.keys() and monitor.last_attributions["saliency"] is kept["saliency"]
    assert monitor._clipped.get("saliency") != 0.75


def test_nan_outputs_do_not_crash_the_monitor(tmp_path):
    class NaNNet(SmallCNN):
        def forward(self, x):
            out = super().forward(x)
            return out if self.training else out * float("nan")

    ds = image_data(32)
    monitor = AttributionMonitor(ProbeSet.from_dataset(ds, n=4), methods=["saliency", "grad_cam"], target="true")
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    tr.fit(LitClassifier(NaNNet()), *[DataLoader(ds, batch_size=32)] * 2)
    assert torch.isnan(tr.callback_metrics["xai/attr/saliency/gini"])  # reported as NaN, not hidden
    assert len(read_events(tr.logger.log_dir).Images("xai/attr/saliency")) == 1


# ---------------------------------------------------------------------------- Captum methods
def test_any_captum_method_by_name_or_class(tmp_path):
    captum_attr = pytest.importorskip("captum.attr")
    ds = image_data(32)
    probe = ProbeSet.from_dataset(ds, n=4)
    monitor = AttributionMonitor(probe, methods=["DeepLift", captum_attr.GuidedBackprop], target="true")
    assert set(monitor.methods) == {"DeepLift", "GuidedBackprop"}
    tr = trainer(tmp_path, [monitor], max_epochs=1, deterministic=False)  # DeepLift's max-unpool has none
    model = LitClassifier(SmallCNN())
    tr.fit(model, *[DataLoader(ds, batch_size=32)] * 2)
    torch.use_deterministic_algorithms(False)
    net = model.net.eval()
    for name, cls in (("DeepLift", captum_attr.DeepLift), ("GuidedBackprop", captum_attr.GuidedBackprop)):
        ref = cls(net).attribute(probe.inputs.clone().requires_grad_(), target=probe.targets)
        assert torch.allclose(monitor.last_attributions[name], ref, atol=1e-6), name
    assert "xai/attr/DeepLift" in read_events(tr.logger.log_dir).Tags()["images"]
    with pytest.raises(ValueError, match="unknown attribution method 'DeepLiftt'.*captum.attr class"):
        AttributionMonitor(probe, methods=["DeepLiftt"])


# ---------------------------------------------------------------------------- probes from YAML specs
class DigitsLikeData(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.ds = image_data(48)

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=16)

    def val_dataloader(self):
        return DataLoader(self.ds, batch_size=16)


def test_probe_spec_is_drawn_from_the_datamodule(tmp_path):
    monitor = AttributionMonitor(ProbeSpec(n=6, seed=2), methods=["saliency"], target="true")
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    tr.fit(LitClassifier(SmallCNN()), datamodule=DigitsLikeData())
    assert isinstance(monitor.probe, ProbeSet)
    assert monitor.probe.indices == ProbeSet.from_dataset(image_data(48), 6, seed=2).indices


def test_probe_spec_with_plain_loaders(tmp_path):
    ds = image_data(48)
    monitor = AttributionMonitor(ProbeSpec(n=5, seed=1), methods=["saliency"])
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    tr.fit(LitClassifier(SmallCNN()), DataLoader(ds, batch_size=16), DataLoader(ds, batch_size=16))
    assert monitor.probe.indices == ProbeSet.from_dataset(ds, 5, seed=1).indices
    assert "xai/attr/saliency/gini" in tr.callback_metrics


def test_probe_spec_bad_arguments():
    with pytest.raises(ValueError, match="source must be one of val, train, test"):
        ProbeSpec(n=4, source="validation")
    with pytest.raises(ValueError, match="n must be a positive int"):
        ProbeSpec(n=0)
