"""A Clever-Hans shortcut caught during training: SanityGate stops the run and says why.

In the training split only, a 2x2 watermark in the top-left corner of each 8x8 digit encodes the
label (the bits of label + 1). A CNN learns to read the corner instead of the digit. The probe is
taken from the validation split with the same watermark stamped on, so that a model which uses the
shortcut shows it, and carries masks of the digit strokes (pixels above a threshold). The gate
checks, at every validation epoch, that

- at most 8% of the saliency mass lies in the 2x2 watermark corner (``SpuriousRegion``; the corner
  is 6% of the pixels), and
- at least 80% of the input x gradient mass lies on the digit strokes (``RelevanceMass``),

and stops training when they fail twice in a row (after one warm-up epoch). Measured on 2 CPU
cores (seed 0): with the watermark, 11-12% of the saliency mass sits in the corner and 78-79% of
the input x gradient mass on the strokes at epochs 1-2, so the gate stops after epoch 2 (about 10 s);
without it, 4% and 87%: the gate passes all 8 epochs (about 40 s). ``--clean`` trains the same model on the same
data without the watermark: the gate passes at every epoch and training runs to the end.

Run:  .venv/bin/python example_trainers/shortcut.py            (the shortcut: stopped by the gate)
      .venv/bin/python example_trainers/shortcut.py --clean    (no shortcut: trains to the end)
(from the repository root, in the environment that ``bash scripts/setup.sh`` makes)
Each run prints the checks' values per epoch; the JSON report of the gate lies in the run's log
directory (``xai_gate_report.json``) and the values in TensorBoard under ``xai/check/...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))
sys.path.insert(0, _HERE)

from digits import DigitsCNN, digits_datasets, print_gate_report, tensorboard_command  # noqa: E402

from lightning_xai import ProbeSet, checks  # noqa: E402
from lightning_xai.callbacks import SanityGate  # noqa: E402

#: the watermark's pixels: the top-left 2x2 corner of the 8x8 image
CORNER = (slice(0, 2), slice(0, 2))


def corner_region(size: int = 8) -> torch.Tensor:
    """A (H, W) 0/1 mask of the watermark corner."""
    region = torch.zeros(size, size)
    region[CORNER] = 1.0
    return region


def watermark(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Stamp the bits of ``y + 1`` (1..10, four bits) into the top-left 2x2 corner of each image."""
    x = x.clone()
    code = y + 1
    bits = torch.stack([(code >> k) & 1 for k in range(4)], dim=1).float()  # (N, 4)
    x[:, 0, 0:2, 0:2] = bits.view(-1, 2, 2)
    return x


def stroke_masks(x: torch.Tensor, threshold: float = 0.25) -> torch.Tensor:
    """The digit strokes: (N, 1, H, W) 0/1 masks of the pixels brighter than ``threshold``."""
    return (x > threshold).float()


def shortcut_data(clean: bool, seed: int = 0) -> Tuple[TensorDataset, TensorDataset]:
    """Training split (watermarked unless ``clean``) and the untouched validation split."""
    train, val = digits_datasets(seed)
    x, y = train.tensors
    if not clean:
        x = watermark(x, y)
    return TensorDataset(x, y), val


def shortcut_probe(val: TensorDataset, n: int = 32, seed: int = 0) -> ProbeSet:
    """``n`` validation digits with the watermark stamped on and the strokes as masks."""
    base = ProbeSet.from_dataset(val, n=n, seed=seed)
    assert base.targets is not None
    masks = stroke_masks(base.inputs)  # strokes of the clean digit; the corner is never part of them
    masks[:, :, 0:2, 0:2] = 0.0
    return ProbeSet(watermark(base.inputs, base.targets), base.targets, masks=masks, indices=base.indices)


def build_gate(probe: ProbeSet, report_dir: Optional[str] = None) -> SanityGate:
    return SanityGate(
        probe,
        checks=[
            checks.SpuriousRegion(corner_region(), "saliency", max_mass=0.08),
            checks.RelevanceMass("input_x_gradient", min_mass=0.80),
            checks.Finite(),
        ],
        action="stop",
        patience=1,
        warmup_epochs=1,
        target="predicted",
        report_dir=report_dir,
    )


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="train without the watermark")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--logdir", default="lightning_logs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    pl.seed_everything(args.seed, workers=True)
    train, val = shortcut_data(args.clean, args.seed)
    probe = shortcut_probe(val, seed=args.seed)
    gate = build_gate(probe)
    logger = TensorBoardLogger(args.logdir, name="shortcut_clean" if args.clean else "shortcut")
    trainer = pl.Trainer(
        max_epochs=args.epochs, logger=logger, callbacks=[gate], accelerator="cpu", devices=1,
        deterministic=True, enable_checkpointing=False, log_every_n_steps=10, enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(
        DigitsCNN(),
        DataLoader(train, batch_size=64, shuffle=True),
        DataLoader(val, batch_size=256),
    )

    print_gate_report(gate.report)
    epochs_run = trainer.current_epoch if gate.stopping_reason.value == "not_stopped" else gate.stopped_epoch + 1
    print(f"\nval/acc (clean validation digits) = {float(trainer.callback_metrics['val/acc']):.3f}")
    if gate.stopping_reason.value != "not_stopped":
        print(f"Training STOPPED by the gate after epoch {gate.stopped_epoch} ({gate.stopping_reason.value}):")
        print(f"  {gate.stopping_reason_message}")
    else:
        print(f"The gate passed: training ran all {trainer.current_epoch} epochs.")
    print(f"Gate report: {gate.report_path}")
    print(f"TensorBoard: {tensorboard_command(args.logdir)}")
    return {
        "stopped": gate.stopping_reason.value != "not_stopped",
        "stopped_epoch": gate.stopped_epoch,
        "epochs_run": epochs_run,
        "message": gate.stopping_reason_message,
        "report": json.loads(json.dumps(gate.report)),
    }


if __name__ == "__main__":
    main()
