"""Make the documentation's TensorBoard screenshots from a real run of the digits demo.

    .venv/bin/python scripts/screenshots.py                     # writes docs/images/*.png (a few minutes)
    .venv/bin/python scripts/screenshots.py --logdir runs/shots  # the same, keeping the run in runs/shots/...
    .venv/bin/python scripts/screenshots.py --logdir runs/shots  # ... and, run again, reusing it (no training)
    .venv/bin/python scripts/screenshots.py --epochs 4 --out shots --keep-logs
    .venv/bin/python scripts/screenshots.py --pages featvis      # only the feature-visualisation picture

Steps: run ``example_trainers/digits.py`` (the whole callback suite) into a log directory, start a
real TensorBoard server on 127.0.0.1 (a free port), load its dashboards in headless Chromium
(Debian's ``chromium`` package) and save a screenshot of each as an optimised PNG (palette-quantised
only if it would exceed 250 KB). The attribution grid the callback logged is also saved as it is in
the event file. Whatever callbacks the demo attaches appear in the screenshots: re-run it when the
demo changes.

The custom-scalars dashboard is taken once in a tall window and cut into two pictures: the top of
the page (loss and attribution summaries) and the loss followed by the drift, dead-ReLU and sanity
check sections (the attribution summaries section cut out, as if collapsed; the sections are found
in the screenshot by their header bars, the category names read from the run's layout). Each page
is checked before it is kept (the charts have drawn their curves, the images and the report are
there) and taken again with a longer wait if not: TensorBoard loads its data asynchronously.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import shutil
import sys
import tempfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT]

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tests.fixtures import TensorBoardServer, chromium, chromium_path, layouts_in, read_events  # noqa: E402

METHODS = ["saliency", "integrated_gradients", "grad_cam"]
MAX_BYTES = 250_000
#: the dashboard's sections shown below the loss in ``tensorboard_dashboard_checks.png``
CHECK_SECTIONS = ("Drift", "Dead ReLU", "Sanity checks")
#: virtual time (ms) Chromium gives the page before the screenshot, one value per attempt
BUDGETS_MS = (20_000, 40_000, 80_000)


def shrink(png: bytes, limit: int = MAX_BYTES) -> bytes:
    """An optimised PNG; palette-quantised only if it is still over ``limit`` bytes."""
    im = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    im.save(out, format="PNG", optimize=True)
    if out.tell() <= limit:
        return out.getvalue()
    out = io.BytesIO()
    im.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
        out, format="PNG", optimize=True
    )
    return out.getvalue()


# ------------------------------------------------------------------ reading a screenshot
def _is_curve(rgb: "np.ndarray") -> "np.ndarray":
    """Which pixels of an (H, W, 3) array are drawn in the run's colour (TensorBoard's first run is
    orange, #ff7043; its own top bar, #f57c00, is excluded by where we look)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r >= 230) & (g >= 90) & (g <= 150) & (b <= 110)


def sections(im: Image.Image) -> List[Tuple[int, int]]:
    """``[(top, bottom)]`` of each category pane of the custom-scalars page, top to bottom.

    Read down a column just inside the panes' right edge: a pane is a short white run (its header
    bar, about 44 px) then a long white run (its charts), cards separated by a few grey rows.
    """
    rgb = im.convert("RGB")
    w, h = rgb.size
    x = w - 12
    runs: List[Tuple[int, int]] = []
    start: Optional[int] = None
    for y in range(h):
        white = rgb.getpixel((x, y)) == (255, 255, 255)
        if white and start is None:
            start = y
        elif not white and start is not None:
            runs.append((start, y - 1))
            start = None
    if start is not None:
        runs.append((start, h - 1))
    runs = [r for r in runs if r[1] - r[0] >= 20]
    out: List[Tuple[int, int]] = []
    i = 0
    while i + 1 < len(runs):
        (h0, h1), (b0, b1) = runs[i], runs[i + 1]
        if 30 <= h1 - h0 <= 70 and b1 - b0 > 100:
            out.append((h0, b1))
            i += 2
        else:
            i += 1
    return out


def dashboard_panes(png: bytes, titles: Sequence[str]) -> Dict[str, Tuple[int, int]]:
    """``{category title: (top, bottom)}`` of the panes in a custom-scalars screenshot."""
    found = sections(Image.open(io.BytesIO(png)))
    if len(found) != len(titles):
        raise RuntimeError(
            f"found {len(found)} category panes in the custom-scalars screenshot, the layout has {len(titles)} "
            f"({list(titles)}): TensorBoard's page changed, or the window is too short for all of them"
        )
    return dict(zip(titles, found))


def dashboard_drawn(png: bytes, titles: Sequence[str]) -> bool:
    """Every pane is there and has curves drawn (not a page still loading)."""
    im = Image.open(io.BytesIO(png)).convert("RGB")
    try:
        panes = dashboard_panes(png, titles)
    except RuntimeError:
        return False
    w = im.size[0]
    for top, bottom in panes.values():
        body = np.asarray(im.crop((w // 5, top + 50, w, bottom)), dtype=np.int16)
        if int(_is_curve(body).sum()) < 50:
            return False
    return True


def has_content(png: bytes, min_dark: float) -> bool:
    """The page's main area is drawn: at least ``min_dark`` of it is dark (text, image grids).

    A page still loading shows the cards' titles and empty frames only: about 0.2% dark pixels on
    the text tab and 0.7% on the images tab, against 2.5% and 23% once the report or the grids are in.
    """
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    main = rgb[120:, rgb.shape[1] // 4 :]
    return float((main.max(axis=-1) < 110).mean()) >= min_dark


def stack_panes(png: bytes, panes: Dict[str, Tuple[int, int]], keep: Sequence[str], margin: int = 16) -> bytes:
    """The page with only the panes named in ``keep``, in that order, as if the others were collapsed:
    the top bar and the sidebar stay as they are on screen, the kept panes move up."""
    im = Image.open(io.BytesIO(png)).convert("RGB")
    w, h = im.size
    ordered = sorted(panes.values())
    (first_top, first_bottom), (second_top, _) = ordered[0], ordered[1]
    gap = second_top - first_bottom - 1  # the grey rows (and shadows) between two panes
    half = gap // 2
    # the content column starts where the first pane's header bar does
    left = next(x for x in range(w // 6, w) if im.getpixel((x, first_top + 5)) == (255, 255, 255)) - 4
    pieces = [panes[name] for name in keep]
    height = first_top - half + sum(b - t + 1 + gap for t, b in pieces) + margin
    out = im.crop((0, 0, w, height))  # the top bar and the sidebar
    out.paste(im.getpixel((left + 8, h - 3)), (left, first_top - half, w, height))  # page background
    y = first_top - half
    for top, bottom in pieces:
        band = im.crop((left, top - half, w, bottom + 1 + gap - half))
        out.paste(band, (left, y))
        y += band.size[1]
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def crop(png: bytes, bottom: int) -> bytes:
    """The top ``bottom`` rows of the picture."""
    im = Image.open(io.BytesIO(png))
    buf = io.BytesIO()
    im.crop((0, 0, im.size[0], min(bottom, im.size[1]))).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ taking them
def screenshot(
    url: str, window: Tuple[int, int], tmp: str, ok: Callable[[bytes], bool], what: str, scale: float = 1.0
) -> bytes:
    """A screenshot of ``url`` for which ``ok(png)`` holds, waiting longer at each attempt.

    ``scale`` is the device pixel ratio: ``window`` is in CSS pixels, the picture ``scale`` times larger
    (TensorBoard scales images down to its cards' width; 1.5 shows a 480-pixel picture about as logged).
    """
    shot = os.path.join(tmp, "shot.png")
    last_error = ""
    for budget in BUDGETS_MS:
        if os.path.exists(shot):
            os.remove(shot)
        done = chromium(
            url, os.path.join(tmp, "profile"), f"--screenshot={shot}", f"--virtual-time-budget={budget}",
            f"--force-device-scale-factor={scale:g}", window=f"{window[0]},{window[1]}", timeout=120 + budget / 1000,
        )
        if done.returncode != 0 or not os.path.exists(shot):
            last_error = done.stderr.decode(errors="replace")[-1500:]
            continue
        with open(shot, "rb") as f:
            png = f.read()
        if ok(png):
            return png
        last_error = "the page was still loading (or empty)"
        print(f"  {what}: not ready after {budget / 1000:g} s of page time, trying again", file=sys.stderr)
    raise RuntimeError(f"no usable screenshot of {what} ({url}): {last_error}")


def find_run(logs: str) -> Optional[str]:
    """The newest run directory (one holding event files) under ``logs``, if any."""
    files = glob.glob(os.path.join(logs, "**", "events.out.tfevents.*"), recursive=True)
    if not files:
        return None
    return os.path.dirname(max(files, key=os.path.getmtime))


def take_featvis(tb: TensorBoardServer, out_dir: str) -> List[str]:
    """The images tab filtered to ``FeatureVisualizationMonitor``'s class pictures, one row per epoch."""
    with tempfile.TemporaryDirectory() as tmp:
        png = screenshot(
            f"{tb.url}/#images&tagFilter=xai%2Ffeatvis%2Fclasses_by_epoch", (1100, 640), tmp,
            lambda png: has_content(png, 0.05), "feature visualisation",
        )
    path = os.path.join(out_dir, "tensorboard_featvis.png")
    with open(path, "wb") as f:
        f.write(shrink(png))
    return [path]


def take(tb: TensorBoardServer, log_dir: str, out_dir: str) -> List[str]:
    """Screenshot ``tb``'s dashboards of the run in ``log_dir`` into ``out_dir``; the paths written."""
    layouts = layouts_in(log_dir)
    if not layouts:
        raise RuntimeError(f"{log_dir} has no custom-scalars layout: was it written by a lightning_xai callback?")
    titles = [c.title for c in layouts[0].category]
    missing = [name for name in ("Loss", *CHECK_SECTIONS) if name not in titles]
    if missing:
        raise RuntimeError(f"the run's dashboard has no {missing} section (it has {titles}): attach the whole suite")
    written: List[str] = []

    def save(name: str, png: bytes) -> None:
        path = os.path.join(out_dir, name)
        with open(path, "wb") as f:
            f.write(shrink(png))
        written.append(path)

    with tempfile.TemporaryDirectory() as tmp:
        # the whole dashboard in one tall window (three charts a row), then two pictures cut from it
        tall = screenshot(
            f"{tb.url}/#custom_scalars", (1500, 3600), tmp, lambda png: dashboard_drawn(png, titles), "custom scalars"
        )
        panes = dashboard_panes(tall, titles)
        # the top of the page as a user first sees it: the loss, then the attribution summaries
        save("tensorboard_custom_scalars.png", crop(tall, panes[titles[min(1, len(titles) - 1)]][1] + 4))
        # the loss with the drift, dead-ReLU and sanity-check sections below it
        save("tensorboard_dashboard_checks.png", stack_panes(tall, panes, ["Loss", *CHECK_SECTIONS]))
        # the images tab: one grid per method
        images = screenshot(f"{tb.url}/#images", (1400, 1000), tmp, lambda png: has_content(png, 0.05), "images")
        save("tensorboard_images.png", images)
        # the drift trajectory (each feature's share of the importance by epoch) in its card, as shown
        trajectory = screenshot(
            f"{tb.url}/#images&tagFilter=xai%2Fdrift%2F.*%2Ftrajectory", (1100, 760), tmp,
            lambda png: has_content(png, 0.05), "drift trajectory",
        )
        save("tensorboard_trajectory.png", trajectory)
        # the text tab filtered to the gate's report (latest epoch first)
        report = screenshot(
            f"{tb.url}/#text&tagFilter=xai%2Fgate%2Freport", (1700, 690), tmp, lambda png: has_content(png, 0.01),
            "gate report",
        )
        save("tensorboard_gate_report.png", report)
        # the text tab filtered to the attribution summary table
        summary = screenshot(
            f"{tb.url}/#text&tagFilter=xai%2Fattr%2Fsummary", (1400, 640), tmp, lambda png: has_content(png, 0.01),
            "summary text",
        )
        save("tensorboard_text.png", summary)
    return written


def report(written: Sequence[str]) -> None:
    """Print each picture's size, warning about one over :data:`MAX_BYTES`."""
    for path in written:
        size = os.path.getsize(path)
        print(f"{os.path.relpath(path, ROOT)}: {size // 1024} KB")
        if size > MAX_BYTES:
            print(f"  warning: over {MAX_BYTES // 1000} KB", file=sys.stderr)


def main(argv: List[str] | None = None) -> List[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "images"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--logdir",
        help="log directory for the demo run, kept afterwards; if it already holds a run, that run is reused "
        "(no training). TensorBoard shows it under the directory's own name",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep (and print) the temporary log directory")
    parser.add_argument(
        "--pages", choices=["all", "featvis"], default="all",
        help="all the pictures, or only the feature-visualisation one (docs/images/tensorboard_featvis.png)",
    )
    args = parser.parse_args(argv)
    if chromium_path() is None:
        sys.exit("headless Chromium is needed (Debian: apt-get install chromium)")

    if args.logdir:
        work, logs, temporary = None, os.path.abspath(args.logdir), False
    else:
        work = tempfile.mkdtemp(prefix="lightning_xai_shots_")
        logs = os.path.join(work, "lightning_logs")  # TensorBoard shows it as "lightning_logs", as for a user
        temporary = not args.keep_logs
    written: List[str] = []
    try:
        log_dir = find_run(logs)
        if log_dir is None:
            from example_trainers.digits import main as digits_main

            log_dir = digits_main(["--epochs", str(args.epochs), "--logdir", logs, "--methods", *METHODS])
        else:
            print(f"reusing the run in {log_dir}")
        os.makedirs(args.out, exist_ok=True)
        parent, name = os.path.split(logs.rstrip(os.sep))
        if args.pages == "featvis":
            with TensorBoardServer(name, cwd=parent) as tb:
                tb.wait_for("/data/plugin/images/tags", lambda j: "xai/featvis/classes_by_epoch" in str(j))
                written += take_featvis(tb, args.out)
        else:
            # the callback's own picture of the last epoch, byte for byte what TensorBoard serves
            grid = read_events(log_dir).Images(f"xai/attr/{METHODS[0]}")[-1].encoded_image_string
            path = os.path.join(args.out, f"attr_{METHODS[0]}_grid.png")
            with open(path, "wb") as f:
                f.write(grid)
            written.append(path)
            with TensorBoardServer(name, cwd=parent) as tb:
                tb.wait_for("/data/plugin/images/tags", lambda j: len(next(iter(j.values()), {})) >= len(METHODS))
                tb.wait_for("/data/plugin/text/tags", lambda j: "xai/gate/report" in next(iter(j.values()), []))
                written += take(tb, log_dir, args.out)
                written += take_featvis(tb, args.out)
        report(written)
    finally:
        if work is not None:
            if temporary:
                shutil.rmtree(work, ignore_errors=True)
            else:
                print(f"logs kept in {logs}")
    return written


if __name__ == "__main__":
    main()
