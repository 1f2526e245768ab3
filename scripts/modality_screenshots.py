"""Screenshots of the text and sequence demos in TensorBoard, taken in a real browser.

    .venv/bin/python scripts/modality_screenshots.py                  # writes the two PNGs below (about a minute)
    .venv/bin/python scripts/modality_screenshots.py --out shots --keep-logs

Steps: run ``example_trainers/text.py`` (the shortcut run, which the gate stops after epoch 2) and
``example_trainers/sequence.py`` into one temporary ``lightning_logs`` directory, start a real
TensorBoard server on it (127.0.0.1, a free port), load its Images tab filtered to each demo's
pictures in headless Chromium (Debian's ``chromium`` package) at a device pixel ratio of 1.25-1.5,
so that the cards, which TensorBoard scales to a fixed width, show the pictures about at the size
they were logged, and keep the pane of the tags that match the filter (TensorBoard repeats the same cards
below it, in their category, where they are cut off) as an optimised PNG in ``docs/images``:

- ``tensorboard_text_demo.png``: the probe sentences of the last epoch, each token on a background
  coloured by its integrated gradients towards the predicted class; ``zzz`` stands out in dark red;
- ``tensorboard_sequence.png``: Grad-CAM and saliency as heat strips under the probe signals, and
  the drift trajectory (each channel-and-step feature's share of the saliency, epoch by epoch).

Each page is checked before it is kept (the pane is there and its pictures are drawn: the maps'
colours cover a share of it that a page still loading does not have) and taken again with a longer
wait if not: TensorBoard loads its data asynchronously.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import sys
import tempfile
import warnings
from typing import Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import quote

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "example_trainers"), os.path.join(ROOT, "scripts")]

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from screenshots import report, screenshot, shrink  # noqa: E402
from tests.fixtures import TensorBoardServer, chromium_path  # noqa: E402

class Page(NamedTuple):
    """One screenshot: the demo whose run it shows, the Images tab's tag filter (a regular expression),
    the window in CSS pixels (wide enough for the cards in one row, tall enough for the pane), the
    device pixel ratio, and the share of the pane the maps' colours cover at least once drawn."""

    demo: str
    tags: str
    window: Tuple[int, int]
    scale: float
    min_colour: float


PAGES: Dict[str, Page] = {
    # one card: 8 sentences; the coloured tokens and the colour bar cover about 2% of the pane
    "tensorboard_text_demo.png": Page("text", r"xai/attr/integrated_gradients", (1100, 640), 1.5, 0.005),
    # three cards: Grad-CAM and saliency strips under the signals, the drift trajectory (about 15%)
    "tensorboard_sequence.png": Page(
        "sequence", r"xai/(attr/(grad_cam|saliency)|drift/saliency/trajectory)", (1560, 1150), 1.25, 0.05
    ),
}


def run_demos(logs: str) -> Dict[str, str]:
    """Run both demos into ``logs``; ``{demo: its run's log directory}``."""
    import sequence
    import text

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and log intervals
        runs = {
            "text": str(text.main(["--logdir", logs])["log_dir"]),
            "sequence": str(sequence.main(["--logdir", logs])["log_dir"]),
        }
    return runs


def first_pane(png: bytes) -> Optional[Tuple[int, int]]:
    """``(top, bottom)`` of the first pane of the Images tab (the tags matching the filter), or None.

    Read down a column just inside the pane's right edge: below the filter box, the pane is a white
    run (its header, "Tags matching ...") then, after a one-pixel rule, a long white run (its cards).
    """
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    column = (rgb[:, rgb.shape[1] - 30] == 255).all(axis=1)
    runs: List[Tuple[int, int]] = []
    start: Optional[int] = None
    for y, white in enumerate(column.tolist() + [False]):
        if white and start is None:
            start = y
        elif not white and start is not None:
            if y - start >= 20:
                runs.append((start, y - 1))
            start = None
    if len(runs) < 2 or runs[1][0] - runs[0][1] > 4 or runs[1][1] - runs[1][0] < 200:
        return None
    if runs[1][1] >= len(column) - 1:  # the pane goes on below the window: the window is too short
        return None
    return runs[0][0], runs[1][1]


def colour_share(png: bytes, box: Tuple[int, int, int, int]) -> float:
    """The share of ``box`` (left, top, right, bottom) in saturated colours other than TensorBoard's orange
    (the run badges and step sliders): the maps, the coloured tokens and the colour bars."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB").crop(box), dtype=np.int16)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    orange = (r >= 200) & (g >= 80) & (g <= 190) & (b <= 130)
    return float(((rgb.max(axis=-1) - rgb.min(axis=-1) > 60) & ~orange).mean())


def drawn(png: bytes, min_colour: float) -> bool:
    """The first pane is there and its pictures are drawn (not a page still loading)."""
    pane = first_pane(png)
    if pane is None:
        return False
    width = Image.open(io.BytesIO(png)).size[0]
    return colour_share(png, (width // 4, pane[0], width, pane[1])) >= min_colour


def keep_first_pane(png: bytes, margin: int = 12) -> bytes:
    """The page down to the first pane's bottom (and ``margin`` rows of the background below it)."""
    pane = first_pane(png)
    assert pane is not None
    im = Image.open(io.BytesIO(png))
    buf = io.BytesIO()
    im.crop((0, 0, im.size[0], min(im.size[1], pane[1] + 1 + margin))).save(buf, format="PNG")
    return buf.getvalue()


def take(tb: TensorBoardServer, out_dir: str) -> List[str]:
    """Every page of ``PAGES`` from ``tb`` into ``out_dir``; the paths written."""
    written: List[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, page in PAGES.items():
            png = screenshot(
                f"{tb.url}/#images&tagFilter={quote(page.tags, safe='')}", page.window, tmp,
                lambda png, page=page: drawn(png, page.min_colour), f"the {page.demo} demo", scale=page.scale,
            )
            path = os.path.join(out_dir, name)
            with open(path, "wb") as f:
                f.write(shrink(keep_first_pane(png)))
            written.append(path)
    return written


def main(argv: Optional[List[str]] = None) -> List[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "images"))
    parser.add_argument("--keep-logs", action="store_true", help="keep (and print) the temporary log directory")
    args = parser.parse_args(argv)
    if chromium_path() is None:
        sys.exit("headless Chromium is needed (Debian: apt-get install chromium)")

    work = tempfile.mkdtemp(prefix="lightning_xai_modalities_")
    logs = os.path.join(work, "lightning_logs")  # TensorBoard shows it as "lightning_logs", as for a user
    try:
        run_demos(logs)
        os.makedirs(args.out, exist_ok=True)
        wanted = [page.tags for page in PAGES.values()]
        with TensorBoardServer("lightning_logs", cwd=work) as tb:
            # the server reads the event files in the background: wait until both runs' pictures are listed
            tb.wait_for(
                "/data/plugin/images/tags",
                lambda j: all(any(re.fullmatch(t, tag) for run in j.values() for tag in run) for t in wanted),
            )
            written = take(tb, args.out)
        report(written)
    finally:
        if args.keep_logs:
            print(f"logs kept in {logs}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return written


if __name__ == "__main__":
    main()
