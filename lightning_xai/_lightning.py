"""The one place that imports Lightning.

Both distributions are supported: ``pytorch_lightning`` and ``lightning.pytorch``. When both are
installed, lightning_xai's callbacks derive from both packages' ``Callback`` classes, so either
package's ``Trainer`` (and LightningCLI's type checks) accepts them.
"""

from __future__ import annotations

import warnings
from typing import Any, List, Tuple

# Lightning's own pytree helper (``<package>.utilities._pytree``) builds ``LeafSpec()``, which recent
# torch deprecates with a FutureWarning that every run printed once, about Lightning's code rather
# than the user's. Ignore exactly that warning (message, category and the module it is attributed
# to, for both distributions); every other warning is left alone. The filter stays in place: the
# warning is raised during ``fit``, not while Lightning is imported.
warnings.filterwarnings(
    "ignore",
    message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    category=FutureWarning,
    module=r"(pytorch_lightning|lightning\.pytorch)\.utilities\._pytree$",
)

_packages: List[Any] = []
try:  # pragma: no cover - whichever is installed
    import pytorch_lightning as _pl

    _packages.append(_pl)
except ImportError:  # pragma: no cover
    pass
try:  # pragma: no cover
    import lightning.pytorch as _lp

    _packages.append(_lp)
except ImportError:  # pragma: no cover
    pass
if not _packages:  # pragma: no cover
    raise ImportError(
        "lightning_xai.callbacks needs PyTorch Lightning: pip install pytorch-lightning (or lightning). "
        "lightning_xai.functional works without it."
    )

pl = _packages[0]
rank_zero_warn = pl.utilities.rank_zero_warn
rank_zero_info = pl.utilities.rank_zero_info

if len(_packages) == 1:
    Callback = pl.Callback
else:
    # one base that is an instance of both packages' Callback; both define the same no-op hooks
    Callback = type("Callback", tuple(p.Callback for p in _packages), {"__module__": __name__})

#: TensorBoard logger classes of every installed package (for isinstance checks)
TensorBoardLoggers: Tuple[Any, ...] = tuple(p.loggers.TensorBoardLogger for p in _packages)
TensorBoardLogger = TensorBoardLoggers[0]
Trainer = pl.Trainer
LightningModule = pl.LightningModule


def logger_classes(name: str) -> Tuple[type, ...]:
    """The Lightning logger class ``name`` (e.g. ``"MLFlowLogger"``) of every installed package, for
    isinstance checks; empty when no package has it. Lightning imports a tracker's own package (mlflow,
    wandb) only when such a logger is made, so asking costs no import."""
    found = (getattr(getattr(p, "loggers", None), name, None) for p in _packages)
    return tuple(c for c in found if isinstance(c, type))


def lightning_packages() -> List[Any]:
    """The installed Lightning packages (``pytorch_lightning`` first when present)."""
    return list(_packages)


__all__ = [
    "pl", "Callback", "Trainer", "LightningModule", "TensorBoardLogger", "TensorBoardLoggers",
    "rank_zero_warn", "rank_zero_info", "lightning_packages", "logger_classes",
]
