"""Make the README's MLflow screenshot from a real run: the maps as MLflow shows them.

    python scripts/mlflow_screenshot.py                     # writes docs/images/mlflow_images.png
    python scripts/mlflow_screenshot.py --keep runs/mlflow  # ... keeping the run (SQLite store + artifacts),
                                                            # reused when run again (no training)

Steps: train the digits CNN of ``example_trainers/digits.py`` (the whole callback suite) for a few
epochs with an ``MLFlowLogger`` on a local SQLite store, start ``mlflow server`` on 127.0.0.1 (a free
port) over that store, load the run's page in headless Chromium (Debian's ``chromium`` package) and
save the screenshot as an optimised PNG. Needs ``mlflow`` (``pip install -e ".[test]"``); nothing
leaves the machine.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "example_trainers")]

from PIL import Image  # noqa: E402

from tests.fixtures import chromium, chromium_path, free_port  # noqa: E402

METHODS = ["saliency", "integrated_gradients", "grad_cam"]


def train(store: str, epochs: int) -> tuple:
    """Fit the digits CNN with the callback suite into an MLflow run; returns (experiment id, run id)."""
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import MLFlowLogger
    from torch.utils.data import DataLoader

    from digits import DigitsCNN, digits_datasets, suite
    from lightning_xai import ProbeSet

    pl.seed_everything(0, workers=True)
    train_set, val = digits_datasets(0)
    probe = ProbeSet.from_dataset(val, n=16, seed=0)
    logger = MLFlowLogger(
        experiment_name="digits", run_name="digits-cnn", tracking_uri=f"sqlite:///{store}/mlflow.db",
        artifact_location=os.path.join(store, "artifacts"),
    )
    trainer = pl.Trainer(
        max_epochs=epochs, logger=logger, callbacks=suite(probe, METHODS), accelerator="cpu", devices=1,
        deterministic=True, enable_checkpointing=False, log_every_n_steps=10, enable_progress_bar=False,
        default_root_dir=store,
    )
    trainer.fit(DigitsCNN(), DataLoader(train_set, batch_size=64, shuffle=True), DataLoader(val, batch_size=256))
    return logger.experiment_id, logger.run_id


def last_image(store: str, run_id: str, tag: str) -> str:
    """The artifact path of the last step-wise picture MLflow holds for ``tag``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    key = tag.replace("/", "~")
    found = []
    for item in client.list_artifacts(run_id, "images"):
        m = re.match(r"images/(.+?)[+%]step[+%](\d+)[+%].*[0-9a-f]\.png$", item.path)
        if m and m.group(1).replace("#", "~") == key:
            found.append((int(m.group(2)), item.path))
    if not found:
        raise SystemExit(f"no picture logged under {tag!r} in run {run_id}")
    return max(found)[1]


def serve(store: str, host: str, port: int, log: io.TextIOBase) -> subprocess.Popen:
    exe = os.path.join(os.path.dirname(sys.executable), "mlflow")
    proc = subprocess.Popen(
        [exe, "server", "--backend-store-uri", f"sqlite:///{store}/mlflow.db", "--host", host,
         "--port", str(port), "--workers", "1", "--allowed-hosts", f"{host}:{port},{host}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("mlflow server exited; see its log")
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("mlflow server did not answer within 120 s")


def shrink(png: bytes, crop: str = None) -> bytes:  # type: ignore[assignment]
    im = Image.open(io.BytesIO(png)).convert("RGB")
    if crop:
        im = im.crop(tuple(int(v) for v in crop.split(",")))
    out = io.BytesIO()
    im.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(out, format="PNG", optimize=True)
    return out.getvalue()


def main(argv=None) -> str:  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "images", "mlflow_images.png"))
    parser.add_argument("--keep", default=None, help="a folder for the run (reused when it holds one)")
    parser.add_argument(
        "--image", default="xai/attr/integrated_gradients",
        help="the tag whose last picture the run's Artifacts tab shows (an empty string: --page instead)",
    )
    parser.add_argument("--page", default="model-metrics", help="the run page's tab to take without --image")
    parser.add_argument("--window", default="1300,940")
    parser.add_argument(
        "--host", default="127.0.0.2",
        help="a loopback address; MLflow's UI opens its assistant panel over the page on 127.0.0.1 and localhost",
    )
    parser.add_argument("--crop", default=None, help="left,top,right,bottom of the screenshot to keep")
    parser.add_argument("--budget-ms", type=int, default=40_000)
    args = parser.parse_args(argv)
    if chromium_path() is None:
        raise SystemExit("needs Debian's chromium (apt-get install -y chromium)")

    # the artifacts' folder shows in the page: a neutral name, not a random one
    store = os.path.abspath(args.keep or os.path.join(tempfile.gettempdir(), "lightning-xai-mlflow-demo"))
    if not args.keep:
        shutil.rmtree(store, ignore_errors=True)
    os.makedirs(store, exist_ok=True)
    ids_file = os.path.join(store, "ids.txt")
    if os.path.exists(ids_file):
        with open(ids_file) as f:
            experiment_id, run_id = f.read().split()
    else:
        experiment_id, run_id = train(store, args.epochs)
        with open(ids_file, "w") as f:
            f.write(f"{experiment_id} {run_id}\n")
    port = free_port()
    with open(os.path.join(store, "server.log"), "w") as log:
        server = serve(store, args.host, port, log)
        try:
            page = args.page
            if args.image:
                page = "artifacts/" + urllib.parse.quote(last_image(store, run_id, args.image), safe="/~+")
            url = f"http://{args.host}:{port}/#/experiments/{experiment_id}/runs/{run_id}/{page}"
            shot = os.path.join(store, "shot.png")
            with tempfile.TemporaryDirectory() as profile:
                done = chromium(
                    url, profile, f"--screenshot={shot}", f"--virtual-time-budget={args.budget_ms}",
                    window=args.window, timeout=300,
                )
            if not os.path.exists(shot):
                raise RuntimeError(f"chromium wrote no screenshot: {done.stderr.decode()[-2000:]}")
            with open(shot, "rb") as f:
                png = shrink(f.read(), args.crop)
        finally:
            server.terminate()
            server.wait(30)
    with open(args.out, "wb") as f:
        f.write(png)
    print(f"{url}\n-> {args.out} ({len(png) // 1024} KB)")
    if not args.keep:
        shutil.rmtree(store, ignore_errors=True)
    return args.out


if __name__ == "__main__":
    main()
