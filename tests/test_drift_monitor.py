"""FeatureDriftMonitor in real Trainer runs: tags read back from TensorBoard, shared attributions,
checkpoint/resume, references, EarlyStopping/ModelCheckpoint, degenerate models, bad arguments."""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from .fixtures import (
    FEATURES,
    Classifier,
    PlainCNN,
    RecordingLogger,
    TabularNet,
    image_data,
    loaders,
    split,
    tabular_data,
    tabular_probe,
    trainer,
)
from lightning_xai import ProbeSet
from lightning_xai import functional as F
from lightning_xai.callbacks import AttributionMonitor, FeatureDriftMonitor
from lightning_xai.callbacks._cache import cache_for
from lightning_xai.callbacks.drift import load_reference
from lightning_xai.functional import DegenerateInputWarning

TAG_NAMES = ["age", "dose_mg", "weight_kg", "noise_a", "noise_b", "noise_c"]

# the runs here log to a RecordingLogger (to read the scalars back), which shows no pictures: the
# trajectory's "no TensorBoardLogger attached" notice is expected (tests/test_dashboard.py checks it is given)
pytestmark = pytest.mark.filterwarnings("ignore:FeatureDriftMonitor. no TensorBoardLogger attached:UserWarning")


def _fit(callbacks, max_epochs=3, logger=None, model=None, seed=0, ckpt_path=None, **kwargs):  # noqa: ANN001
    torch.manual_seed(seed)
    model = model if model is not None else TabularNet()
    tr, va = tabular_data()
    t = trainer(None, callbacks, max_epochs, logger=logger if logger is not None else False, **kwargs)
    t.fit(model, *loaders(tr, va), ckpt_path=ckpt_path)
    return t, model


@pytest.fixture(scope="module")
def probe() -> ProbeSet:
    return tabular_probe(tabular_data()[1])


# ------------------------------------------------------------------------------------ end to end
def test_tensorboard_tags_and_values(tmp_path, probe):
    drift = FeatureDriftMonitor(probe, method="integrated_gradients", top_k=2)
    logger = TensorBoardLogger(str(tmp_path), name="run")
    t, model = _fit([drift], max_epochs=3, logger=logger)

    acc = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for metric in F.DRIFT_METRICS:
        for which in ("prev", "ref"):
            assert f"xai/drift/integrated_gradients/{metric}/{which}" in scalars
    for name in TAG_NAMES:
        assert f"xai/importance/integrated_gradients/{name}" in scalars
    assert "xai/drift/integrated_gradients/trajectory" in acc.Tags()["images"]
    images = acc.Images("xai/drift/integrated_gradients/trajectory")
    assert len(images) == 3

    def series(tag):  # noqa: ANN001
        return [e.value for e in acc.Scalars(tag)]

    hist = [h["importance"] for h in drift.history]
    assert [h["epoch"] for h in drift.history] == [0, 1, 2]
    # prev: each epoch against the one before, recomputed here from the history
    for metric, fn in (
        ("spearman", lambda a, b: F.rank_correlation(a, b)),
        ("kendall", lambda a, b: F.rank_correlation(a, b, "kendall")),
        ("topk_overlap", lambda a, b: F.topk_overlap(a, b, 2)),
        ("ndcg", F.ndcg),
        ("js_divergence", F.js_divergence),
    ):
        logged = series(f"xai/drift/integrated_gradients/{metric}/prev")
        assert logged == pytest.approx([fn(hist[0], hist[1]), fn(hist[1], hist[2])], abs=1e-6)
        ref = series(f"xai/drift/integrated_gradients/{metric}/ref")
        assert ref == pytest.approx([fn(hist[0], h) for h in hist], abs=1e-6)
    # the reference epoch compared with itself
    assert series("xai/drift/integrated_gradients/spearman/ref")[0] == pytest.approx(1.0)
    assert series("xai/drift/integrated_gradients/js_divergence/ref")[0] == pytest.approx(0.0)
    assert series("xai/drift/integrated_gradients/map_ssim/ref")[0] == pytest.approx(1.0)
    # the model changed, so the explanations did
    assert series("xai/drift/integrated_gradients/js_divergence/ref")[-1] > 0
    # importance curves are the history, and the last one is the trained model's
    for i, name in enumerate(TAG_NAMES):
        assert series(f"xai/importance/integrated_gradients/{name}") == pytest.approx([float(h[i]) for h in hist], rel=1e-6)
    x = probe.inputs
    attr = F.integrated_gradients(model.eval(), x, model(x).argmax(1))
    assert torch.allclose(hist[-1], F.feature_importance(attr), atol=1e-6)
    # latest values are in callback_metrics
    for tag, value in drift.last_scores.items():
        assert float(t.callback_metrics[tag]) == pytest.approx(value, abs=1e-6)
    assert "xai/drift/integrated_gradients/ndcg/prev" in t.callback_metrics


def test_image_probe_logs_map_metrics_and_grid_importance(tmp_path):
    tr, va = split(image_data(48, 3, style="diagonal"), 32)
    probe = ProbeSet(va.tensors[0][:8], va.tensors[1][:8])
    drift = FeatureDriftMonitor(probe, method="saliency", grid=(2, 2), metrics=["spearman", "map_spearman", "map_ssim"])
    logger = TensorBoardLogger(str(tmp_path), name="img")
    torch.manual_seed(0)
    t = trainer(None, [drift], 2, logger=logger)
    t.fit(Classifier(PlainCNN(classes=3), lr=0.01, adam=True, val_loss="val_loss"), *loaders(tr, va))
    acc = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"xai/drift/saliency/map_ssim/prev", "xai/drift/saliency/map_spearman/ref"} <= scalars
    assert not any(tag.startswith("xai/importance/") for tag in scalars)  # per-feature curves: tabular only
    assert not any("kendall" in tag for tag in scalars)  # only the metrics asked for
    assert drift.history[0]["importance"].shape == (4,)  # 1 channel x 2 x 2 cells
    shares, epochs, names = drift.trajectory()
    assert shares.shape == (4, 2) and epochs == [0, 1] and names[0] == "ch0[0,0]"
    assert torch.allclose(shares.sum(0), torch.ones(2, dtype=torch.float64))
    assert "xai/drift/saliency/trajectory" in acc.Tags()["images"]


# ------------------------------------------------------------------------------------ no double work
def test_shares_attributions_with_attribution_monitor(probe):
    ig = {"integrated_gradients": {"n_steps": 16}}
    alone = AttributionMonitor(probe, methods=ig, log_images=False)
    with F.count_passes() as single:
        t1, _ = _fit([alone], max_epochs=3)
    assert cache_for(t1).computed["integrated_gradients"] == 3

    both = [AttributionMonitor(probe, methods=ig, log_images=False), FeatureDriftMonitor(probe, method=ig)]
    with F.count_passes() as shared:
        t2, _ = _fit(both, max_epochs=3)
    assert cache_for(t2).computed["integrated_gradients"] == 3
    assert shared.backward_rows == single.backward_rows > 0
    assert both[1].history and len(both[1].history) == 3

    # negative control: different options are different attributions, computed twice
    other = [AttributionMonitor(probe, methods=ig, log_images=False),
             FeatureDriftMonitor(probe, method={"integrated_gradients": {"n_steps": 8}})]
    with F.count_passes() as twice:
        t3, _ = _fit(other, max_epochs=3)
    assert cache_for(t3).computed["integrated_gradients"] == 6
    assert twice.backward_rows > single.backward_rows


# ------------------------------------------------------------------------------------ checkpoint / resume
def test_resume_logs_the_same_drift_values(tmp_path, probe):
    def monitor():  # noqa: ANN202
        return FeatureDriftMonitor(probe, method="integrated_gradients", top_k=2)

    full_log = RecordingLogger()
    _fit([monitor()], max_epochs=5, logger=full_log)

    first_log = RecordingLogger()
    ckpt = ModelCheckpoint(dirpath=str(tmp_path), save_last=True, save_top_k=0)
    _fit([monitor(), ckpt], max_epochs=3, logger=first_log, enable_checkpointing=True)
    last = os.path.join(str(tmp_path), "last.ckpt")
    assert os.path.isfile(last)

    resumed_log = RecordingLogger()
    resumed = monitor()
    _fit([resumed], max_epochs=5, logger=resumed_log, ckpt_path=last, seed=123)  # the seed must not matter
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3, 4]

    drift_tags = [k for k in full_log.records if k.startswith("xai/")]
    assert len(drift_tags) == 2 * len(F.DRIFT_METRICS) + len(FEATURES)
    for tag in drift_tags:
        combined = first_log.records.get(tag, []) + resumed_log.records.get(tag, [])
        assert [s for s, _ in combined] == [s for s, _ in full_log.records[tag]], tag
        assert [v for _, v in combined] == pytest.approx([v for _, v in full_log.records[tag]], abs=1e-6), tag
    # the values after resuming need the restored history: prev exists at the first resumed epoch
    assert len(resumed_log.records["xai/drift/integrated_gradients/map_ssim/prev"]) == 2


def test_state_dict_round_trip(probe):
    a = FeatureDriftMonitor(probe, method="saliency")
    a.update(0, torch.randn(len(probe), len(FEATURES)))
    a.update(1, torch.randn(len(probe), len(FEATURES)))
    b = FeatureDriftMonitor(probe, method="saliency")
    b.load_state_dict(a.state_dict())
    attr = torch.randn(len(probe), len(FEATURES))
    assert b.update(2, attr) == a.update(2, attr)
    assert a.state_key == b.state_key
    assert FeatureDriftMonitor(probe, method="integrated_gradients").state_key != a.state_key


# ------------------------------------------------------------------------------------ references
def test_reference_epoch_n_and_warmup(probe):
    log = RecordingLogger()
    by_epoch = FeatureDriftMonitor(probe, method="saliency", reference="epoch:1", metrics=["spearman", "js_divergence"])
    _fit([by_epoch], max_epochs=3, logger=log)
    ref = log.records["xai/drift/saliency/spearman/ref"]
    assert len(ref) == 2  # epochs 1 and 2
    assert ref[0][1] == pytest.approx(1.0)
    h = by_epoch.history
    assert ref[1][1] == pytest.approx(F.rank_correlation(h[1]["importance"], h[2]["importance"]), abs=1e-6)
    assert by_epoch.reference["epoch"] == 1

    warm = FeatureDriftMonitor(probe, method="saliency", warmup_epochs=1, metrics=["spearman"])
    _fit([warm], max_epochs=3)
    assert [e["epoch"] for e in warm.history] == [1, 2]
    assert warm.reference["epoch"] == 1


def test_reference_tensor_vector_and_maps(probe):
    vector = torch.linspace(1.0, 0.1, len(FEATURES))
    log = RecordingLogger()
    drift = FeatureDriftMonitor(probe, method="saliency", reference=vector)
    _fit([drift], max_epochs=2, logger=log)
    first = drift.history[0]["importance"]
    assert log.records["xai/drift/saliency/ndcg/ref"][0][1] == pytest.approx(F.ndcg(vector, first), abs=1e-6)
    assert "xai/drift/saliency/map_ssim/ref" not in log.records  # a vector has no per-sample maps
    assert "xai/drift/saliency/map_ssim/prev" in log.records

    maps = torch.rand(len(probe), len(FEATURES))
    log2 = RecordingLogger()
    with_maps = FeatureDriftMonitor(probe, method="saliency", reference=maps)
    _fit([with_maps], max_epochs=1, logger=log2)
    assert log2.records["xai/drift/saliency/js_divergence/ref"][0][1] == pytest.approx(
        F.js_divergence(F.feature_importance(maps), with_maps.history[0]["importance"]), abs=1e-6
    )
    assert "xai/drift/saliency/map_ssim/ref" in log2.records


def test_reference_file_from_an_earlier_run(tmp_path, probe):
    earlier = FeatureDriftMonitor(probe, method="saliency")
    _fit([earlier], max_epochs=2)
    path = tmp_path / "baseline.pt"
    earlier.save_reference(path)
    saved = load_reference(path)
    assert saved["epoch"] == 1 and saved["method"] == "saliency"
    assert torch.equal(saved["importance"], earlier.history[-1]["importance"])

    log = RecordingLogger()
    later = FeatureDriftMonitor(probe, method="saliency", reference=str(path))
    _fit([later], max_epochs=1, logger=log, model=TabularNet(lr=0.01), seed=1)
    cur = later.history[0]["importance"]
    assert log.records["xai/drift/saliency/spearman/ref"][0][1] == pytest.approx(
        F.rank_correlation(saved["importance"], cur), abs=1e-6
    )
    assert "xai/drift/saliency/map_ssim/ref" in log.records  # same probe: maps compared too

    other_probe = ProbeSet(probe.inputs[:8] + 1.0, feature_names=FEATURES)
    with pytest.warns(UserWarning, match="another probe"):
        FeatureDriftMonitor(other_probe, method="saliency", reference=path)
    with pytest.raises(ValueError, match="holds 'saliency' importances"):
        FeatureDriftMonitor(probe, method="integrated_gradients", reference=path)
    bogus = tmp_path / "bogus.pt"
    torch.save({"hello": 1}, bogus)
    with pytest.raises(ValueError, match="not a drift reference file"):
        FeatureDriftMonitor(probe, method="saliency", reference=bogus)
    with pytest.raises(RuntimeError, match="has not run"):
        FeatureDriftMonitor(probe).save_reference(tmp_path / "x.pt")


# ------------------------------------------------------------------------------------ Lightning integration
def test_early_stopping_and_model_checkpoint_monitor_drift(tmp_path, probe):
    stop = EarlyStopping(monitor="xai/drift/saliency/js_divergence/prev", mode="min", stopping_threshold=1.0, strict=False)
    drift = FeatureDriftMonitor(probe, method="saliency", metrics=["js_divergence"])
    _fit([drift, stop], max_epochs=6)
    assert [h["epoch"] for h in drift.history] == [0, 1]  # stopped at the first 'prev' value (<= 1.0)

    # the documented drift alarm: stop when NDCG against the reference falls below 0.9
    def alarm():  # noqa: ANN202
        return EarlyStopping(monitor="xai/drift/saliency/ndcg/ref", mode="max", divergence_threshold=0.9, patience=10**9)

    calm = FeatureDriftMonitor(probe, method="saliency", metrics=["ndcg"])
    _fit([calm, alarm()], max_epochs=5)
    ndcg_ref = [F.ndcg(calm.history[0]["importance"], h["importance"]) for h in calm.history]
    assert len(calm.history) == 5 and min(ndcg_ref) >= 0.9  # no drift: trains to the end (patience off)
    default = FeatureDriftMonitor(probe, method="saliency", metrics=["ndcg"])
    _fit([default, EarlyStopping(monitor="xai/drift/saliency/ndcg/ref", mode="max", divergence_threshold=0.9)], max_epochs=5)
    assert len(default.history) == 4  # why the recipe turns patience off: 3 epochs without beating 1.0
    least = int(torch.argmin(calm.history[0]["importance"]))
    odd_one = torch.zeros(len(FEATURES))
    odd_one[least] = 1.0  # a reference that puts everything on the feature the model uses least
    alarmed = FeatureDriftMonitor(probe, method="saliency", metrics=["ndcg"], reference=odd_one)
    _fit([alarmed, alarm()], max_epochs=4)
    assert [h["epoch"] for h in alarmed.history] == [0]  # NDCG = 1 / log2(7) < 0.9 at once
    assert F.ndcg(odd_one, alarmed.history[0]["importance"]) == pytest.approx(1 / math.log2(7))

    log = RecordingLogger()
    best = ModelCheckpoint(dirpath=str(tmp_path), monitor="xai/drift/saliency/spearman/ref", mode="max", save_top_k=1)
    _fit([FeatureDriftMonitor(probe, method="saliency"), best], max_epochs=3, logger=log, enable_checkpointing=True)
    values = [v for _, v in log.records["xai/drift/saliency/spearman/ref"]]
    assert float(best.best_model_score) == pytest.approx(max(values), abs=1e-6)


def test_validate_runs_under_inference_mode(probe):
    drift = FeatureDriftMonitor(probe, method="integrated_gradients", metrics=["spearman"])
    t, model = _fit([drift], max_epochs=2)
    tr, va = tabular_data()
    t.validate(model, loaders(tr, va)[1], verbose=False)
    # outside fit: the model is explained and compared with the last fit epoch, under the stage's own
    # tags, and the monitor's history is left as fit left it
    assert [h["epoch"] for h in drift.history] == [0, 1]
    assert "validate/xai/drift/integrated_gradients/spearman/prev" in t.callback_metrics


def test_observing_does_not_perturb_training(probe):
    _, plain = _fit([], max_epochs=2)
    _, watched = _fit([FeatureDriftMonitor(probe, method="integrated_gradients")], max_epochs=2)
    for a, b in zip(plain.parameters(), watched.parameters()):
        assert torch.equal(a, b)


def test_dead_model_gives_defined_values_and_warnings(probe):
    log = RecordingLogger()
    drift = FeatureDriftMonitor(probe, method="integrated_gradients")
    with pytest.warns(DegenerateInputWarning):
        _fit([drift], max_epochs=2, logger=log, model=TabularNet(lr=0.0, dead=True))
    assert all(bool((h["importance"] == 0).all()) for h in drift.history)
    values = {k: [v for _, v in s] for k, s in log.records.items() if k.startswith("xai/")}
    assert values and all(math.isfinite(v) for vs in values.values() for v in vs)
    assert values["xai/drift/integrated_gradients/spearman/prev"] == [1.0]  # two constant vectors agree
    assert values["xai/drift/integrated_gradients/ndcg/ref"] == [0.0, 0.0]  # no relevant feature
    assert values["xai/drift/integrated_gradients/js_divergence/prev"] == [0.0]
    assert values["xai/drift/integrated_gradients/map_ssim/prev"] == pytest.approx([1.0])


# ------------------------------------------------------------------------------------ bad arguments
def test_bad_arguments(probe, tmp_path):
    with pytest.raises(ValueError, match="known ones are spearman, kendall, topk_overlap, ndcg, js_divergence, map_spearman, map_ssim"):
        FeatureDriftMonitor(probe, metrics=["spearman", "pearson"])
    with pytest.raises(ValueError, match="metrics is empty"):
        FeatureDriftMonitor(probe, metrics=[])
    with pytest.raises(ValueError, match=r"'first', 'epoch:N'.*got 'firts' \(no such file\)"):
        FeatureDriftMonitor(probe, reference="firts")
    with pytest.raises(ValueError, match="'epoch:N'"):
        FeatureDriftMonitor(probe, reference="epoch:two")
    with pytest.raises(ValueError, match="falls in the warmup"):
        FeatureDriftMonitor(probe, reference="epoch:1", warmup_epochs=2)
    with pytest.raises(ValueError, match="not a monitored epoch with every_n_epochs=2"):
        FeatureDriftMonitor(probe, reference="epoch:2", every_n_epochs=2)
    with pytest.raises(ValueError, match="top_k must be an int >= 1"):
        FeatureDriftMonitor(probe, top_k=0)
    with pytest.raises(ValueError, match="warmup_epochs must be an int >= 0"):
        FeatureDriftMonitor(probe, warmup_epochs=-1)
    with pytest.raises(ValueError, match="one method"):
        FeatureDriftMonitor(probe, method=["saliency", "integrated_gradients"])
    with pytest.raises(ValueError, match="saliency"):
        FeatureDriftMonitor(probe, method="salency")
    with pytest.raises(ValueError, match="reference tensor has 3 values"):
        FeatureDriftMonitor(probe, reference=torch.ones(3))
    with pytest.raises(ValueError, match="must be >= 0"):
        FeatureDriftMonitor(probe, reference=-torch.ones(len(FEATURES)))
    with pytest.raises(ValueError, match="grid"):
        FeatureDriftMonitor(probe, grid=(0, 4))
    with pytest.raises(TypeError, match="reference must be"):
        FeatureDriftMonitor(probe, reference=3)
    with pytest.raises(ValueError, match="needs a probe"):
        FeatureDriftMonitor(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'latest' or 'reference'"):
        FeatureDriftMonitor(probe).save_reference(tmp_path / "r.pt", which="best")


def test_probe_that_does_not_fit_the_model_fails_at_setup():
    probe = ProbeSet(torch.randn(4, 3), targets=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="do not fit"):
        _fit([FeatureDriftMonitor(probe, method="saliency")], max_epochs=1)


def test_reference_epoch_never_validated_warns(probe):
    drift = FeatureDriftMonitor(probe, method="saliency", reference="epoch:1", metrics=["spearman"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit([drift], max_epochs=4, check_val_every_n_epoch=2)  # validates after epochs 1 and 3 only
    assert drift.reference is not None and drift.reference["epoch"] == 1
    drift2 = FeatureDriftMonitor(probe, method="saliency", reference="epoch:2", metrics=["spearman"])
    with pytest.warns(UserWarning, match="reference epoch 2 was never monitored"):
        _fit([drift2], max_epochs=4, check_val_every_n_epoch=2)
    assert drift2.reference is None
    del caught


# ------------------------------------------------------------------------------------ the example
def test_tabular_example_leak_shows_in_the_drift(tmp_path):
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_trainers", "tabular.py")
    spec = importlib.util.spec_from_file_location("tabular_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # type: ignore[union-attr]
    threads = torch.get_num_threads()
    try:
        drift = example.main(
            ["--leak", "--epochs", "9", "--leak-epoch", "6", "--quiet", "--logdir", str(tmp_path), "--threads", "1"]
        )
    finally:
        torch.set_num_threads(threads)
    names = drift.trajectory()[2]
    j = names.index(example.LEAK_FEATURE)
    epochs = [h["epoch"] for h in drift.history]
    assert epochs == [3, 4, 5, 6, 7, 8] and drift.reference["epoch"] == 3
    imp = {h["epoch"]: h["importance"] for h in drift.history}
    rank = {e: int((v > v[j]).sum()) + 1 for e, v in imp.items()}
    assert float(imp[8][j]) > 2 * float(imp[5][j])  # the leaked feature's importance jumps
    assert rank[5] > 5 and rank[8] <= 2  # from the pack to the top
    js_prev = [F.js_divergence(imp[e - 1], imp[e]) for e in epochs[1:]]
    assert max(js_prev) == js_prev[epochs[1:].index(6)]  # the largest move is at the leak epoch
    acc = EventAccumulator(os.path.join(str(tmp_path), "tabular_leak", "version_0"), size_guidance={"scalars": 0})
    acc.Reload()
    curve = [e.value for e in acc.Scalars("xai/importance/integrated_gradients/mean_fractal_dimension")]
    assert curve == pytest.approx([float(imp[e][j]) for e in epochs], rel=1e-5)


def test_grad_cam_at_layer_resolution(probe):
    tr, va = split(image_data(48, 3, style="diagonal"), 32)
    img_probe = ProbeSet(va.tensors[0][:6], va.tensors[1][:6])
    drift = FeatureDriftMonitor(img_probe, method={"grad_cam": {"upsample": False}}, grid=(2, 2), metrics=["spearman", "map_ssim"])
    for epoch in range(2):
        drift.update(epoch, torch.rand(6, 1, 4, 4))  # (N, 1, h, w) maps at a conv layer's resolution
    assert drift.trajectory()[2] == ["ch0[0,0]", "ch0[0,1]", "ch0[1,0]", "ch0[1,1]"]
    assert drift.trajectory_image().shape[2] == 3
    fixed = FeatureDriftMonitor(img_probe, method="grad_cam", grid=(2, 2), reference=torch.rand(4))
    with pytest.raises(ValueError, match="reference has 4 importance values.*give 2"):
        fixed.update(0, torch.rand(6, 1, 1, 4))  # a 1x4 map: the 2x2 grid is clipped to 1x2 cells


# ------------------------------------------------------------------------------------ DDP
def test_ddp_spawn_writes_each_tag_once(tmp_path, probe):
    drift = FeatureDriftMonitor(probe, method="saliency", metrics=["spearman", "js_divergence", "map_ssim"])
    logger = TensorBoardLogger(str(tmp_path), name="ddp", version=0)
    tr, va = tabular_data()
    torch.manual_seed(0)
    t = trainer(None, [drift], 2, logger=logger, strategy="ddp_spawn", devices=2)
    t.fit(TabularNet(), *loaders(tr, va))
    acc = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0})
    acc.Reload()
    for tag in ("xai/drift/saliency/spearman/ref", "xai/drift/saliency/map_ssim/ref", "xai/importance/saliency/age"):
        steps = [e.step for e in acc.Scalars(tag)]
        assert len(steps) == 2 and len(set(steps)) == 2, (tag, steps)  # once per epoch, not once per rank
    assert len(acc.Scalars("xai/drift/saliency/js_divergence/prev")) == 1
    assert acc.Scalars("xai/drift/saliency/spearman/ref")[0].value == pytest.approx(1.0)


def test_maps_of_another_shape_are_skipped_with_a_warning(probe):
    drift = FeatureDriftMonitor(probe, method="saliency", metrics=["spearman", "map_ssim"])
    drift.update(0, torch.rand(len(probe), len(FEATURES)))
    with pytest.warns(UserWarning, match="do not match"):
        scores = drift.update(1, torch.rand(len(probe) - 2, len(FEATURES)))
    assert "xai/drift/saliency/spearman/prev" in scores and "xai/drift/saliency/map_ssim/prev" not in scores
