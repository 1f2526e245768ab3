"""Importing lightning_xai silences exactly Lightning's pytree FutureWarning, and nothing else.

Recent torch deprecates ``torch.utils._pytree.LeafSpec`` with a FutureWarning that Lightning's own
pytree helper triggers during every ``fit``. The checks run in fresh interpreters with
``-W error::FutureWarning``, because pytest restores its own warning filters around every test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

TRIGGER = textwrap.dedent(
    """
    import torch
    from pytorch_lightning.utilities._pytree import _tree_flatten
    _tree_flatten(torch.tensor(1.0))   # Lightning's helper builds LeafSpec()
    """
)


def _run(code: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", "-c", code], capture_output=True, text=True, timeout=300,
        cwd=cwd,
    )


def test_lightning_pytree_future_warning_is_silenced():
    bare = _run(TRIGGER)
    if "LeafSpec" not in bare.stderr:
        pytest.skip("this torch/Lightning pair does not raise the pytree FutureWarning")
    assert bare.returncode != 0  # the control: without lightning_xai, the warning is an error here
    quiet = _run("import lightning_xai, lightning_xai.callbacks\n" + TRIGGER)
    assert quiet.returncode == 0, quiet.stderr


def test_a_short_fit_emits_no_future_warning(tmp_path):
    code = textwrap.dedent(
        """
        import torch, pytorch_lightning as pl
        from torch.utils.data import DataLoader, TensorDataset
        from lightning_xai import ProbeSet
        from lightning_xai.callbacks import AttributionMonitor

        class Net(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
            def forward(self, x):
                return self.net(x)
            def training_step(self, batch, i):
                return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])
            def validation_step(self, batch, i):
                self.log("val_loss", torch.nn.functional.cross_entropy(self(batch[0]), batch[1]))
            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.rand(8, 1, 4, 4, generator=g), torch.arange(8) % 3)
        trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
                             callbacks=[AttributionMonitor(ProbeSet.from_dataset(data, n=4), methods=["saliency"],
                                                           log_images=False)])
        trainer.fit(Net(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
        """
    )
    proc = _run(code, cwd=tmp_path)  # the run writes nothing, but never into the checkout
    assert proc.returncode == 0, proc.stderr
    assert "FutureWarning" not in proc.stderr and "LeafSpec" not in proc.stderr, proc.stderr
