"""The TensorBoard experience without a server: layout, text summaries, colour scale, captions, upscaling.

Everything is read back from the event files that a real ``pl.Trainer`` run wrote.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from lightning_xai import ProbeSet
from lightning_xai import functional as F
from lightning_xai.callbacks import AttributionMonitor
from lightning_xai import sink as dash
from lightning_xai.callbacks._base import XAICallback

from .fixtures import EpochMetricsCNN, event_files, image_data, layouts_in, read_events, texts_in, tiny_run
from .fixtures import trainer as make_trainer


# ---------------------------------------------------------------------- custom-scalars layout
def _charts(layout):
    return {c.title: {ch.title: list(ch.multiline.tag) for ch in c.chart} for c in layout.category}


def test_layout_written_once_and_parsed_from_event_file(tmp_path):
    run = tiny_run(str(tmp_path), epochs=2)
    layouts = layouts_in(run["log_dir"])
    assert len(layouts) == 1, "the layout is written once per run, not once per epoch"
    charts = _charts(layouts[0])
    # AttributionMonitor declares its category: the dashboard is Loss + Attribution summaries
    assert list(charts) == ["Loss", "Attribution summaries"]
    assert charts["Loss"] == {"loss": [".*loss.*"], "accuracy": [".*acc.*"]}
    # every chart regex selects the scalars this run really logged, and only those of its kind
    scalar_tags = read_events(run["log_dir"]).Tags()["scalars"]
    for title, (regex,) in charts["Attribution summaries"].items():
        hits = [t for t in scalar_tags if re.match(regex, t)]
        assert sorted(hits) == sorted(
            t for t in scalar_tags if t.startswith("xai/attr/") and t.endswith(regex.split("/")[-1].rstrip("$"))
        ), title
        assert len(hits) == 2, (title, hits)  # saliency and integrated_gradients
    assert sorted(t for t in scalar_tags if re.match(".*loss.*", t)) == ["train/loss", "val/loss"]


class _Undeclared(XAICallback):
    """A lightning_xai callback that does not declare its dashboard categories (like a newcomer)."""

    def __init__(self, probe):
        super().__init__(probe)


def test_several_callbacks_write_one_layout_and_undeclared_gets_all(tmp_path):
    run = tiny_run(
        str(tmp_path),
        epochs=1,
        callbacks_factory=lambda probe: [
            AttributionMonitor(probe, methods=["input_x_gradient"]),
            _Undeclared(probe),
        ],
    )
    layouts = layouts_in(run["log_dir"])
    assert len(layouts) == 1
    assert [c.title for c in layouts[0].category] == list(dash.CATEGORIES)
    charts = _charts(layouts[0])
    assert list(charts["Drift"]) == [
        "vs previous epoch: agreement (1 = same)", "vs previous epoch: divergence (0 = same)",
        "vs reference: agreement (1 = same)", "vs reference: divergence (0 = same)", "global importance",
    ]
    assert charts["Dead ReLU"]["dead units (fraction)"] == [r"xai/dead_relu/.*"]
    assert charts["Sanity checks"] == {"checks": [r"xai/check/.*"], "gate passed (1) / failed (0)": [r"xai/gate/passed"]}
    # the regexes pick the tags the other callbacks log (DESIGN.md), and not each other's
    tags = ["xai/drift/saliency/spearman/prev", "xai/drift/saliency/spearman/ref", "xai/drift/saliency/js_divergence/ref",
            "xai/drift/saliency/map_ssim/prev", "xai/dead_relu/conv1",
            "xai/dead_relu/all", "xai/dead_relu_dormant/conv1", "xai/check/randomization", "xai/gate/passed",
            "xai/importance/saliency/age", "val/loss"]
    picked = {
        (cat, chart): [t for t in tags if any(re.match(r, t) for r in regexes)]
        for cat, cs in charts.items() if cat != "Loss" for chart, regexes in cs.items()
    }
    assert picked[("Drift", "vs previous epoch: agreement (1 = same)")] == [
        "xai/drift/saliency/spearman/prev", "xai/drift/saliency/map_ssim/prev"]
    assert picked[("Drift", "vs previous epoch: divergence (0 = same)")] == []
    assert picked[("Drift", "vs reference: agreement (1 = same)")] == ["xai/drift/saliency/spearman/ref"]
    assert picked[("Drift", "vs reference: divergence (0 = same)")] == ["xai/drift/saliency/js_divergence/ref"]
    assert picked[("Dead ReLU", "dead units (fraction)")] == ["xai/dead_relu/conv1", "xai/dead_relu/all"]
    assert picked[("Dead ReLU", "dormant units (fraction)")] == ["xai/dead_relu_dormant/conv1"]
    assert picked[("Sanity checks", "checks")] == ["xai/check/randomization"]
    assert picked[("Sanity checks", "gate passed (1) / failed (0)")] == ["xai/gate/passed"]


def test_fit_then_validate_same_log_dir_keeps_one_layout(tmp_path):
    run = tiny_run(str(tmp_path), epochs=1)
    trainer = run["trainer"]
    trainer.validate(run["model"], DataLoader(image_data(style="blob"), batch_size=96), verbose=False)
    assert len(layouts_in(run["log_dir"])) == 1
    # validate() runs under inference mode: the maps, picture and summary were still made, under the
    # stage's own tags, so that they never overwrite what fit logged at the same step
    ea = read_events(run["log_dir"])
    assert len(ea.Images("xai/attr/saliency")) == 1 and len(ea.Images("validate/xai/attr/saliency")) == 1
    assert len(texts_in(run["log_dir"], "xai/attr/summary")) == 1
    assert len(texts_in(run["log_dir"], "validate/xai/attr/summary")) == 1
    # a second run (a new version directory) gets its own
    run2 = tiny_run(str(tmp_path), epochs=1)
    assert run2["log_dir"] != run["log_dir"]
    assert len(layouts_in(run2["log_dir"])) == 1


def test_layout_rewritten_when_the_run_directory_was_deleted(tmp_path):
    import shutil

    root = tmp_path / "logs"
    first = tiny_run(str(root), epochs=1)
    shutil.rmtree(root)  # a notebook user wipes the logs and runs again: same version_0 path
    second = tiny_run(str(root), epochs=1)
    assert second["log_dir"] == first["log_dir"]
    assert len(layouts_in(second["log_dir"])) == 1


def test_ddp_two_processes_write_layout_images_and_text_once(tmp_path):
    tiny_run(
        str(tmp_path), epochs=1, n_probe=4, methods=["saliency"],
        trainer_kwargs=dict(strategy="ddp_spawn", devices=2, accelerator="cpu"),
    )
    # (the parent process's logger resolves its version lazily, so look for the run on disk)
    files = sorted(str(p) for p in tmp_path.rglob("events.out.tfevents.*"))
    assert len(files) == 1, f"only rank 0 writes TensorBoard events, got {files}"
    log_dir = os.path.dirname(files[0])
    assert len(layouts_in(log_dir)) == 1
    acc = read_events(log_dir)
    assert len(acc.Images("xai/attr/saliency")) == 1
    assert len(texts_in(log_dir, "xai/attr/summary")) == 1
    # one value per epoch (not one per rank): 96 samples / 2 ranks / 32 a batch = step 2
    assert [e.step for e in acc.Scalars("xai/attr/saliency/gini")] == [2]


def test_no_layout_without_tensorboard_and_csv_logger_still_works(tmp_path):
    pl.seed_everything(0)
    data = image_data(style="blob")
    probe = ProbeSet(data.tensors[0][:4], targets=data.tensors[1][:4])
    monitor = AttributionMonitor(probe, methods=["saliency"])
    trainer = make_trainer(tmp_path, [monitor], 2, logger=CSVLogger(str(tmp_path)), deterministic=None)
    with pytest.warns(UserWarning, match="no TensorBoardLogger attached") as record:
        trainer.fit(EpochMetricsCNN(), DataLoader(data, batch_size=32), DataLoader(data, batch_size=96))
    # one warning for images and text together, not one per tag or epoch
    assert sum("no TensorBoardLogger" in str(w.message) for w in record) == 1
    assert dash.ensure_layout(trainer) is False
    assert not list(tmp_path.rglob("events.out.tfevents.*"))
    assert "xai/attr/saliency/gini" in trainer.callback_metrics


def test_write_layout_rejects_unknown_category_and_takes_extra(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown dashboard category \['Gradients'\].*known: \['Loss'"):
        dash.write_layout(w, categories=["Gradients"])
    with pytest.raises(ValueError, match=r"chart 'lr' of 'Mine': 'lr-\(' is not a valid regular expression"):
        dash.write_layout(w, extra={"Mine": {"lr": ["lr-("]}})
    layout = dash.write_layout(w, categories="Drift", extra={"Mine": {"lr": [r"lr-.*"]}})
    w.close()
    assert [c.title for c in layout.category] == ["Loss", "Drift", "Mine"]
    (written,) = layouts_in(str(tmp_path))
    assert written == layout


# ---------------------------------------------------------------------- text summaries
def test_attribution_summary_text_each_epoch_matches_scalars(tmp_path):
    run = tiny_run(str(tmp_path), epochs=2)
    texts = texts_in(run["log_dir"], "xai/attr/summary")
    assert [step for step, _ in texts] == [3, 6]  # 96 samples / 32 per batch = 3 steps an epoch
    acc = read_events(run["log_dir"])
    step, md = texts[-1]
    assert "**Attribution summaries, epoch 1**" in md
    lines = md.splitlines()
    header = lines.index("| method | gini | entropy | top10_mass | colour max | clipped |")
    assert lines[header + 1] == "|---|---|---|---|---|---|"
    rows = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ") for line in lines[header + 2 :]}
    assert set(rows) == {"saliency", "integrated_gradients"}
    for method, cells in rows.items():
        gini = acc.Scalars(f"xai/attr/{method}/gini")[-1]
        assert gini.step == step
        assert float(cells[1]) == pytest.approx(gini.value, rel=1e-3)
        assert float(cells[4]) == pytest.approx(run["monitor"]._vmax[method], rel=1e-3)
        assert re.fullmatch(r"\d+\.\d%", cells[5])


def test_log_text_writes_exact_tag_for_the_gate(tmp_path):
    logger = TensorBoardLogger(str(tmp_path), name="t")

    class _Trainer:  # what log_text reads from a Trainer
        is_global_zero = True
        global_step = 7
        loggers = [logger]

    md = "## Gate report\n\n| check | value | passed |\n|---|---|---|\n| randomization | 0.12 | yes |"
    assert dash.log_text(_Trainer(), "xai/gate/report", md) == 1
    logger.experiment.flush()
    assert texts_in(logger.log_dir, "xai/gate/report") == [(7, md)]
    other = _Trainer()
    other.is_global_zero = False
    assert dash.log_text(other, "xai/gate/report", md) == 0
    with pytest.raises(ValueError, match="non-empty string tag"):
        dash.log_text(_Trainer(), "", md)


def test_markdown_table_escapes_and_blanks():
    md = dash.markdown_table({"a|b": {"x": 1.0, "y": float("nan")}, "c": {"z": True}}, row_header="name")
    assert md.splitlines() == [
        "| name | x | y | z |",
        "|---|---|---|---|",
        "| a\\|b | 1 | NaN |  |",
        "| c |  |  | yes |",
    ]


# ---------------------------------------------------------------------- colour scale
def test_color_scale_fixed_stays_across_epochs_and_images_use_it(tmp_path):
    seen = []

    class Spy(pl.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):  # runs after the monitor (added later)
            mon = trainer.callbacks[0]
            seen.append((dict(mon._vmax), {m: a.clone() for m, a in mon.last_attributions.items()}))

    run = tiny_run(str(tmp_path), epochs=3, callbacks_factory=lambda probe: [Spy()], color_scale="fixed")
    first_vmax, first_maps = seen[0]
    for method in ("saliency", "integrated_gradients"):
        expected = F.color_scale(first_maps[method].sum(1))
        assert first_vmax[method] == pytest.approx(expected)
        assert [v[method] for v, _ in seen] == [first_vmax[method]] * 3
        # the maps did change over training, so a per-epoch scale would not have stayed put
        assert F.color_scale(seen[-1][1][method].sum(1)) != pytest.approx(expected, rel=1e-3)
    # the logged picture of the last epoch is exactly the overlay at the first epoch's scale
    mon, probe = run["monitor"], run["probe"]
    acc = read_events(run["log_dir"])
    last = acc.Images("xai/attr/saliency")[-1]
    got = np.asarray(Image.open(io.BytesIO(last.encoded_image_string)).convert("RGB"))
    maps = seen[-1][1]["saliency"]
    trainer = run["trainer"]
    want = F.overlay_grid(
        probe.inputs, maps, vmax=first_vmax["saliency"], signed=False,
        labels=mon._labels(trainer, run["model"], len(probe)),
        highlight=mon._mistakes(trainer, run["model"], len(probe)), columns=4,
        title=f"saliency, epoch 2 (step {trainer.global_step})", legend=mon._scale_legend("saliency"),
    )
    assert "fixed at epoch 0" in mon._scale_legend("saliency")
    np.testing.assert_array_equal(got, want)


def test_color_scale_policies_in_a_run(tmp_path):
    def vmax_trace(policy):
        seen = []

        class Spy(pl.Callback):
            def on_validation_epoch_end(self, trainer, pl_module):
                mon = trainer.callbacks[0]
                seen.append((mon._vmax["saliency"], F.color_scale(mon.last_attributions["saliency"].sum(1))))

        tiny_run(str(tmp_path / str(policy)), epochs=3, callbacks_factory=lambda p: [Spy()],
                 methods=["saliency"], color_scale=policy)
        return seen

    per_epoch = vmax_trace("per_epoch")
    assert all(v == pytest.approx(c) for v, c in per_epoch)
    assert len({round(v, 9) for v, _ in per_epoch}) == 3
    grow = vmax_trace("grow")
    first = grow[0][0]
    for v, c in grow:
        k = 2 * np.log2(v / first)
        assert k == pytest.approx(round(k)) and k >= 0  # the first scale times a power of sqrt(2)
        assert v >= c or v == pytest.approx(c)  # never below this epoch's maps
    assert [v for v, _ in grow] == sorted(v for v, _ in grow)  # never lowered
    assert all(v == 0.05 for v, _ in vmax_trace(0.05))


def test_color_scale_argument_validated():
    probe = ProbeSet(torch.rand(4, 1, 8, 8), targets=torch.arange(4))
    for bad in ("auto", 0, -1.0, float("nan"), True, None):
        with pytest.raises(ValueError, match="color_scale must be 'fixed', 'grow', 'per_epoch' or a positive number"):
            AttributionMonitor(probe, color_scale=bad)
    assert AttributionMonitor(probe, color_scale=2).color_scale == 2.0


def test_color_scale_survives_checkpoint_state(tmp_path):
    run = tiny_run(str(tmp_path), epochs=1, color_scale="fixed")
    state = run["monitor"].state_dict()
    assert set(state["vmax"]) == {"saliency", "integrated_gradients"}
    assert state["vmax_epoch"] == {"saliency": 0, "integrated_gradients": 0}
    assert state["signed"] == {"saliency": False, "integrated_gradients": True}
    fresh = AttributionMonitor(run["probe"], methods=["saliency", "integrated_gradients"], color_scale="fixed")
    fresh.load_state_dict(state)
    assert fresh._vmax == state["vmax"] and fresh._signed == state["signed"]
    # a resumed fixed scale keeps the saved maximum even for much larger maps
    assert F.next_color_scale("fixed", fresh._vmax["saliency"], torch.full((3,), 1e6)) == state["vmax"]["saliency"]


def test_fixed_scale_warns_once_when_saturated(tmp_path):
    probe = ProbeSet(torch.rand(4, 1, 8, 8), targets=torch.arange(4))
    mon = AttributionMonitor(probe, methods=["saliency"], color_scale="fixed")

    class _T:
        current_epoch = 0

    mon._scale(_T(), "saliency", torch.ones(4, 8, 8))
    with pytest.warns(UserWarning, match=r"fixed colour scale of 'saliency' \(max 1, set at epoch 0\) now clips 100%"):
        mon._scale(_T(), "saliency", 3 * torch.ones(4, 8, 8))
    assert mon._clipped["saliency"] == 1.0


# ---------------------------------------------------------------------- legible pictures
def test_captions_true_and_predicted_and_mistakes_framed(tmp_path):
    run = tiny_run(str(tmp_path), epochs=1, n_probe=8)
    mon, trainer, model, probe = run["monitor"], run["trainer"], run["model"], run["probe"]
    with torch.no_grad():
        pred = model.eval()(probe.inputs).argmax(1)
    labels = mon._labels(trainer, model, 8)
    assert labels == [f"y={int(t)}  p={int(p)}" for t, p in zip(probe.targets, pred)]
    mistakes = mon._mistakes(trainer, model, 8)
    assert mistakes == (pred != probe.targets).tolist()
    # rendering: a flagged sample gets the vermillion frame, an unflagged one does not
    flags = [True] + [False] * 7
    img = F.overlay_grid(probe.inputs, torch.rand(8, 1, 8, 8), labels=labels, highlight=flags)
    vermillion = np.all(img == np.array([213, 94, 0], dtype=np.uint8), axis=2)
    tile = 8 * 8 + 4  # 64 px tile and 4 px gap
    assert vermillion[:, :tile].sum() > 4 * 64  # the frame around sample 0 (two tiles, 2 px)
    assert vermillion[:, tile + 2 : 2 * tile].sum() == 0  # sample 1: captions in black, no frame
    # captions are drawn: dark text pixels in the caption band above the first tile
    band = img[4:18, 4 : 4 + 64]
    assert (band.min(axis=2) < 100).sum() > 20


def test_small_inputs_upscaled_nearest_neighbour_to_readable_size():
    x = torch.rand(2, 1, 8, 8)
    img = F.overlay_grid(x, torch.zeros(2, 1, 8, 8), vmax=1.0, signed=False, min_size=64)
    tile = img[4 : 4 + 64, 4 : 4 + 64, 0].astype(int)  # first input tile, no labels/title
    g = x[:, 0].double()
    g = (g - g.min()) / (g.max() - g.min())
    want = np.rint(g[0].numpy() * 255).astype(int).repeat(8, 0).repeat(8, 1)
    np.testing.assert_array_equal(tile, want)  # each source pixel is an 8x8 block: no blur
    assert img.shape[1] == 2 * 68 + 4


def test_legend_colour_bar_spans_the_colormap_and_names_the_scale():
    img = F.overlay_grid(torch.rand(2, 1, 8, 8), torch.randn(2, 1, 8, 8), vmax=2.0, legend="scale note")
    bar_row = img[-41 + 6]  # middle of the 10-px colour bar under the grid (bar 28 px + 13 per legend line)
    ramp = (F.colormap(np.linspace(-1, 1, img.shape[1] - 20), signed=True) * 255).round()
    np.testing.assert_allclose(bar_row[10 : img.shape[1] - 10].astype(float), ramp, atol=1)
    # the ends of a signed bar are the dark blue and dark red of RdBu; the middle is near white
    assert bar_row[10][2] > bar_row[10][0] and bar_row[img.shape[1] - 11][0] > bar_row[img.shape[1] - 11][2]
    mid = bar_row[img.shape[1] // 2]
    assert mid.min() > 230
    legend_band = img[-13:]
    assert (legend_band.min(axis=2) < 150).sum() > 30  # the legend text is drawn


def test_event_files_hold_png_images_of_expected_size(tmp_path):
    run = tiny_run(str(tmp_path), epochs=1, n_probe=8)
    assert event_files(run["log_dir"])
    acc = read_events(run["log_dir"])
    for method in ("saliency", "integrated_gradients"):
        (event,) = acc.Images(f"xai/attr/{method}")
        png = event.encoded_image_string
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        im = Image.open(io.BytesIO(png))
        # 8 samples of 8x8 upscaled to 64 px, 4 a row (fits TensorBoard's image card): 4 * (64 + 4) + 4
        # wide; title 16, then 2 rows of (caption 14 + input 64 + gap 4 + heatmap 64 + gap 4), a 4 px
        # margin, the colour bar (28) and its legend, wrapped to two lines of 13
        assert im.size == (event.width, event.height) == (276, 16 + 4 + 2 * (14 + 64 + 4 + 64 + 4) + 28 + 2 * 13)


@pytest.mark.parametrize("shape", [(37, 53, 3), (9, 4, 4), (6, 11), (1, 1, 3)])
def test_png_bytes_decode_to_the_same_pixels(shape):
    import io

    from PIL import Image

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    img[3:] = img[2:3] if shape[0] > 3 else img[3:]  # repeated rows, as upscaled tiles have
    decoded = np.asarray(Image.open(io.BytesIO(F.png_bytes(img))))
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, img)
    with pytest.raises(ValueError, match="png_bytes takes an HxW, HxWx3 or HxWx4 uint8 image"):
        F.png_bytes(np.zeros((4, 4, 2), dtype=np.uint8))


def _scripted_half(ctx):  # type: ignore[no-untyped-def]
    return 0.25


def test_layout_has_a_chart_for_each_declared_thing_and_no_empty_chart(tmp_path):
    from lightning_xai import checks
    from lightning_xai.callbacks import FeatureDriftMonitor, SanityGate

    run = tiny_run(
        str(tmp_path),
        epochs=2,
        callbacks_factory=lambda probe: [
            FeatureDriftMonitor(probe, method="saliency", metrics=["spearman", "ndcg", "js_divergence"]),
            SanityGate(probe, [checks.Custom(_scripted_half, name="half", max_value=0.5), checks.Finite()]),
        ],
    )
    (layout,) = layouts_in(run["log_dir"])
    charts = _charts(layout)
    assert list(charts) == ["Loss", "Attribution summaries", "Drift", "Sanity checks"]
    # image probe: no per-feature importance; agreement and divergence apart
    assert charts["Drift"] == {
        "vs previous epoch: agreement (1 = same)": [r"xai/drift/saliency/(spearman|ndcg)/prev$"],
        "vs previous epoch: divergence (0 = same)": [r"xai/drift/saliency/(js_divergence)/prev$"],
        "vs reference: agreement (1 = same)": [r"xai/drift/saliency/(spearman|ndcg)/ref$"],
        "vs reference: divergence (0 = same)": [r"xai/drift/saliency/(js_divergence)/ref$"],
    }
    assert charts["Sanity checks"] == {
        "half: value and bound": [r"xai/check/half(/bound)?$"],
        "finite: value and bound": [r"xai/check/finite(/bound)?$"],
        "gate passed (1) / failed (0)": [r"xai/gate/passed"],
    }
    # every xai chart draws something this run logged; a check's chart draws its value and its bound
    tags = read_events(run["log_dir"]).Tags()["scalars"]
    for category, cs in charts.items():
        for title, regexes in cs.items():
            if category != "Loss":
                assert any(re.match(r, t) for r in regexes for t in tags), (category, title)
    assert sorted(t for t in tags if re.match(r"xai/check/half(/bound)?$", t)) == ["xai/check/half", "xai/check/half/bound"]
    ea = read_events(run["log_dir"])
    assert [e.value for e in ea.Scalars("xai/check/half/bound")] == [0.5, 0.5]
    assert "xai/check/finite/bound" not in tags  # Finite has no bound


def test_global_importance_chart_only_for_tabular_probes():
    import torch

    from lightning_xai.callbacks import FeatureDriftMonitor

    tabular = ProbeSet(torch.randn(8, 3), targets=torch.arange(8) % 2, feature_names=["a", "b", "c"])
    images = ProbeSet(torch.randn(8, 1, 8, 8), targets=torch.arange(8) % 2)
    assert "global importance" in FeatureDriftMonitor(tabular, method="saliency").dashboard_charts()["Drift"]
    assert "global importance" not in FeatureDriftMonitor(images, method="saliency").dashboard_charts()["Drift"]
    no_curves = FeatureDriftMonitor(tabular, method="saliency", log_importance=False)
    assert "global importance" not in no_curves.dashboard_charts()["Drift"]
    merged = dash.layout_charts([FeatureDriftMonitor(tabular, method="saliency"), FeatureDriftMonitor(tabular)])
    assert merged["Drift"]["global importance"] == [r"xai/importance/saliency/.*", r"xai/importance/integrated_gradients/.*"]
