"""Small shared pieces for the TensorBoard-experience tests: a tiny image model, a tiny run, event readers."""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai import ProbeSet

from .ddp_exit import with_exit_cleanup

CLASSES = 4


class TinyCNN(pl.LightningModule):
    """A conv layer, a ReLU and a linear head on (N, 1, 8, 8) images: 4 classes, trains in a blink."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.lr = lr
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x))

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, on_epoch=True, on_step=False)
        self.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def blob_data(n: int = 96, seed: int = 0) -> TensorDataset:
    """8x8 images whose class is the quadrant holding a bright blob (plus noise): learnable in 2 epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES
    x = 0.1 * torch.rand(n, 1, 8, 8, generator=g)
    for i, c in enumerate(y.tolist()):
        r, k = divmod(c, 2)
        x[i, 0, 4 * r + 1 : 4 * r + 3, 4 * k + 1 : 4 * k + 3] += 1.0
    return TensorDataset(x, y)


def tiny_run(
    root: str,
    callbacks_factory: Any = None,
    epochs: int = 2,
    n_probe: int = 8,
    name: str = "run",
    loggers: Optional[Sequence[Any]] = None,
    trainer_kwargs: Optional[Dict[str, Any]] = None,
    **monitor_kwargs: Any,
) -> Dict[str, Any]:
    """Fit TinyCNN for ``epochs`` with an AttributionMonitor (and ``callbacks_factory(probe)``) into ``root``.

    Returns ``{"trainer", "monitor", "log_dir", "probe", "model"}``.
    """
    from lightning_xai.callbacks import AttributionMonitor

    pl.seed_everything(0)
    data = blob_data()
    probe = ProbeSet(data.tensors[0][:n_probe], targets=data.tensors[1][:n_probe])
    monitor_kwargs.setdefault("methods", {"saliency": {}, "integrated_gradients": {"n_steps": 8}})
    monitor = AttributionMonitor(probe, **monitor_kwargs)
    callbacks: List[Any] = [monitor]
    if callbacks_factory is not None:
        callbacks.extend(callbacks_factory(probe))
    logger = TensorBoardLogger(root, name=name, default_hp_metric=False)
    options: Dict[str, Any] = dict(
        max_epochs=epochs,
        logger=[logger, *(loggers or [])],
        callbacks=callbacks,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )
    options.update(trainer_kwargs or {})
    options["callbacks"] = with_exit_cleanup(options["callbacks"], options.get("strategy"))
    trainer = pl.Trainer(**options)
    model = TinyCNN()
    trainer.fit(model, DataLoader(data, batch_size=32), DataLoader(data, batch_size=96))
    return {"trainer": trainer, "monitor": monitor, "log_dir": logger.log_dir, "probe": probe, "model": model}


def accumulator(log_dir: str) -> Any:
    """An EventAccumulator over every event file in ``log_dir`` with nothing sampled away."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def layouts_in(log_dir: str) -> List[Any]:
    """Every custom-scalars ``Layout`` proto written to ``log_dir``, parsed from the event files."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    acc = accumulator(log_dir)
    if "custom_scalars__config__" not in acc.Tags()["tensors"]:
        return []
    out = []
    for event in acc.Tensors("custom_scalars__config__"):
        layout = layout_pb2.Layout()
        layout.ParseFromString(event.tensor_proto.string_val[0])
        out.append(layout)
    return out


def texts_in(log_dir: str, tag: str) -> List[Any]:
    """``[(step, markdown)]`` of a text tag."""
    acc = accumulator(log_dir)
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)]


def event_files(log_dir: str) -> List[str]:
    return sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*")))


# ---------------------------------------------------------------------- a real TensorBoard server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 10.0) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": "*/*"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return resp.read()


class TensorBoardServer:
    """``python -m tensorboard.main`` on 127.0.0.1 at a free port, as a context manager (always stopped)."""

    def __init__(self, logdir: str, wait_s: float = 30.0, cwd: Optional[str] = None) -> None:
        self.logdir = logdir
        self.cwd = cwd
        self.wait_s = wait_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None
        self._log = None

    def __enter__(self) -> "TensorBoardServer":
        self._log = tempfile.TemporaryFile("w+")
        cmd = [
            sys.executable, "-m", "tensorboard.main",
            "--logdir", self.logdir, "--host", "127.0.0.1", "--port", str(self.port),
            "--load_fast", "false", "--reload_interval", "1",
        ]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.cwd)
        try:
            self._wait_until_up()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {self.proc.returncode}: {self.output()}")
            try:
                http_get(self.url + "/data/logdir", timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"tensorboard did not answer on {self.url} within {self.wait_s}s: {self.output()}")

    def wait_for(self, path: str, predicate: Any, wait_s: float = 30.0) -> Any:
        """GET ``path`` (JSON) until ``predicate(json)`` holds (the server loads event files in the background)."""
        import json

        deadline = time.monotonic() + wait_s
        last: Any = None
        while time.monotonic() < deadline:
            last = json.loads(http_get(self.url + path))
            if predicate(last):
                return last
            time.sleep(0.5)
        raise TimeoutError(f"{path} never satisfied the condition within {wait_s}s; last answer: {last!r}"[:2000])

    def json(self, path: str) -> Any:
        import json

        return json.loads(http_get(self.url + path))

    def output(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-2000:]

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> Optional[str]:
    for path in CHROMIUM_CANDIDATES:
        if os.path.exists(path) and os.access(path, os.X_OK):
            return path
    return None


def chromium(
    url: str, user_data_dir: str, *extra: str, window: str = "1400,1000", timeout: float = 60.0
) -> "subprocess.CompletedProcess[bytes]":
    """Run headless Chromium (Debian's package) once on ``url`` with the flags for a sandbox-less machine."""
    exe = chromium_path()
    assert exe is not None
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={user_data_dir}",
        f"--window-size={window}", *extra, url,
    ]
    return subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
