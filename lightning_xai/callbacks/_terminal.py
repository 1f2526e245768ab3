"""What the callbacks print to the terminal: one line per validation epoch, one at the end of ``fit``.

Only when the trainer shows a progress bar (``trainer.progress_bar_callback`` enabled), and on rank 0:
a run with ``enable_progress_bar=False`` is as quiet as before. Epoch lines go through the progress
bar's own ``print`` (``tqdm.write`` for the TQDM bar, the console for Rich), so the bar is redrawn
below them instead of being broken.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import sys
from typing import Any, List, Optional, Sequence

__all__ = ["tensorboard_command", "shows_progress", "progress_print", "fit_end_line", "result_text"]


def tensorboard_command(logdir: str) -> str:
    """The command that shows ``logdir`` in TensorBoard, runnable as printed from the current directory.

    TensorBoard is the one installed next to this Python (in ``.venv/bin`` for the demo): plain
    ``tensorboard`` when that is the one on ``PATH`` (an activated environment), else its path,
    relative when it lies under the current directory; ``python -m tensorboard.main`` if it has no
    script there. ``logdir`` is quoted for the shell.

    Example:
        >>> tensorboard_command("lightning_logs").endswith("--logdir lightning_logs")
        True
    """
    bindir = os.path.dirname(sys.executable)  # not resolved: a venv's python is a link to the base one
    for name in ("tensorboard", "tensorboard.exe"):
        exe = os.path.join(bindir, name)
        if os.path.isfile(exe):
            break
    else:
        return f"{shlex.quote(sys.executable)} -m tensorboard.main --logdir {shlex.quote(logdir)}"
    on_path = shutil.which("tensorboard")
    if on_path and os.path.exists(on_path) and os.path.samefile(on_path, exe):
        shown = "tensorboard"
    else:
        shown = display_path(exe)
        if os.sep not in shown:
            shown = os.path.join(os.curdir, shown)
    return f"{shlex.quote(shown)} --logdir {shlex.quote(logdir)}"


def display_path(path: str) -> str:
    """``path`` relative to the current directory when it lies under it, else absolute."""
    full = os.path.abspath(path)
    try:
        rel = os.path.relpath(full)
    except ValueError:  # pragma: no cover - another drive (Windows)
        return full
    return full if rel.startswith(os.pardir) else rel


def shows_progress(trainer: Any) -> bool:
    """Whether this process prints: rank 0, with an enabled progress bar."""
    bar = getattr(trainer, "progress_bar_callback", None)
    return bar is not None and bool(getattr(bar, "is_enabled", False)) and bool(getattr(trainer, "is_global_zero", True))


def progress_print(trainer: Any, line: str) -> bool:
    """Print ``line`` through the progress bar's own writer (rank 0, bar enabled); whether it did."""
    if not shows_progress(trainer):
        return False
    trainer.progress_bar_callback.print(line)
    return True


def result_text(name: str, value: float, bound: Optional[float], direction: Optional[str], reason: str) -> str:
    """A failed check in a few words: ``name = 0.31 < min 0.5``; its reason when it has no bound.

    Example:
        >>> result_text("relevance_mass/saliency", 0.3141, 0.5, "min", "...")
        'relevance_mass/saliency = 0.3141 < min 0.5'
        >>> result_text("finite", float("nan"), None, None, "finite: 3 NaN values in saliency")
        'finite: 3 NaN values in saliency'
    """
    if bound is None or direction not in ("min", "max") or math.isnan(value):
        return reason
    op = "<" if direction == "min" else ">"
    return f"{name} = {value:.4g} {op} {direction} {bound:.4g}"


def fit_end_line(report_paths: Sequence[str], logdirs: Sequence[str]) -> Optional[str]:
    """The line that ends ``fit``: where the gate's report is and how to open the run in TensorBoard.

    Example:
        >>> fit_end_line(["runs/version_0/xai_gate_report.json"], ["runs/version_0"]).split(";")[0]
        'xai: gate report runs/version_0/xai_gate_report.json'
        >>> fit_end_line([], []) is None
        True
    """
    parts: List[str] = []
    if report_paths:
        parts.append(f"gate report {', '.join(display_path(p) for p in report_paths)}")
    if logdirs:
        parts.append("view the run: " + "; ".join(tensorboard_command(display_path(d)) for d in logdirs))
    return "xai: " + "; ".join(parts) if parts else None
