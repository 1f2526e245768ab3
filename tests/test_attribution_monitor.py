"""AttributionMonitor in a real Trainer: tags in real TensorBoard event files, schedule, state, errors."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import ProbeSet
from lightning_xai.callbacks import AttributionMonitor
from lightning_xai.callbacks._cache import cache_for

from .fixtures import MLP, LitClassifier, SmallCNN, image_data, read_events, trainer


def _png_size(encoded: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(encoded)).size


def test_image_run_writes_maps_and_scalars(tmp_path):
    ds = image_data(64)
    probe = ProbeSet.from_dataset(ds, n=8, seed=0)
    methods = ["saliency", "input_x_gradient", "grad_cam", "integrated_gradients", "smoothgrad", "occlusion"]
    tr = trainer(tmp_path, [AttributionMonitor(probe, methods=methods)], max_epochs=2, num_sanity_val_steps=2)
    tr.fit(LitClassifier(SmallCNN()), *[DataLoader(ds, batch_size=32)] * 2)
    ea = read_events(tr.logger.log_dir)
    for m in methods:
        images = ea.Images(f"xai/attr/{m}")
        assert [im.step for im in images] == [2, 4]  # one per validation epoch, at global_step, none in sanity check
        w, h = _png_size(images[-1].encoded_image_string)
        # 8 probes in 4 columns x 2 rows, each an input above its overlay, upscaled to >= 64 px tiles
        assert w >= 4 * 64 and h >= 2 * 2 * 64
        for s in ("gini", "entropy", "top10_mass"):
            values = [e.value for e in ea.Scalars(f"xai/attr/{m}/{s}")]
            assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
    assert "val/loss" in ea.Tags()["scalars"]  # next to the loss curves


def test_tabular_run_writes_bar_chart(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(48, 6)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    ds = TensorDataset(x, y)
    names = ["age", "income", "height", "weight", "score", "noise"]
    probe = ProbeSet.from_dataset(ds, n=12, feature_names=names)
    tr = trainer(tmp_path, [AttributionMonitor(probe, methods=["integrated_gradients"], target="true")])
    tr.fit(LitClassifier(MLP(features=6, classes=3)), *[DataLoader(ds, batch_size=16)] * 2)
    ea = read_events(tr.logger.log_dir)
    (img,) = ea.Images("xai/attr/integrated_gradients")[-1:]
    w, h = _png_size(img.encoded_image_string)
    assert h >= 6 * 16  # one bar row per feature


def test_every_n_epochs_and_shared_cache(tmp_path):
    ds = image_data(32)
    probe = ProbeSet.from_dataset(ds, n=4)
    a = AttributionMonitor(probe, methods=["saliency", "grad_cam"], every_n_epochs=2)
    b = AttributionMonitor(probe, methods=["grad_cam", "integrated_gradients"], every_n_epochs=2, log_images=False)
    tr = trainer(tmp_path, [a, b], max_epochs=4)
    assert a.state_key != b.state_key  # two instances coexist in a checkpoint
    tr.fit(LitClassifier(SmallCNN()), *[DataLoader(ds, batch_size=32)] * 2)
    computed = cache_for(tr).computed
    # ran at epochs 1 and 3; grad_cam shared between the two callbacks: computed once per run
    assert computed["saliency"] == 2 and computed["grad_cam"] == 2 and computed["integrated_gradients"] == 2
    assert [e.step for e in read_events(tr.logger.log_dir).Scalars("xai/attr/saliency/gini")] == [2, 4]


def test_scalars_reach_a_csv_logger_and_images_become_png_files(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    ds = image_data(32)
    probe = ProbeSet.from_dataset(ds, n=4)
    tr = trainer(tmp_path, [AttributionMonitor(probe, methods=["saliency"])], logger=CSVLogger(str(tmp_path)), max_epochs=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr.fit(LitClassifier(SmallCNN()), *[DataLoader(ds, batch_size=32)] * 2)
    assert sum("written as PNG files" in str(w.message) for w in caught) == 1
    with open(f"{tr.logger.log_dir}/metrics.csv") as f:
        text = f.read()
    assert "xai/attr/saliency/gini" in text
    pngs = sorted(p.name for p in (tmp_path / "lightning_logs" / "version_0" / "xai_images" / "xai" / "attr").iterdir())
    assert pngs == ["saliency_step000001.png", "saliency_step000002.png"]  # one step per epoch
    assert _png_size((tmp_path / "lightning_logs/version_0/xai_images/xai/attr" / pngs[0]).read_bytes())[0] >= 4 * 64


def test_tensorboard_and_csv_together_each_get_what_they_take(tmp_path):
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    ds = image_data(32)
    loggers = [TensorBoardLogger(str(tmp_path), name="tb"), CSVLogger(str(tmp_path), name="csv")]
    tr = trainer(tmp_path, [AttributionMonitor(ProbeSet.from_dataset(ds, n=4), methods=["saliency"])], logger=loggers, max_epochs=1)
    tr.fit(LitClassifier(SmallCNN()), *[DataLoader(ds, batch_size=32)] * 2)
    assert len(read_events(loggers[0].log_dir).Images("xai/attr/saliency")) == 1
    with open(f"{loggers[1].log_dir}/metrics.csv") as f:
        assert "xai/attr/saliency/gini" in f.read()
    assert (tmp_path / "csv" / "version_0" / "xai_images" / "xai" / "attr" / "saliency_step000001.png").exists()


def test_state_dict_round_trip_keeps_color_scale():
    probe = ProbeSet(torch.rand(4, 1, 8, 8), torch.arange(4))
    m = AttributionMonitor(probe, methods=["saliency"])
    m._vmax = {"saliency": 0.25}
    m2 = AttributionMonitor(probe, methods=["saliency"])
    m2.load_state_dict(m.state_dict())
    assert m2._vmax == {"saliency": 0.25}
    other = AttributionMonitor(ProbeSet(torch.rand(4, 1, 8, 8)), methods=["saliency"])
    with pytest.warns(UserWarning, match="different probe"):
        other.load_state_dict(m.state_dict())


# ----------------------------------------------------------------------------- bad input
def test_unknown_method_lists_known_ones():
    probe = ProbeSet(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"unknown attribution method 'gradcam'.*grad_cam.*occlusion"):
        AttributionMonitor(probe, methods=["gradcam"])
    with pytest.raises(ValueError, match=r"unknown option\(s\) steps for 'integrated_gradients'.*n_steps"):
        AttributionMonitor(probe, methods={"integrated_gradients": {"steps": 8}})


def test_grad_cam_layer_not_found_lists_candidates(tmp_path):
    ds = image_data(16)
    probe = ProbeSet.from_dataset(ds, n=4)
    monitor = AttributionMonitor(probe, methods={"grad_cam": {"layer": "net.conv9"}})
    tr = trainer(tmp_path, [monitor])
    with pytest.raises(ValueError, match=r"layer 'net.conv9' not found.*Candidate layers: net.conv1, net.conv2"):
        tr.fit(LitClassifier(SmallCNN()), *[DataLoader(ds, batch_size=16)] * 2)


def test_grad_cam_without_conv_layers_is_an_error_at_setup(tmp_path):
    x = torch.randn(16, 6)
    ds = TensorDataset(x, torch.arange(16) % 3)
    monitor = AttributionMonitor(ProbeSet.from_dataset(ds, n=3), methods=["grad_cam"])
    tr = trainer(tmp_path, [monitor])
    model = LitClassifier(MLP())
    with pytest.raises(ValueError, match="grad_cam needs a convolutional layer but LitClassifier has none"):
        tr.fit(model, *[DataLoader(ds, batch_size=16)] * 2)
    assert model.global_step == 0  # raised at setup, before any training


def test_probe_that_does_not_fit_the_model_fails_at_setup(tmp_path):
    ds = image_data(16)
    wrong = ProbeSet(torch.rand(4, 3, 8, 8))  # 3 channels for a 1-channel model
    tr = trainer(tmp_path, [AttributionMonitor(wrong, methods=["saliency"])])
    model = LitClassifier(SmallCNN())
    with pytest.raises(ValueError, match=r"probe's inputs of shape \(4, 3, 8, 8\) do not fit LitClassifier"):
        tr.fit(model, *[DataLoader(ds, batch_size=16)] * 2)
    assert model.global_step == 0


def test_target_class_out_of_range_fails_at_setup(tmp_path):
    ds = image_data(16)
    probe = ProbeSet.from_dataset(ds, n=4)
    tr = trainer(tmp_path, [AttributionMonitor(probe, methods=["saliency"], target=7)])
    with pytest.raises(ValueError, match=r"target class 7 is out of range.*4 classes \(valid 0..3\)"):
        tr.fit(LitClassifier(SmallCNN(classes=4)), *[DataLoader(ds, batch_size=16)] * 2)
    bad_true = ProbeSet(torch.rand(2, 1, 8, 8), targets=torch.tensor([1, 9]))
    tr = trainer(tmp_path, [AttributionMonitor(bad_true, methods=["saliency"], target="true")])
    with pytest.raises(ValueError, match=r"target class 9 is out of range"):
        tr.validate(LitClassifier(SmallCNN(classes=4)), DataLoader(ds, batch_size=16))


def test_bad_arguments_are_named():
    probe = ProbeSet(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="target='true' needs a probe with targets"):
        AttributionMonitor(probe, target="true")
    with pytest.raises(ValueError, match="target must be 'predicted', 'true'"):
        AttributionMonitor(probe, target="best")
    with pytest.raises(ValueError, match="every_n_epochs must be an int >= 1"):
        AttributionMonitor(probe, every_n_epochs=0)
    with pytest.raises(TypeError, match="probe must be a lightning_xai.ProbeSet"):
        AttributionMonitor(torch.rand(2, 1, 8, 8))  # type: ignore[arg-type]


def test_callable_target(tmp_path):
    ds = image_data(16)
    probe = ProbeSet.from_dataset(ds, n=4)
    second_best = lambda out, y: out.topk(2, dim=1).indices[:, 1]  # noqa: E731
    monitor = AttributionMonitor(probe, methods=["saliency"], target=second_best)
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    tr.fit(LitClassifier(SmallCNN()), *[DataLoader(ds, batch_size=16)] * 2)
    assert np.isfinite(float(tr.callback_metrics["xai/attr/saliency/gini"]))


def test_state_key_is_made_once_per_probe(monkeypatch):
    """Lightning reads ``state_key`` at every hook call of every callback (several times per training step):
    it is made once, and again once an attribute it may read is set (the probe, the target ...)."""
    probe = ProbeSet.from_dataset(image_data(16), n=4)
    monitor = AttributionMonitor(probe, methods=["saliency"])
    calls = []
    fields = type(monitor)._state_key_fields
    monkeypatch.setattr(type(monitor), "_state_key_fields", lambda self: calls.append(1) or fields(self))
    key = monitor.state_key
    assert [monitor.state_key for _ in range(100)] == [key] * 100 and len(calls) == 1
    monitor.target = "true"  # set after construction: the key follows, as a monitor built so has it
    assert monitor.state_key == AttributionMonitor(probe, methods=["saliency"], target="true").state_key != key
