"""Feature visualisation cost over its physical limit, and its whole-run overhead on the digits demo.

1. Per epoch (what ``FeatureVisualizationMonitor`` computes once per scheduled epoch):
   ``functional.activation_maximization`` of ``--targets`` classes for ``--steps`` steps, against its
   physical limit: ``steps`` x one forward + backward (to the input) of a batch of the targets, by a
   plain loop (model frozen in eval mode, ``out.gather(target).sum()``, ``torch.autograd.grad``, an
   in-place ascent step). Two configurations of ours: ``pixel`` (no regulariser but L2: the same
   work as the limit plus Adam) and ``fft+jitter`` (the monitor's default: an inverse FFT, a sigmoid
   and a shift each step). Interleaved (limit, pixel, fft+jitter, limit, ...), medians reported.
2. Whole run: the digits demo's CNN and data (``example_trainers/digits.py``) trained for
   ``--epochs`` epochs with and without the demo's ``FeatureVisualizationMonitor``
   (``every_n_epochs=2``, 128 steps, 10 classes and 8 units of the second conv layer, kernels of
   the first), a TensorBoard logger in both, runs interleaved (without, with, without, ...);
   the overhead is the median time of the runs with it over those without.

Run:  python benchmarks/featvis_cost.py [--small] [--steps 64] [--targets 10] [--epochs 4] [--runs 3]
"""

from __future__ import annotations

import tempfile
import warnings
from typing import Any, Callable, Dict, List

import torch
from torch import nn

from _common import ROOT, base_parser, emit, input_shape, interleaved, make_model, model_label, median, now, setup, table

from lightning_xai import functional as F


def _frozen(model: nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def limit_loop(model: nn.Module, shape: tuple, targets: torch.Tensor, steps: int, lr: float) -> None:
    """The physical limit: ``steps`` x (forward + backward to the input) of the targets' batch."""
    _frozen(model)
    x = torch.zeros(len(targets), *shape, device=targets.device).requires_grad_(True)
    for _ in range(steps):
        out = model(x).gather(1, targets.view(-1, 1)).sum()
        (g,) = torch.autograd.grad(out, x)
        with torch.no_grad():
            x.add_(g, alpha=lr)


def per_epoch(args: Any) -> Dict[str, Any]:
    model = make_model(args).to(args.device)
    shape = input_shape(args)
    classes = list(range(args.targets))
    t = torch.tensor(classes, device=args.device)
    variants: Dict[str, Callable[[], Any]] = {
        "limit": lambda: limit_loop(model, shape, t, args.steps, 0.05),
        "pixel": lambda: F.activation_maximization(model, shape, classes, steps=args.steps),
        "fft+jitter": lambda: F.activation_maximization(
            model, shape, classes, steps=args.steps, parametrization="fft", jitter=1, value_range=(0.0, 1.0)),
    }
    times = interleaved(variants, args.repeats, args.device)
    med = {k: median(v) for k, v in times.items()}
    return {
        "model": model_label(args, model), "steps": args.steps, "targets": args.targets,
        **{f"{k}_ms": 1e3 * v for k, v in med.items()},
        "pixel_over_limit": med["pixel"] / med["limit"], "fft_jitter_over_limit": med["fft+jitter"] / med["limit"],
    }


# ------------------------------------------------------------------------------------- the digits demo
def digits_run(with_monitor: bool, epochs: int, seed: int = 0) -> float:
    """One fit of the demo's CNN; the clock's time for the whole ``fit``."""
    import sys

    sys.path.insert(0, f"{ROOT}/example_trainers")
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader

    from digits import DigitsCNN, digits_datasets, feature_visualization

    from lightning_xai import ProbeSet

    pl.seed_everything(seed, verbose=False)
    train, val = digits_datasets(seed)
    probe = ProbeSet.from_dataset(val, n=16, seed=seed)
    callbacks = [feature_visualization(probe)] if with_monitor else []
    with tempfile.TemporaryDirectory() as root, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(
            max_epochs=epochs, logger=TensorBoardLogger(root, name="digits"), callbacks=callbacks, accelerator="cpu",
            devices=1, deterministic=True, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, log_every_n_steps=10,
        )
        t0 = now()
        trainer.fit(DigitsCNN(), DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, batch_size=256))
        return now() - t0


def whole_run(args: Any) -> Dict[str, Any]:
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    times: Dict[str, List[float]] = {"without": [], "with": []}
    for r in range(args.runs):
        for name in (("without", "with") if r % 2 == 0 else ("with", "without")):
            times[name].append(digits_run(name == "with", args.epochs))
    med = {k: median(v) for k, v in times.items()}
    return {
        "epochs": args.epochs, "every_n_epochs": 2, "runs": args.runs,
        "without_s": med["without"], "with_s": med["with"], "overhead": med["with"] / med["without"],
        "all_s": times,
    }


def main(argv: Any = None) -> Dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=64, help="optimisation steps per epoch")
    p.add_argument("--targets", type=int, default=10, help="classes optimised together")
    p.add_argument("--epochs", type=int, default=4, help="digits demo epochs (the monitor runs every second one)")
    p.add_argument("--runs", type=int, default=None, help="digits runs per variant (default 3, --small 1)")
    p.add_argument("--skip-demo", action="store_true", help="only the per-epoch comparison")
    args = p.parse_args(argv)
    setup(args)
    if args.runs is None:
        args.runs = 1 if args.small else 3
    if args.small:
        args.steps = min(args.steps, 16)
    epoch = per_epoch(args)
    rows = [
        ["limit: steps x fwd+bwd", epoch["limit_ms"], 1.0],
        ["ours, pixel", epoch["pixel_ms"], epoch["pixel_over_limit"]],
        ["ours, fft+jitter", epoch["fft+jitter_ms"], epoch["fft_jitter_over_limit"]],
    ]
    text = f"per epoch: {epoch['targets']} classes x {epoch['steps']} steps on {epoch['model']}\n"
    text += table(rows, ["variant", "ms", "over limit"])
    results: Dict[str, Any] = {"per_epoch": epoch}
    if not args.skip_demo:
        run = whole_run(args)
        results["digits_demo"] = run
        text += (
            f"\n\ndigits demo, {run['epochs']} epochs, monitor every 2nd epoch, median of {run['runs']} interleaved runs\n"
            + table([["without", run["without_s"], 1.0], ["with", run["with_s"], run["overhead"]]],
                    ["run", "s", "overhead"])
        )
    config = {"repeats": args.repeats, "device": str(args.device), "statistic": "median, interleaved", "clock": args.clock}
    emit("featvis_cost", {"config": config, "results": results}, text)
    return results


if __name__ == "__main__":
    main()
