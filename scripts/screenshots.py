"""Make the documentation's TensorBoard screenshots from a real run of the digits demo.

    python scripts/screenshots.py                 # writes docs/images/*.png (about a minute)
    python scripts/screenshots.py --epochs 4 --out shots --keep-logs

Steps: run ``example_trainers/digits.py`` into a temporary log directory, start a real TensorBoard
server on 127.0.0.1 (a free port), load its dashboards in headless Chromium (Debian's ``chromium``
package) and save a screenshot of each as an optimised PNG (palette-quantised only if it would
exceed 250 KB). The attribution grid the callback logged is also saved as it is in the event file.
Whatever callbacks the demo attaches appear in the screenshots: re-run it when the demo changes.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from PIL import Image  # noqa: E402

from helpers_tb import TensorBoardServer, accumulator, chromium, chromium_path  # noqa: E402

#: screenshot file name -> (TensorBoard page, window size): what the README shows
PAGES: Dict[str, tuple] = {
    "tensorboard_custom_scalars.png": ("custom_scalars", (1400, 1000)),
    "tensorboard_images.png": ("images", (1400, 1000)),
    "tensorboard_text.png": ("text", (1400, 640)),
}
METHODS = ["saliency", "integrated_gradients", "grad_cam"]
MAX_BYTES = 250_000


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


def main(argv: List[str] | None = None) -> List[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "images"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--keep-logs", action="store_true", help="keep (and print) the temporary log directory")
    args = parser.parse_args(argv)
    if chromium_path() is None:
        sys.exit("headless Chromium is needed (Debian: apt-get install chromium)")

    from example_trainers.digits import main as digits_main

    work = tempfile.mkdtemp(prefix="lightning_xai_shots_")
    logs = os.path.join(work, "lightning_logs")  # TensorBoard shows it as "lightning_logs", as for a user
    written: List[str] = []
    try:
        log_dir = digits_main(["--epochs", str(args.epochs), "--logdir", logs, "--methods", *METHODS])
        os.makedirs(args.out, exist_ok=True)
        # the callback's own picture of the last epoch, byte for byte what TensorBoard serves
        grid = accumulator(log_dir).Images(f"xai/attr/{METHODS[0]}")[-1].encoded_image_string
        path = os.path.join(args.out, f"attr_{METHODS[0]}_grid.png")
        with open(path, "wb") as f:
            f.write(grid)
        written.append(path)
        with TensorBoardServer("lightning_logs", cwd=work) as tb:
            tb.wait_for("/data/plugin/images/tags", lambda j: len(next(iter(j.values()), {})) >= len(METHODS))
            with tempfile.TemporaryDirectory() as tmp:
                for name, (page, (w, h)) in PAGES.items():
                    shot = os.path.join(tmp, name)
                    done = chromium(
                        f"{tb.url}/#{page}", os.path.join(tmp, "profile"), f"--screenshot={shot}",
                        "--virtual-time-budget=20000", window=f"{w},{h}",
                    )
                    if done.returncode != 0 or not os.path.exists(shot):
                        raise RuntimeError(f"chromium failed on #{page}: {done.stderr.decode(errors='replace')[-1500:]}")
                    path = os.path.join(args.out, name)
                    with open(shot, "rb") as f, open(path, "wb") as g:
                        g.write(shrink(f.read()))
                    written.append(path)
        for path in written:
            size = os.path.getsize(path)
            print(f"{os.path.relpath(path, ROOT)}: {size // 1024} KB")
            if size > MAX_BYTES:
                print(f"  warning: over {MAX_BYTES // 1000} KB", file=sys.stderr)
    finally:
        if args.keep_logs:
            print(f"logs kept in {logs}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return written


if __name__ == "__main__":
    main()
