"""The one place that imports Lightning (``pytorch_lightning``, else ``lightning.pytorch``)."""

from __future__ import annotations

try:  # pragma: no cover - whichever is installed
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger
    from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
except ImportError:  # pragma: no cover
    import lightning.pytorch as pl  # type: ignore[no-redef]
    from lightning.pytorch.loggers import TensorBoardLogger  # type: ignore[no-redef]
    from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn  # type: ignore[no-redef]

Callback = pl.Callback
Trainer = pl.Trainer
LightningModule = pl.LightningModule

__all__ = ["pl", "Callback", "Trainer", "LightningModule", "TensorBoardLogger", "rank_zero_info", "rank_zero_warn"]
