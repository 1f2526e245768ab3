"""Screenshots of SHAP at training time in TensorBoard: a tabular run and an image run.

    python scripts/shap_screenshots.py            # writes docs/images/tensorboard_shap_*.png (a few minutes)

Steps: train the tabular example's MLP (breast cancer, 30 features) and the digits CNN for a few
epochs with ``AttributionMonitor(methods={"kernel_shap": ...})``, start a real TensorBoard server on
each run (127.0.0.1, a free port), load its Images tab filtered to ``xai/attr/kernel_shap`` in
headless Chromium (Debian's ``chromium`` package) and save the screenshot:

- ``tensorboard_shap_tabular.png``: mean |SHAP| per feature as bars;
- ``tensorboard_shap_digits.png``: the probe digits over their superpixel SHAP maps (4 x 4 grid).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "example_trainers")]

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from pytorch_lightning.loggers import TensorBoardLogger  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from lightning_xai import ProbeSet  # noqa: E402
from lightning_xai.callbacks import AttributionMonitor  # noqa: E402
from tests.fixtures import TensorBoardServer, chromium, chromium_path  # noqa: E402

TAG = "xai/attr/kernel_shap"


def _fit(module: pl.LightningModule, train, val, probe: ProbeSet, options: dict, logs: str, name: str, epochs: int) -> str:  # type: ignore[no-untyped-def]
    logger = TensorBoardLogger(logs, name=name)
    trainer = pl.Trainer(
        max_epochs=epochs, logger=logger, callbacks=[AttributionMonitor(probe, methods={"kernel_shap": options})],
        accelerator="cpu", devices=1, deterministic=True, enable_checkpointing=False, log_every_n_steps=5,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(train, batch_size=32, shuffle=True), DataLoader(val, batch_size=256))
    return str(logger.log_dir)


def tabular_run(logs: str, epochs: int) -> str:
    from tabular import TabularMLP, breast_cancer_datasets

    pl.seed_everything(0, workers=True)
    train, val, names = breast_cancer_datasets(0)
    probe = ProbeSet.from_dataset(val, n=32, seed=0, feature_names=names)
    return _fit(TabularMLP(len(names)), train, val, probe, {"n_samples": 200}, logs, "tabular_shap", epochs)


def digits_run(logs: str, epochs: int) -> str:
    from digits import DigitsCNN, digits_datasets

    pl.seed_everything(0, workers=True)
    train, val = digits_datasets(0)
    probe = ProbeSet.from_dataset(val, n=8, seed=0)
    return _fit(DigitsCNN(), train, val, probe, {"grid": 4, "n_samples": 200}, logs, "digits_shap", epochs)


def has_content(png: bytes, min_dark: float = 0.02) -> bool:
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return float((rgb.min(axis=2) < 200).mean()) >= min_dark


def shoot(log_dir: str, out: str, window: str) -> None:
    parent, name = os.path.split(log_dir.rstrip(os.sep))
    with TensorBoardServer(name, cwd=parent) as tb, tempfile.TemporaryDirectory() as tmp:
        tb.wait_for("/data/plugin/images/tags", lambda j: any(TAG in v for v in j.values()))
        shot = os.path.join(tmp, "shot.png")
        for budget in (20_000, 40_000, 80_000):
            if os.path.exists(shot):
                os.remove(shot)
            chromium(f"{tb.url}/#images&tagFilter={TAG.replace('/', '%2F')}", os.path.join(tmp, "profile"),
                     f"--screenshot={shot}", f"--virtual-time-budget={budget}", window=window,
                     timeout=120 + budget / 1000)
            if os.path.exists(shot):
                with open(shot, "rb") as f:
                    png = f.read()
                if has_content(png):
                    im = Image.open(io.BytesIO(png)).convert("RGB")
                    im.save(out, format="PNG", optimize=True)
                    print(f"{os.path.relpath(out, ROOT)}: {os.path.getsize(out) // 1024} KB")
                    return
        raise RuntimeError(f"no usable screenshot of {log_dir}")


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "images"))
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    if chromium_path() is None:
        sys.exit("headless Chromium is needed (Debian: apt-get install chromium)")
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lightning_xai_shap_") as logs:
        shoot(tabular_run(logs, args.epochs), os.path.join(args.out, "tensorboard_shap_tabular.png"), "1200,900")
        shoot(digits_run(logs, args.epochs), os.path.join(args.out, "tensorboard_shap_digits.png"), "1200,1000")


if __name__ == "__main__":
    main()
