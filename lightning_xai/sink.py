"""The log sink: where everything the callbacks log goes, and the custom-scalars dashboard.

:class:`LogSink` is the one way out for the callbacks: scalars through the Lightning logger API
(every logger, and ``trainer.callback_metrics`` for ``EarlyStopping`` and ``ModelCheckpoint``);
pictures, text, histograms and files to each logger that shows them, through one small adapter per
kind of logger (:data:`LOGGER_ADAPTERS`: TensorBoard, MLflow, Weights & Biases, chosen by isinstance
against Lightning's logger classes, so no tracker package is imported here); pictures as PNG files
under ``<log_dir>/xai_images`` for the loggers that show none (CSV). Rank 0 writes. It knows loggers,
not callbacks.

- :func:`write_layout` writes a layout for TensorBoard's *Custom Scalars* tab that puts the loss and
  accuracy curves and every ``xai/...`` scalar on one page, grouped by category. Charts select their
  curves with regular expressions (matched from the start of the tag), so a chart picks up every
  method, layer or check without being told their names.
- :func:`ensure_layout` is what the callbacks call: it writes the layout once per log directory
  (whichever lightning_xai callback sees the run first), on rank 0, to every TensorBoard logger.
- :func:`log_text` writes a markdown note (shown in TensorBoard's *Text* tab) at the current step,
  under exactly the tag given;
  :func:`markdown_table` formats ``{row: {column: value}}`` as a markdown table for it.

Example:
    >>> import tempfile
    >>> from torch.utils.tensorboard import SummaryWriter
    >>> with tempfile.TemporaryDirectory() as d:
    ...     writer = SummaryWriter(d)
    ...     written = write_layout(writer, categories=["Loss", "Attribution summaries"])
    ...     writer.close()
    >>> [c.title for c in written.category]
    ['Loss', 'Attribution summaries']
    >>> [chart.title for chart in written.category[1].chart]
    ['gini (concentration)', 'entropy', 'top-10% mass']
"""

from __future__ import annotations

import glob
import math
import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Type

import numpy as np

from . import functional as F
from ._lightning import TensorBoardLoggers, logger_classes, rank_zero_warn

__all__ = [
    "LogSink",
    "warn_once",
    "DEFAULT_LAYOUT",
    "CATEGORIES",
    "write_layout",
    "ensure_layout",
    "layout_categories",
    "layout_charts",
    "log_text",
    "markdown_table",
    "tensorboard_writers",
    "LoggerAdapter",
    "LOGGER_ADAPTERS",
    "adapter_for",
    "markdown_html",
]

#: ``{category: {chart title: [tag regex, ...]}}``: TensorBoard's custom-scalars layout, in display order.
#: Regular expressions are matched with Python's ``re.match`` (from the start of the tag) by the server.
DEFAULT_LAYOUT: Dict[str, Dict[str, List[str]]] = {
    "Loss": {
        "loss": [r".*loss.*"],
        "accuracy": [r".*acc.*"],
    },
    "Attribution summaries": {
        "gini (concentration)": [r"xai/attr/.*/gini$"],
        "entropy": [r"xai/attr/.*/entropy$"],
        "top-10% mass": [r"xai/attr/.*/top10_mass$"],
    },
    "Drift": {
        # agreement metrics are 1 when nothing moved, divergences 0: one chart each, so no scale hides the other
        "vs previous epoch: agreement (1 = same)": [r"xai/drift/.*/(spearman|kendall|topk_overlap|ndcg|map_spearman|map_ssim)/prev$"],
        "vs previous epoch: divergence (0 = same)": [r"xai/drift/.*/js_divergence/prev$"],
        "vs reference: agreement (1 = same)": [r"xai/drift/.*/(spearman|kendall|topk_overlap|ndcg|map_spearman|map_ssim)/ref$"],
        "vs reference: divergence (0 = same)": [r"xai/drift/.*/js_divergence/ref$"],
        "global importance": [r"xai/importance/.*"],
    },
    "Dead ReLU": {
        "dead units (fraction)": [r"xai/dead_relu/.*"],
        "dormant units (fraction)": [r"xai/dead_relu_dormant/.*"],
    },
    "Sanity checks": {
        "checks": [r"xai/check/.*"],
        "gate passed (1) / failed (0)": [r"xai/gate/passed"],
    },
}

#: the category names, in order
CATEGORIES = tuple(DEFAULT_LAYOUT)

#: log directory -> the event files there once its layout was written (one layout per run,
#: whichever callback comes first; written again only if those files are gone, e.g. deleted by hand)
_WRITTEN: Dict[str, Set[str]] = {}


def _event_files(log_dir: str) -> Set[str]:
    return set(glob.glob(os.path.join(glob.escape(log_dir), "events.out.tfevents.*")))


def _already_written(log_dir: str) -> bool:
    files = _WRITTEN.get(log_dir)
    return files is not None and any(os.path.exists(f) for f in files)


def _logdir(writer: Any) -> Optional[str]:
    if callable(getattr(writer, "get_logdir", None)):
        return os.path.abspath(str(writer.get_logdir()))
    for attr in ("log_dir", "logdir"):
        if getattr(writer, attr, None):
            return os.path.abspath(str(getattr(writer, attr)))
    return None


def write_layout(
    writer: Any,
    categories: Optional[Iterable[str]] = None,
    extra: Optional[Mapping[str, Mapping[str, Sequence[str]]]] = None,
) -> Any:
    """Write the custom-scalars layout to a ``SummaryWriter`` and return it (a ``Layout`` proto).

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (what ``TensorBoardLogger.experiment`` is)
            or anything with its ``add_custom_scalars``.
        categories: names from :data:`CATEGORIES` to include (default: all), in the order of
            :data:`DEFAULT_LAYOUT`; ``"Loss"`` is always included, first.
        extra: more ``{category: {chart: [tag regex, ...]}}`` appended after the defaults.
    """
    from torch.utils.tensorboard.summary import custom_scalars

    if isinstance(categories, str):
        categories = [categories]
    wanted = set(CATEGORIES if categories is None else categories) | {"Loss"}
    unknown = wanted - set(CATEGORIES)
    if unknown:
        raise ValueError(
            f"unknown dashboard categor{'ies' if len(unknown) > 1 else 'y'} {sorted(unknown)}; "
            f"known: {list(CATEGORIES)} (add your own through extra={{category: {{chart: [regex]}}}})"
        )
    layout: Dict[str, Dict[str, List[Any]]] = {}
    for name, charts in DEFAULT_LAYOUT.items():
        if name in wanted:
            layout[name] = {title: ["Multiline", list(tags)] for title, tags in charts.items()}
    for name, more in (extra or {}).items():
        for title, tags in more.items():
            if isinstance(tags, str):
                tags = [tags]
            for tag in tags:
                try:
                    re.compile(tag)
                except re.error as err:
                    raise ValueError(
                        f"chart {title!r} of {name!r}: {tag!r} is not a valid regular expression ({err})"
                    ) from err
            layout.setdefault(name, {})[title] = ["Multiline", list(tags)]
    writer.add_custom_scalars(layout)
    flush = getattr(writer, "flush", None)
    if callable(flush):
        flush()
    summary = custom_scalars(layout)
    from tensorboard.plugins.custom_scalar import layout_pb2

    proto = layout_pb2.Layout()
    proto.ParseFromString(summary.value[0].tensor.string_val[0])
    return proto


def tensorboard_writers(trainer: Any) -> List[Any]:
    """The ``SummaryWriter`` of every ``TensorBoardLogger`` of ``trainer`` (call on rank 0 only)."""
    return [lg.experiment for lg in getattr(trainer, "loggers", []) if isinstance(lg, TensorBoardLoggers)]


def layout_categories(callbacks: Iterable[Any]) -> Optional[List[str]]:
    """The dashboard categories that the attached callbacks fill, or None (all) if one does not say.

    A lightning_xai callback names its categories in the class attribute ``dashboard_categories``;
    a callback that leaves it empty gets every category (an empty chart is better than a missing one).
    Callbacks without the attribute (not lightning_xai's) are passed over.
    """
    wanted: List[str] = []
    for cb in callbacks:
        if not hasattr(cb, "dashboard_categories"):
            continue
        declared = tuple(getattr(cb, "dashboard_categories", ()) or ())
        if not declared:
            return None
        wanted.extend(c for c in declared if c not in wanted)
    return wanted


def layout_charts(callbacks: Iterable[Any]) -> Dict[str, Dict[str, List[str]]]:
    """``{category: {chart: [tag regex, ...]}}`` for what the attached callbacks log, in category order.

    A callback with a ``dashboard_charts()`` method (every lightning_xai callback) contributes exactly
    the charts it returns, derived from its configuration (methods, metrics, checks, probe), so no
    chart is laid out for tags that will never come. The charts of several callbacks merge: the same
    chart title in the same category shows every callback's tags. A callback whose method returns
    None, or that only has ``dashboard_categories``, gets those categories of :data:`DEFAULT_LAYOUT`
    (all of them when it names none); callbacks with neither are passed over.

    Example:
        >>> class Mine:
        ...     def dashboard_charts(self):
        ...         return {"Sanity checks": {"my check": [r"xai/check/mine(/bound)?$"]}}
        >>> layout_charts([Mine()])
        {'Sanity checks': {'my check': ['xai/check/mine(/bound)?$']}}
    """
    merged: Dict[str, Dict[str, List[str]]] = {}

    def add(charts: Mapping[str, Mapping[str, Sequence[str]]]) -> None:
        for category, cs in charts.items():
            for title, tags in cs.items():
                into = merged.setdefault(category, {}).setdefault(title, [])
                into.extend(t for t in ([tags] if isinstance(tags, str) else tags) if t not in into)

    undeclared = []
    for cb in callbacks:
        method = getattr(cb, "dashboard_charts", None)
        charts = method() if callable(method) else None
        if charts is not None:
            add(charts)
        elif hasattr(cb, "dashboard_categories"):
            undeclared.append(cb)
    if undeclared:
        categories = layout_categories(undeclared)
        for name in CATEGORIES if categories is None else categories:
            add({name: DEFAULT_LAYOUT.get(name, {})})
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return {c: merged[c] for c in sorted(merged, key=lambda c: order.get(c, len(order)))}


def ensure_layout(trainer: Any) -> bool:
    """Write the layout once per log directory, on rank 0, to each TensorBoard logger of ``trainer``.

    Returns whether something was written now. Several callbacks (and ``fit`` followed by
    ``validate``) share one log directory and write it once.
    """
    if not getattr(trainer, "is_global_zero", True):
        return False
    loggers = [lg for lg in getattr(trainer, "loggers", []) if isinstance(lg, TensorBoardLoggers)]
    if not loggers:
        return False
    charts = layout_charts(getattr(trainer, "callbacks", []))
    wrote = False
    for lg in loggers:
        writer = lg.experiment
        key = _logdir(writer)
        if key is None or _already_written(key):
            continue
        write_layout(writer, ["Loss"], extra=charts)
        _WRITTEN[key] = _event_files(key)
        wrote = True
    return wrote


def log_text(trainer: Any, tag: str, markdown: str, step: Optional[int] = None) -> int:
    """Write ``markdown`` under ``tag`` to every logger that shows text (rank 0), at ``trainer.global_step``.

    TensorBoard's *Text* tab renders it (tables included); MLflow gets a markdown artifact, W&B an
    HTML panel. Returns how many loggers got it (0 when none shows text or on other ranks), so the
    caller can warn once.
    """
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"log_text needs a non-empty string tag, got {tag!r}")
    if not getattr(trainer, "is_global_zero", True):
        return 0
    at = trainer.global_step if step is None else int(step)
    adapters = (adapter_for(lg) for lg in getattr(trainer, "loggers", []))
    return sum(bool(a.text(tag, str(markdown), at)) for a in adapters if a is not None)


def _add_text(writer: Any, tag: str, markdown: str, step: int) -> None:
    """A text summary under exactly ``tag`` (``SummaryWriter.add_text`` would append ``/text_summary``)."""
    get_file_writer = getattr(writer, "_get_file_writer", None)
    if callable(get_file_writer):
        try:
            from tensorboard.plugins.text.summary_v2 import text_pb
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            pass
        else:
            get_file_writer().add_summary(text_pb(tag, markdown), step)
            return
    writer.add_text(tag, markdown, global_step=step)  # pragma: no cover - other writers


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        v = float(value)
        if math.isnan(v):
            return "NaN"
        return f"{v:.{digits}g}" if not float(v).is_integer() or abs(v) >= 1e6 else str(int(v))
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    rows: Mapping[str, Mapping[str, Any]], row_header: str = "", digits: int = 4
) -> str:
    """``{row: {column: value}}`` as a markdown table (columns in first-seen order; blanks where absent).

    Example:
        >>> print(markdown_table({"saliency": {"gini": 0.51234, "entropy": 5.1}}, row_header="method"))
        | method | gini | entropy |
        |---|---|---|
        | saliency | 0.5123 | 5.1 |
    """
    columns: List[str] = []
    for values in rows.values():
        columns.extend(c for c in values if c not in columns)
    lines = [
        "| " + " | ".join([_fmt(row_header, digits)] + [_fmt(c, digits) for c in columns]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for name, values in rows.items():
        cells = [_fmt(values[c], digits) if c in values else "" for c in columns]
        lines.append("| " + " | ".join([_fmt(name, digits)] + cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# logger adapters: what each kind of Lightning logger shows besides scalars
# ----------------------------------------------------------------------------------------------
class Picture:
    """An ``H x W x 3`` uint8 picture, PNG-encoded at most once however many loggers take it."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = np.ascontiguousarray(array, dtype=np.uint8)
        self._png: Optional[bytes] = None

    @property
    def png(self) -> bytes:
        if self._png is None:
            self._png = F.png_bytes(self.array)
        return self._png


class LoggerAdapter:
    """What one kind of Lightning logger shows besides scalars (every logger takes those through
    ``log_metrics``): pictures, text, histograms, files. Used on rank 0 only.

    A subclass names the loggers it serves in ``logger_classes`` (a Lightning logger's class name,
    looked up in every installed Lightning package so that the tracker's own package is never
    imported here, or a class) and overrides what its logger can show; each method returns whether
    the logger took it. Adding a logger is one subclass put in :data:`LOGGER_ADAPTERS`.
    """

    #: the loggers this adapter serves: Lightning class names (e.g. ``("MLFlowLogger",)``) or classes
    logger_classes: Tuple[Any, ...] = ()

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    @classmethod
    def serves(cls, logger: Any) -> bool:
        for c in cls.logger_classes:
            if isinstance(logger, logger_classes(c) if isinstance(c, str) else c):
                return True
        return False

    def image(self, tag: str, picture: Picture, step: int) -> bool:
        return False

    def text(self, tag: str, markdown: str, step: int) -> bool:
        return False

    def histogram(self, tag: str, values: np.ndarray, step: int) -> bool:
        return False

    def file(self, name: str, path: Optional[str], data: Optional[bytes]) -> bool:
        return False


class TensorBoardAdapter(LoggerAdapter):
    """Images, text (the *Text* tab, markdown tables rendered) and histograms; files stay on disk."""

    logger_classes = TensorBoardLoggers

    def image(self, tag: str, picture: Picture, step: int) -> bool:
        writer = self.logger.experiment
        get_writer = getattr(writer, "_get_file_writer", None)
        summary = _image_summary(tag, picture) if get_writer is not None else None
        if summary is None or get_writer is None:
            writer.add_image(tag, picture.array, global_step=step, dataformats="HWC")
        else:
            get_writer().add_summary(summary, step)
        return True

    def text(self, tag: str, markdown: str, step: int) -> bool:
        _add_text(self.logger.experiment, tag, markdown, step)
        return True

    def histogram(self, tag: str, values: np.ndarray, step: int) -> bool:
        self.logger.experiment.add_histogram(tag, values, global_step=step)
        return True


class MLflowAdapter(LoggerAdapter):
    """Step-wise images under the tag (``MlflowClient.log_image(key=, step=)``, MLflow >= 2.12; older
    versions get ``images/<tag>_step<step>.png`` artifacts), text as markdown artifacts under
    ``xai_text/``, files as run artifacts. MLflow has no histograms."""

    logger_classes = ("MLFlowLogger",)

    def _client_run(self) -> Tuple[Any, str]:
        client = self.logger.experiment  # starts the run if needed, so run_id is known after it
        return client, self.logger.run_id

    def image(self, tag: str, picture: Picture, step: int) -> bool:
        client, run_id = self._client_run()
        key = re.sub(r"[^a-zA-Z0-9_\-./ ]+", "_", tag)  # what MLflow accepts in an image key
        try:
            client.log_image(run_id, picture.array, key=key, step=step)
        except TypeError:  # MLflow < 2.12: no step-wise images
            client.log_image(run_id, picture.array, artifact_file=f"images/{key}_step{step:06d}.png")
        return True

    def text(self, tag: str, markdown: str, step: int) -> bool:
        client, run_id = self._client_run()
        client.log_text(run_id, markdown, artifact_file=f"xai_text/{tag}_step{step:06d}.md")
        return True

    def file(self, name: str, path: Optional[str], data: Optional[bytes]) -> bool:
        client, run_id = self._client_run()
        folder = os.path.dirname(name) or None
        if path is not None and os.path.basename(path) == os.path.basename(name):
            client.log_artifact(run_id, path, artifact_path=folder)
            return True
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, os.path.basename(name))
            if data is None:
                assert path is not None
                with open(path, "rb") as f:
                    data = f.read()
            with open(local, "wb") as f:
                f.write(data)
            client.log_artifact(run_id, local, artifact_path=folder)
        return True


class WandbAdapter(LoggerAdapter):
    """Images (``WandbLogger.log_image``), text as an HTML panel and histograms, each at the scalars'
    step (``trainer/global_step``); files into the run's files (uploaded with the run)."""

    logger_classes = ("WandbLogger",)

    def image(self, tag: str, picture: Picture, step: int) -> bool:
        self.logger.log_image(key=tag, images=[picture.array], step=step)
        return True

    def text(self, tag: str, markdown: str, step: int) -> bool:
        import wandb

        self.logger.log_metrics({tag: wandb.Html(markdown_html(markdown))}, step=step)
        return True

    def histogram(self, tag: str, values: np.ndarray, step: int) -> bool:
        import wandb

        self.logger.log_metrics({tag: wandb.Histogram(np.asarray(values, dtype=np.float64).tolist())}, step=step)
        return True

    def file(self, name: str, path: Optional[str], data: Optional[bytes]) -> bool:
        run = self.logger.experiment
        files_dir = getattr(run, "dir", None)
        if not files_dir:
            return False
        target = os.path.join(files_dir, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if data is None:
            assert path is not None
            with open(path, "rb") as f:
                data = f.read()
        tmp = target + ".tmp"
        with open(tmp, "wb") as f:  # a copy, not a link: the caller may replace its file later
            f.write(data)
        os.replace(tmp, target)
        run.save(target, base_path=files_dir, policy="now")
        return True


#: the adapters, tried in order; a logger none of them serves shows scalars only (pictures go to PNG files)
LOGGER_ADAPTERS: List[Type[LoggerAdapter]] = [TensorBoardAdapter, MLflowAdapter, WandbAdapter]


def adapter_for(logger: Any) -> Optional[LoggerAdapter]:
    """The adapter of ``logger`` from :data:`LOGGER_ADAPTERS`, or None (a logger of scalars only)."""
    for cls in LOGGER_ADAPTERS:
        if cls.serves(logger):
            return cls(logger)
    return None


def markdown_html(markdown: str) -> str:
    """The markdown the callbacks write (paragraphs, ``**bold**``, pipe tables) as HTML, for trackers
    that show HTML rather than markdown.

    Example:
        >>> print(markdown_html("**passed**\\n\\n| check | value |\\n|---|---|\\n| finite | 1 |"))
        <p><b>passed</b></p>
        <table border="1"><tr><th>check</th><th>value</th></tr>
        <tr><td>finite</td><td>1</td></tr></table>
    """
    import html

    def inline(text: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text.replace("\\|", "|")))

    def cells(line: str) -> List[str]:
        return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]

    blocks = []
    for block in re.split(r"\n\s*\n", markdown.strip()):
        lines = block.splitlines()
        if len(lines) >= 2 and lines[0].lstrip().startswith("|") and set(lines[1].strip()) <= set("|-: "):
            head = "".join(f"<th>{inline(c)}</th>" for c in cells(lines[0]))
            body = ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in cells(r)) + "</tr>" for r in lines[2:]]
            blocks.append('<table border="1"><tr>' + head + "</tr>\n" + "\n".join(body) + "</table>")
        else:
            blocks.append("<p>" + "<br>".join(inline(line) for line in lines) + "</p>")
    return "\n".join(blocks)


# ----------------------------------------------------------------------------------------------
# the sink
# ----------------------------------------------------------------------------------------------
def warn_once(warned: Set[str], key: str, message: str) -> None:
    """Warn (rank zero) unless ``key`` is in ``warned``, the set of warnings already given; then record it."""
    if key not in warned:
        warned.add(key)
        rank_zero_warn(message)


class LogSink:
    """Everything a callback logs, for one trainer: scalars, pictures, text, histograms, files.

    Scalars go to every logger (and ``trainer.callback_metrics``); the rest goes, on rank 0, to each
    logger that shows it, through its adapter (:data:`LOGGER_ADAPTERS`: TensorBoard, MLflow, W&B);
    pictures are written as PNG files for the loggers that show none (CSV).
    ``owner`` names the callback in warnings; ``warned`` is the set of warnings already given (kept by
    the callback, so each is given once per callback); ``prefix`` goes in front of every tag (the
    callbacks use ``"validate/"`` and ``"test/"`` outside ``fit``).

    Example:
        >>> class Trainer:  # what LogSink reads of a trainer
        ...     loggers, callback_metrics, global_step, is_global_zero = [], {}, 3, True
        >>> trainer = Trainer()
        >>> LogSink(trainer).scalars({"xai/attr/saliency/gini": 0.25})
        >>> float(trainer.callback_metrics["xai/attr/saliency/gini"])
        0.25
    """

    def __init__(
        self, trainer: Any, owner: str = "lightning_xai", warned: Optional[Set[str]] = None, prefix: str = ""
    ) -> None:
        self.trainer = trainer
        self.owner = owner
        self.warned: Set[str] = set() if warned is None else warned
        self.prefix = prefix

    @property
    def step(self) -> int:
        return int(self.trainer.global_step)

    def warn_once(self, key: str, message: str) -> None:
        warn_once(self.warned, key, message)

    def scalars(self, metrics: Mapping[str, float]) -> None:
        """To every logger and to ``trainer.callback_metrics`` (for EarlyStopping & co), every rank."""
        if not metrics:
            return
        import torch

        values = {self.prefix + k: float(v) for k, v in metrics.items()}
        for k, v in values.items():
            self.trainer.callback_metrics[k] = torch.tensor(v)
        for logger in getattr(self.trainer, "loggers", []):
            logger.log_metrics(values, step=self.step)

    def _adapters(self) -> List[Tuple[Any, Optional[LoggerAdapter]]]:
        return [(lg, adapter_for(lg)) for lg in getattr(self.trainer, "loggers", [])]

    def tensorboards(self) -> List[Any]:
        return tensorboard_writers(self.trainer)

    def image(self, tag: str, image: np.ndarray) -> None:
        """An HxWx3 uint8 picture to every logger that shows pictures, at the scalars' step, and as a
        PNG file for the loggers that show none (rank 0); one warning when it can go nowhere."""
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        tag = self.prefix + tag
        if not getattr(trainer, "loggers", None):
            return  # logger=False: the user asked for no logging at all
        picture = Picture(image)
        shown, plain = False, []
        for logger, adapter in self._adapters():
            if adapter is not None and adapter.image(tag, picture, self.step):
                shown = True
            else:
                plain.append(logger)
        if shown and not plain:
            return
        root = png_dir(trainer, plain)
        if root is None:
            self.warn_once(
                "no-tensorboard",
                f"{self.owner}: no logger that shows pictures and no log directory, so images such as "
                f"{tag!r} are skipped (scalars still go to your loggers). Add a TensorBoardLogger to see them.",
            )
            return
        parts = tag.split("/")
        path = os.path.join(root, *parts[:-1], f"{parts[-1]}_step{self.step:06d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(F.png_bytes(picture.array, level=6))  # files on disk: smaller rather than faster
        if shown:
            self.warn_once(
                "png-images",
                f"{self.owner}: images such as {tag!r} are written as PNG files under {root} for the "
                "loggers that take no images.",
            )
        else:
            self.warn_once("no-tensorboard", self._no_tensorboard(root))

    def _no_tensorboard(self, png_root: Optional[str]) -> str:
        where = f"pictures are written as PNG files under {png_root}; " if png_root else ""
        return (
            f"{self.owner}: no TensorBoardLogger attached (nor another logger that shows pictures and text, such as "
            f"MLFlowLogger or WandbLogger): {where}text summaries and histograms are not logged (scalars still "
            "go to your loggers). Add pytorch_lightning.loggers.TensorBoardLogger to see them all."
        )

    def text(self, tag: str, markdown: str) -> int:
        """Markdown to every logger that shows text (rank 0); one warning when none does.
        Returns how many loggers took it."""
        trainer = self.trainer
        if not trainer.is_global_zero or not getattr(trainer, "loggers", None):
            return 0
        taken = log_text(trainer, self.prefix + tag, markdown, self.step)
        if taken == 0:
            plain = [lg for lg, adapter in self._adapters() if adapter is None]
            self.warn_once("no-tensorboard", self._no_tensorboard(png_dir(trainer, plain)))
        return taken

    def histogram(self, tag: str, values: np.ndarray) -> int:
        """A histogram to every logger that shows histograms (rank 0); returns how many took it."""
        if not self.trainer.is_global_zero:
            return 0
        return sum(
            bool(a.histogram(self.prefix + tag, values, self.step)) for _, a in self._adapters() if a is not None
        )

    def file(self, name: str, path_or_bytes: Any) -> int:
        """A file (a path on disk, or its bytes) as a run artifact named ``name`` to every logger that
        keeps files (MLflow, W&B), rank 0; the file on disk is left where it is. Returns how many took it.
        Logging it again replaces it."""
        if not isinstance(name, str) or not name or os.path.isabs(name):
            raise ValueError(f"file needs a relative name, got {name!r}")
        if not self.trainer.is_global_zero:
            return 0
        path: Optional[str] = None
        data: Optional[bytes] = None
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            data = bytes(path_or_bytes)
        else:
            path = os.fspath(path_or_bytes)
        return sum(bool(a.file(name, path, data)) for _, a in self._adapters() if a is not None)

    def layout(self) -> bool:
        """The custom-scalars dashboard, once per log directory, to the TensorBoard loggers (:func:`ensure_layout`)."""
        return ensure_layout(self.trainer)


def png_dir(trainer: Any, loggers: Sequence[Any]) -> Optional[str]:
    """Where PNG images go for loggers that take none: ``<log_dir>/xai_images`` (None when unknown)."""
    for lg in loggers:
        d = getattr(lg, "log_dir", None)
        if isinstance(d, str) and d:
            return os.path.join(d, "xai_images")
    d = getattr(trainer, "log_dir", None) or getattr(trainer, "default_root_dir", None)
    return os.path.join(d, "xai_images") if d else None


def _image_summary(tag: str, picture: Picture) -> Any:
    """A TensorBoard image summary of a picture, PNG-encoded once, for speed.

    ``SummaryWriter.add_image`` converts to float and back, resamples the image to its own size and
    PNG-encodes at the default (slow) zlib level; the picture is the same, encoded 6-8x faster here
    (:func:`~lightning_xai.functional.png_bytes`). Returns None when TensorBoard's protobuf is
    unavailable (then ``add_image`` is used).
    """
    try:
        from tensorboard.compat.proto.summary_pb2 import Summary
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return None
    height, width, channels = picture.array.shape
    encoded = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=picture.png)
    return Summary(value=[Summary.Value(tag=tag, image=encoded)])
