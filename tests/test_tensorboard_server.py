"""A real TensorBoard server (and a real headless browser) on a run that the callbacks wrote.

The server is ``python -m tensorboard.main`` on 127.0.0.1 at a free port, always terminated; the
browser is Debian's ``chromium`` package (the browser test is skipped where it is not installed).
"""

from __future__ import annotations

import io
import re
import urllib.parse

import numpy as np
import pytest
from PIL import Image

from .fixtures import (
    CHROMIUM_CANDIDATES,
    TensorBoardServer,
    chromium,
    chromium_path,
    http_get,
    read_events,
    tiny_run,
)

METHODS = ("saliency", "integrated_gradients")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    run = tiny_run(str(root), epochs=2, n_probe=8, name="blobs")
    return str(root), run


def _q(**params):
    return urllib.parse.urlencode(params)


def test_server_serves_our_images_scalars_layout_and_text(run_dir):
    root, run = run_dir
    acc = read_events(run["log_dir"])
    with TensorBoardServer(root) as tb:
        images = tb.wait_for(
            "/data/plugin/images/tags", lambda j: len(next(iter(j.values()), {})) >= len(METHODS)
        )
        (run_name,) = images  # "blobs/version_0": the one run under the log root
        assert run_name.startswith("blobs/")
        assert sorted(images[run_name]) == sorted(f"xai/attr/{m}" for m in METHODS)

        # images: every epoch's picture, served as the PNG the callback wrote, of the expected size
        for method in METHODS:
            meta = tb.json("/data/plugin/images/images?" + _q(run=run_name, tag=f"xai/attr/{method}", sample=0))
            assert [m["step"] for m in meta] == [3, 6]
            png = http_get(f"{tb.url}/data/plugin/images/individualImage?{meta[-1]['query']}")
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            im = Image.open(io.BytesIO(png))
            assert im.size == (276, 374)  # 4 columns of 64 px tiles (8x8 upscaled), 2 rows, legend
            assert png == acc.Images(f"xai/attr/{method}")[-1].encoded_image_string
            pixels = np.asarray(im.convert("RGB"))
            assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # a picture, not a blank

        # scalars: our summaries next to the loss, with the values in the event file
        scalars = tb.json("/data/plugin/scalars/tags")[run_name]
        for method in METHODS:
            for name in ("gini", "entropy", "top10_mass"):
                assert f"xai/attr/{method}/{name}" in scalars
        assert {"train/loss", "val/loss", "train/acc", "val/acc"} <= set(scalars)
        series = tb.json("/data/plugin/scalars/scalars?" + _q(run=run_name, tag="xai/attr/saliency/gini"))
        want = acc.Scalars("xai/attr/saliency/gini")
        assert [s[1] for s in series] == [e.step for e in want] == [3, 6]
        assert [s[2] for s in series] == pytest.approx([e.value for e in want])
        assert all(0.0 <= s[2] <= 1.0 for s in series)

        # custom scalars: the layout, and each chart's regex resolved by the server to our curves
        layout = tb.json("/data/plugin/custom_scalars/layout")
        titles = [c["title"] for c in layout["category"]]
        assert titles == ["Loss", "Attribution summaries"]
        charts = {ch["title"]: ch["multiline"]["tag"] for c in layout["category"] for ch in c["chart"]}
        got = {}
        for title, regexes in charts.items():
            (regex,) = regexes
            answer = tb.json("/data/plugin/custom_scalars/scalars?" + _q(run=run_name, tag=regex))
            assert answer["regex_valid"] is True
            got[title] = sorted(answer["tag_to_events"])
        assert got["loss"] == ["train/loss", "val/loss"]
        assert got["accuracy"] == ["train/acc", "val/acc"]
        assert got["gini (concentration)"] == sorted(f"xai/attr/{m}/gini" for m in METHODS)
        assert got["top-10% mass"] == sorted(f"xai/attr/{m}/top10_mass" for m in METHODS)
        loss_events = tb.json("/data/plugin/custom_scalars/scalars?" + _q(run=run_name, tag=".*loss.*"))
        assert [e[2] for e in loss_events["tag_to_events"]["val/loss"]] == pytest.approx(
            [e.value for e in acc.Scalars("val/loss")]
        )

        # text: the markdown summary rendered by the server as an HTML table, one per epoch
        assert tb.json("/data/plugin/text/tags")[run_name] == ["xai/attr/summary"]
        texts = tb.json("/data/plugin/text/text?" + _q(run=run_name, tag="xai/attr/summary"))
        assert [t["step"] for t in texts] == [3, 6]
        html = texts[-1]["text"]
        assert "<table>" in html and "<th>gini</th>" in html
        for method in METHODS:
            assert f"<td>{method}</td>" in html
        gini_cell = re.search(r"<td>saliency</td>\s*<td>([0-9.]+)</td>", html)
        assert gini_cell and float(gini_cell.group(1)) == pytest.approx(want[-1].value, rel=1e-3)
    assert tb.proc is not None and tb.proc.poll() is not None  # the server is gone


# Viridis anchor colours from its dark half: nothing in TensorBoard's own interface (orange, greys,
# white) is near them, so pixels close to them on screen are the heatmaps of our images.
_VIRIDIS_DARK = np.array([[68, 1, 84], [72, 36, 117], [65, 68, 135], [53, 95, 141], [42, 120, 142]])


def _heatmap_pixels(rgb: np.ndarray) -> int:
    d = np.abs(rgb[:, :, None, :].astype(int) - _VIRIDIS_DARK[None, None]).max(axis=3)
    return int((d.min(axis=2) <= 12).sum())


@pytest.mark.skipif(
    chromium_path() is None,
    reason=f"headless Chromium not installed (none of {', '.join(CHROMIUM_CANDIDATES)}); on Debian: "
    "apt-get install chromium",
)
def test_headless_chromium_renders_the_images_dashboard(run_dir, tmp_path):
    root, run = run_dir
    shot = tmp_path / "images.png"
    with TensorBoardServer(root) as tb:
        tb.wait_for("/data/plugin/images/tags", lambda j: len(next(iter(j.values()), {})) >= len(METHODS))
        done = chromium(
            f"{tb.url}/#images", str(tmp_path / "profile"), f"--screenshot={shot}", "--virtual-time-budget=15000"
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert rgb.shape == (1000, 1400, 3)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 200  # not a blank page
    # TensorBoard's orange header bar was drawn (the app loaded) ...
    header = rgb[5:50, :, :].reshape(-1, 3).astype(int)
    assert ((np.abs(header - [245, 124, 0]).max(axis=1) <= 12).mean()) > 0.5
    # ... and so were our heatmaps (viridis tiles of the saliency grid) inside the images dashboard
    assert _heatmap_pixels(rgb) > 1000  # about 3000 here; the text tab below has 0
    # a page without our images (the text tab) has none: the check can fail
    with TensorBoardServer(root) as tb:
        tb.wait_for("/data/plugin/scalars/tags", lambda j: bool(next(iter(j.values()), {})))
        other = tmp_path / "text.png"
        chromium(f"{tb.url}/#text", str(tmp_path / "profile2"), f"--screenshot={other}", "--virtual-time-budget=15000")
    assert _heatmap_pixels(np.asarray(Image.open(other).convert("RGB"))) < 50
