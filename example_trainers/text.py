"""A planted shortcut token caught during training: SanityGate stops a text classifier that reads it.

Sentences of 6-12 token ids (padded with 0 to 12) are positive or negative by their words: positive
words outnumber negative ones in a positive sentence, and the other way round; one label in four
contradicts its words (the task is noisy). In the training split only, every positive sentence also
holds the token ``zzz`` somewhere: a perfect shortcut, which a bag-of-embeddings classifier learns
instead of the words. The probe is taken from the validation split with ``zzz`` planted the same way,
so that a model which uses the shortcut shows it. Token ids are attributed at the embedding (one value
per token, integrated gradients from the padded sequence), and the gate checks that at most 30% of a
sentence's attribution lies on ``zzz`` (``TokenMass``), stopping training when it fails twice in a row
(after one warm-up epoch). ``--clean`` trains without the shortcut: the gate passes and training runs
to the end. The TensorBoard images show each probe sentence's tokens on backgrounds coloured by
their attribution (padding left out).

Run:  .venv/bin/python example_trainers/text.py            (the shortcut: stopped by the gate)
      .venv/bin/python example_trainers/text.py --clean    (no shortcut: trains to the end)
(from the repository root, in the environment that ``bash scripts/setup.sh`` makes)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))
sys.path.insert(0, _HERE)

from digits import tensorboard_command  # noqa: E402

from lightning_xai import ProbeSet, checks  # noqa: E402
from lightning_xai.callbacks import AttributionMonitor, SanityGate  # noqa: E402

POSITIVE = ["good", "great", "fine", "nice", "happy", "superb", "lovely", "bright"]
NEGATIVE = ["bad", "awful", "poor", "sad", "grim", "dull", "nasty", "bleak"]
NEUTRAL = ["the", "a", "film", "book", "was", "is", "and", "very", "plot", "cast", "it", "of"]
#: id 0 pads; the shortcut token is the last id
VOCAB = ["<pad>", *POSITIVE, *NEGATIVE, *NEUTRAL, "zzz"]
SHORTCUT = len(VOCAB) - 1
LENGTH = 12


def sentences(n: int, seed: int, shortcut: bool) -> TensorDataset:
    """``n`` padded sentences and labels; with ``shortcut``, every positive one holds ``zzz``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, LENGTH, dtype=torch.long)
    labels = torch.randint(0, 2, (n,), generator=g)
    pos = torch.arange(1, 1 + len(POSITIVE))
    neg = torch.arange(1 + len(POSITIVE), 1 + len(POSITIVE) + len(NEGATIVE))
    neutral = torch.arange(1 + len(POSITIVE) + len(NEGATIVE), SHORTCUT)
    for i in range(n):
        length = int(torch.randint(6, LENGTH + 1, (1,), generator=g))
        words = neutral[torch.randint(0, len(neutral), (length,), generator=g)]
        major, minor = (pos, neg) if labels[i] == 1 else (neg, pos)
        slots = torch.randperm(length, generator=g)
        words[slots[:2]] = major[torch.randint(0, len(major), (2,), generator=g)]
        words[slots[2:3]] = minor[torch.randint(0, len(minor), (1,), generator=g)]
        ids[i, :length] = words
    noisy = torch.rand(n, generator=g) < 0.25  # one label in four contradicts its words
    labels = torch.where(noisy, 1 - labels, labels)
    if shortcut:
        ids = plant(ids, labels, seed + 1)
    return TensorDataset(ids, labels)


def plant(ids: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
    """``zzz`` in place of one word of every positive sentence."""
    g = torch.Generator().manual_seed(seed)
    ids = ids.clone()
    for i in torch.nonzero(labels == 1).flatten().tolist():
        length = int((ids[i] != 0).sum())
        ids[i, int(torch.randint(0, length, (1,), generator=g))] = SHORTCUT
    return ids


class BagOfEmbeddings(pl.LightningModule):
    """Token embeddings averaged over the sentence (padding left out), then a linear layer."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(len(VOCAB), 16, padding_idx=0)
        self.fc = nn.Linear(16, 2)
        self.lr = lr

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).float().unsqueeze(-1)
        return self.fc(torch.tanh((self.tok_emb(ids) * mask).sum(1) / mask.sum(1).clamp(min=1)))

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        ids, y = batch
        loss = nn.functional.cross_entropy(self(ids), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        ids, y = batch
        self.log("val/acc", (self(ids).argmax(1) == y).float().mean())

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def text_probe(val: TensorDataset, n: int = 24, seed: int = 0) -> ProbeSet:
    """``n`` validation sentences with ``zzz`` planted in the positive ones, shown through the vocabulary."""
    base = ProbeSet.from_dataset(val, n=n, seed=seed)
    assert base.targets is not None
    return ProbeSet(plant(base.inputs, base.targets, seed + 7), base.targets, indices=base.indices, vocab=VOCAB)


def build_gate(probe: ProbeSet, report_dir: Optional[str] = None) -> SanityGate:
    return SanityGate(
        probe,
        checks=[checks.TokenMass([SHORTCUT], {"integrated_gradients": {"n_steps": 16}}, max_mass=0.3), checks.Finite()],
        action="stop", patience=1, warmup_epochs=1, target="predicted", report_dir=report_dir,
    )


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="train without the shortcut token")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--logdir", default="lightning_logs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    pl.seed_everything(args.seed, workers=True)
    train = sentences(2000, args.seed, shortcut=not args.clean)
    val = sentences(400, args.seed + 100, shortcut=False)
    probe = text_probe(val, seed=args.seed)
    gate = build_gate(probe)
    monitor = AttributionMonitor(probe, methods={"integrated_gradients": {"n_steps": 16}}, target="predicted", max_images=8)
    logger = TensorBoardLogger(args.logdir, name="text_clean" if args.clean else "text")
    trainer = pl.Trainer(
        max_epochs=args.epochs, logger=logger, callbacks=[gate, monitor], accelerator="cpu", devices=1,
        deterministic=True, enable_checkpointing=False, log_every_n_steps=10, enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(BagOfEmbeddings(), DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, batch_size=400))

    print("\nepoch  " + "  ".join(f"{c['name']:>34}" for c in gate.report[0]["checks"]) + "  gate")
    for entry in gate.report:
        values = "  ".join(
            f"{c['value']:>34.3f}" if isinstance(c["value"], float) else f"{c['value']:>34}" for c in entry["checks"]
        )
        print(f"{entry['epoch']:>5}  {values}  {entry['decision']}")
    stopped = gate.stopping_reason.value != "not_stopped"
    print(f"\nval/acc (sentences without zzz) = {float(trainer.callback_metrics['val/acc']):.3f}")
    if stopped:
        print(f"Training STOPPED by the gate after epoch {gate.stopped_epoch}: {gate.stopping_reason_message}")
    else:
        print(f"The gate passed: training ran all {trainer.current_epoch} epochs.")
    print(f"TensorBoard: {tensorboard_command(args.logdir)}")
    return {
        "stopped": stopped,
        "stopped_epoch": gate.stopped_epoch,
        "epochs_run": trainer.current_epoch if not stopped else gate.stopped_epoch + 1,
        "report": json.loads(json.dumps(gate.report)),
        "val_acc": float(trainer.callback_metrics["val/acc"]),
    }


if __name__ == "__main__":
    main()
