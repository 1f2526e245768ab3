"""Pictures, text, histograms and the gate's report where the user's logger shows them, with the real
trackers: MLflow on a local SQLite store, Weights & Biases offline, and several loggers at once.

Each run is read back with the tracker's own client (MLflow's ``MlflowClient``; for W&B, the offline
run's ``.wandb`` file decoded with wandb's own protobuf records, and the media files it wrote).
Nothing here reaches the network.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import shutil
import struct
import time
import warnings
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import pytest
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from torch.utils.data import DataLoader

from lightning_xai import ProbeSet, checks, sink
from lightning_xai.callbacks import AttributionMonitor, DeadReLUMonitor, SanityGate

from .fixtures import LitClassifier, RecordingLogger, SmallCNN, image_data, layouts_in, read_events, texts_in, trainer


# ================================================================================================ helpers
def _fit(tmp_path: Any, loggers: Any, *, gate: bool = True, dead_relu: bool = False) -> Dict[str, Any]:
    """Two epochs of a tiny CNN (2 steps each) with an AttributionMonitor (saliency), and a SanityGate."""
    ds = image_data(32)
    probe = ProbeSet.from_dataset(ds, n=4)
    monitor = AttributionMonitor(probe, methods=["saliency"])
    callbacks: List[Any] = [monitor]
    if gate:
        callbacks.append(SanityGate(probe, checks=[checks.Finite()]))
    if dead_relu:
        callbacks.append(DeadReLUMonitor(source="validation"))
    tr = trainer(tmp_path, callbacks, logger=loggers, max_epochs=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr.fit(LitClassifier(SmallCNN()), *[DataLoader(ds, batch_size=16)] * 2)
    return {"trainer": tr, "monitor": monitor, "gate": callbacks[1] if gate else None,
            "warnings": [str(w.message) for w in caught]}


def _png_files(root: Any) -> List[str]:
    return sorted(glob.glob(os.path.join(str(root), "**", "xai_images", "**", "*.png"), recursive=True))


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


# ---------------------------------------------------------------------------------------------- MLflow
@pytest.fixture(scope="session")
def _empty_mlflow_store(tmp_path_factory):  # type: ignore[no-untyped-def]
    """An empty SQLite tracking store, made once per test process: creating one runs MLflow's schema
    migrations (about 5 s), copying the file takes milliseconds."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-store") / "empty.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_logger(tmp_path, _empty_mlflow_store):  # type: ignore[no-untyped-def]
    from pytorch_lightning.loggers import MLFlowLogger

    shutil.copyfile(_empty_mlflow_store, tmp_path / "mlflow.db")
    return MLFlowLogger(
        experiment_name="xai", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        artifact_location=str(tmp_path / "mlartifacts"),
    )


def _mlflow_artifacts(logger: Any, path: Any = None) -> List[str]:
    out: List[str] = []
    for item in logger.experiment.list_artifacts(logger.run_id, path):
        out.extend(_mlflow_artifacts(logger, item.path) if item.is_dir else [item.path])
    return out


def _mlflow_images(logger: Any) -> Dict[str, List[Tuple[int, str]]]:
    """``{key: [(step, artifact path of the full-size PNG), ...]}`` of MLflow's step-wise images
    (``images/<key, '/' as '~' or '#'><sep>step<sep><n><sep>timestamp...``, ``sep`` '+' or '%')."""
    found: Dict[str, List[Tuple[int, str]]] = {}
    for path in _mlflow_artifacts(logger, "images"):
        m = re.match(r"images/(.+?)[+%]step[+%](\d+)[+%]timestamp[+%]\d+[+%][0-9a-f-]+\.png$", path)
        if m:
            key = m.group(1).replace("~", "/").replace("#", "/")
            found.setdefault(key, []).append((int(m.group(2)), path))
    return {k: sorted(v) for k, v in found.items()}


def _mlflow_read(logger: Any, path: str) -> bytes:
    import mlflow

    local = mlflow.artifacts.download_artifacts(
        run_id=logger.run_id, artifact_path=path, tracking_uri=logger._tracking_uri,
        dst_path=os.path.join(str(logger._artifact_location), "..", "downloads"),
    )
    with open(local, "rb") as f:
        return f.read()


def test_mlflow_gets_step_wise_images_text_and_the_gate_report(tmp_path, mlflow_logger):
    run = _fit(tmp_path, mlflow_logger)
    client, run_id = mlflow_logger.experiment, mlflow_logger.run_id
    gini_steps = [m.step for m in client.get_metric_history(run_id, "xai/attr/saliency/gini")]
    assert gini_steps == [2, 4]

    # the maps: one image per epoch under the TensorBoard tag, at the scalars' steps, a real picture
    images = _mlflow_images(mlflow_logger)
    assert list(images) == ["xai/attr/saliency"]
    assert [step for step, _ in images["xai/attr/saliency"]] == gini_steps
    picture = _decode(_mlflow_read(mlflow_logger, images["xai/attr/saliency"][-1][1]))
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.shape[0] > 32 and picture.std() > 0

    # the text summaries and the gate's report as run artifacts; the JSON stays on disk as well
    artifacts = _mlflow_artifacts(mlflow_logger)
    for step in gini_steps:
        assert f"xai_text/xai/attr/summary_step{step:06d}.md" in artifacts
        assert f"xai_text/xai/gate/report_step{step:06d}.md" in artifacts
    summary = _mlflow_read(mlflow_logger, "xai_text/xai/attr/summary_step000004.md").decode()
    assert "| saliency |" in summary
    gate = run["gate"]
    assert json.loads(_mlflow_read(mlflow_logger, "xai_gate_report.json")) == gate.report
    assert len(gate.report) == 2
    # a SQLite store has no log directory (trainer.log_dir is None), so MLflow holds the only copy;
    # with a directory the file stays on disk too (see the test with several loggers)
    assert gate.report_path is None

    # MLflow shows pictures: no PNG files, no notice about them
    assert _png_files(tmp_path) == []
    assert not any("written as PNG files" in w for w in run["warnings"])
    assert client.get_run(run_id).data.tags.get("mlflow.loggedImages") in ("True", "true")


# ---------------------------------------------------------------------------------------------- W&B
@pytest.fixture
def wandb_logger(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    wandb = pytest.importorskip("wandb")
    from pytorch_lightning.loggers import WandbLogger

    home = tmp_path / "wandb-home"
    for key, value in {
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off", "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true", "WANDB__DISABLE_STATS": "true", "WANDB_X_DISABLE_STATS": "true",
        "WANDB_DISABLE_META": "true", "WANDB_DIR": str(tmp_path), "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_CONFIG_DIR": str(home / "config"), "WANDB_DATA_DIR": str(home / "data"),
        "WANDB_ARTIFACT_DIR": str(home / "artifacts"),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="lightning-xai-test")
    yield logger
    wandb.finish()


def _wandb_records(path: str) -> Iterator[bytes]:
    """The records of a ``.wandb`` file: wandb writes LevelDB's log format (32 KiB blocks of
    ``crc32, length, type`` headed chunks) after a 7-byte ``:W&B`` header."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B", data[:7]
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        if pos + 7 + length > len(data):  # a record still being written (the writer runs in its own process)
            return
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:  # a whole record
            yield chunk
        elif kind == 2:  # first, middle, last pieces of one record
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def _wandb_history(run_dir: str, timeout: float = 60.0) -> List[Dict[str, Any]]:
    """Every ``log`` call of the finished offline run: ``{key: value}``, nested keys joined by '/'.

    ``wandb.finish()`` can return before wandb's writer process has closed the file, so this waits
    for the run's ``exit`` record (the last one written), reading the file again while a record is half written."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    deadline = time.monotonic() + timeout
    while True:
        rows, finished = [], False
        for raw in _wandb_records(path):
            record = pb.Record()
            try:
                record.ParseFromString(raw)
            except DecodeError:  # read while the writer was still writing it: read the file again
                finished = False
                break
            kind = record.WhichOneof("record_type")
            if kind == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
            finished = finished or kind == "exit"
        if finished or time.monotonic() > deadline:
            assert finished, f"{path} has no exit record after {timeout} s"
            return rows
        time.sleep(0.2)


def test_wandb_offline_gets_images_text_histograms_and_the_report_at_the_scalars_steps(tmp_path, wandb_logger):
    run = _fit(tmp_path, wandb_logger, dead_relu=True)
    run_dir = wandb_logger.experiment.dir  # <save_dir>/wandb/offline-run-.../files
    import wandb

    wandb.finish()  # flushes the run file
    root = os.path.dirname(run_dir)
    history = _wandb_history(root)

    def steps(key: str) -> List[int]:
        return [int(row["trainer/global_step"]) for row in history if key in row]

    gini = steps("xai/attr/saliency/gini")
    assert gini == [2, 4]
    # the maps: W&B images at the same trainer/global_step as the scalars, PNG files W&B wrote
    image_rows = [row for row in history if row.get("xai/attr/saliency/_type") == "images/separated"]
    assert [int(row["trainer/global_step"]) for row in image_rows] == gini
    for row in image_rows:
        (name,) = row["xai/attr/saliency/filenames"]
        with open(os.path.join(run_dir, name), "rb") as f:
            picture = _decode(f.read())
        assert picture.shape == (row["xai/attr/saliency/height"], row["xai/attr/saliency/width"], 3)
        assert picture.std() > 0
    # the text summaries as HTML panels (tables), the histograms, at the same steps
    for tag in ("xai/attr/summary", "xai/gate/report"):
        rows = [row for row in history if row.get(f"{tag}/_type") == "html-file"]
        assert [int(row["trainer/global_step"]) for row in rows] == gini
        with open(os.path.join(run_dir, rows[-1][f"{tag}/path"])) as f:
            assert "<table" in f.read()
    assert steps("xai/dead_relu_onrate/net.conv1/_type") == gini
    # the gate's report among the run's files (uploaded with the run), equal to the file on disk
    gate = run["gate"]
    with open(os.path.join(run_dir, "xai_gate_report.json")) as f:
        assert json.load(f) == gate.report
    with open(gate.report_path) as f:
        assert json.load(f) == gate.report
    assert _png_files(tmp_path) == []


# ---------------------------------------------------------------------------------------------- together
def test_tensorboard_csv_and_mlflow_together_each_get_what_they_show(tmp_path, mlflow_logger):
    tb = TensorBoardLogger(str(tmp_path), name="tb", default_hp_metric=False)
    csv = CSVLogger(str(tmp_path), name="csv")
    run = _fit(tmp_path, [tb, csv, mlflow_logger])
    # TensorBoard: pictures, text and the custom-scalars dashboard (only there)
    events = read_events(tb.log_dir)
    assert [e.step for e in events.Images("xai/attr/saliency")] == [2, 4]
    assert [step for step, _ in texts_in(tb.log_dir, "xai/gate/report")] == [2, 4]
    assert len(layouts_in(tb.log_dir)) == 1
    # MLflow: the same pictures at the same steps, the report
    assert [s for s, _ in _mlflow_images(mlflow_logger)["xai/attr/saliency"]] == [2, 4]
    assert "xai_gate_report.json" in _mlflow_artifacts(mlflow_logger)
    # CSV: the scalars, and PNG files, under the CSV logger's directory only
    with open(os.path.join(csv.log_dir, "metrics.csv")) as f:
        assert "xai/attr/saliency/gini" in f.read()
    assert _png_files(tmp_path) == [
        os.path.join(csv.log_dir, "xai_images", "xai", "attr", f"saliency_step{s:06d}.png") for s in (2, 4)
    ]
    assert sum("written as PNG files" in w for w in run["warnings"]) == 1
    # the gate's report stays on disk where it always was (the first logger's directory), same as MLflow's
    gate = run["gate"]
    assert gate.report_path == os.path.join(tb.log_dir, SanityGate.REPORT_NAME)
    with open(gate.report_path) as f:
        assert json.load(f) == gate.report == json.loads(_mlflow_read(mlflow_logger, "xai_gate_report.json"))


# ================================================================================================ the adapters themselves
class PictureLogger(RecordingLogger):
    """A user's logger that shows pictures and keeps files."""

    def __init__(self) -> None:
        super().__init__()
        self.pictures: List[Tuple[str, int, Tuple[int, ...]]] = []
        self.files: Dict[str, bytes] = {}


class PictureAdapter(sink.LoggerAdapter):
    logger_classes = (PictureLogger,)

    def image(self, tag: str, picture: sink.Picture, step: int) -> bool:
        self.logger.pictures.append((tag, step, picture.array.shape))
        return True

    def file(self, name: str, path: Any, data: Any) -> bool:
        if data is None:
            with open(path, "rb") as f:
                data = f.read()
        self.logger.files[name] = data
        return True


def test_another_logger_is_one_small_adapter(tmp_path, monkeypatch):
    monkeypatch.setattr(sink, "LOGGER_ADAPTERS", [*sink.LOGGER_ADAPTERS, PictureAdapter])
    mine, csv = PictureLogger(), CSVLogger(str(tmp_path), name="csv")
    run = _fit(tmp_path, [mine, csv])
    assert [(tag, step) for tag, step, _ in mine.pictures] == [("xai/attr/saliency", 2), ("xai/attr/saliency", 4)]
    assert json.loads(mine.files[SanityGate.REPORT_NAME]) == run["gate"].report
    assert mine.records["xai/gate/passed"] == [(2, 1.0), (4, 1.0)]  # scalars as for every logger
    assert len(_png_files(tmp_path)) == 2  # PNG files for the CSV logger, which shows no pictures


def test_adapter_is_chosen_by_the_logger_class_and_unknown_loggers_get_none(tmp_path):
    assert isinstance(sink.adapter_for(TensorBoardLogger(str(tmp_path))), sink.TensorBoardAdapter)
    assert sink.adapter_for(CSVLogger(str(tmp_path))) is None
    assert sink.adapter_for(RecordingLogger()) is None
    import lightning.pytorch.loggers as lp_loggers  # the other package's classes are served too

    assert isinstance(sink.adapter_for(lp_loggers.TensorBoardLogger(str(tmp_path))), sink.TensorBoardAdapter)
    assert sink.MLflowAdapter.logger_classes == ("MLFlowLogger",)
    assert sink.WandbAdapter.logger_classes == ("WandbLogger",)


class _Trainer:
    def __init__(self, loggers: List[Logger], rank_zero: bool) -> None:
        self.loggers, self.callback_metrics, self.global_step, self.is_global_zero = loggers, {}, 7, rank_zero
        self.default_root_dir = None


def test_only_rank_zero_hands_out_pictures_text_and_files(monkeypatch):
    monkeypatch.setattr(sink, "LOGGER_ADAPTERS", [PictureAdapter])
    for rank_zero in (False, True):
        mine = PictureLogger()
        s = sink.LogSink(_Trainer([mine], rank_zero))
        s.image("xai/attr/saliency", np.zeros((4, 4, 3), np.uint8))
        assert s.file("report.json", b"{}") == int(rank_zero)
        assert mine.pictures == ([("xai/attr/saliency", 7, (4, 4, 3))] if rank_zero else [])
        assert mine.files == ({"report.json": b"{}"} if rank_zero else {})


def test_file_with_no_logger_that_keeps_files_is_a_no_op(tmp_path):
    s = sink.LogSink(_Trainer([CSVLogger(str(tmp_path))], True))
    assert s.file("xai_gate_report.json", b"[]") == 0
    with pytest.raises(ValueError, match="relative name"):
        s.file("/abs/report.json", b"[]")
