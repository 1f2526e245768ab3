"""Training overhead of the lightning_xai suite vs no callbacks and vs a hand-written Captum IG callback.

Workload (CIFAR-size, synthetic so nothing is downloaded): 3x32x32 images of 10 classes (a fixed
random pattern per class plus noise), ``--train-size`` training samples (default 50000, the size of
CIFAR-10's training set and of the reference run the performance targets come from; batch 64),
512 validation samples, the ResNet-ish CNN of ``benchmarks/_common.py`` (``--small``: the 78k-parameter
one; default also the small one, so that an epoch takes under a minute on a CPU), Adam, a TensorBoard
logger in every variant, one validation per epoch, probe of ``--probe`` (default 32) validation
samples.

Variants, each a fresh ``Trainer.fit`` of ``--epochs`` epochs (default 2) from the same seed:

- ``none``: no callbacks;
- ``suite``: ``AttributionMonitor`` with three methods (``--suite-methods``, default the one-pass
  trio saliency, input_x_gradient, grad_cam) and those of ``FeatureDriftMonitor``,
  ``DeadReLUMonitor(source="validation")`` and ``SanityGate([ParameterRandomization()])`` that can be
  imported on this branch (the output lists which were included);
- ``suite+ig``: the same with integrated gradients (32 steps) as the monitor's third method
  (saliency, grad_cam, integrated_gradients);
- ``attribution``, ``drift``, ``dead_relu``, ``gate``: one member of the suite alone (its own
  pass where it shares one in the suite), for a breakdown of the suite's cost (not in the default
  list: ``--variants none attribution drift dead_relu gate``);
- ``captum_ig``: a hand-written single-method callback (below) that runs Captum's
  ``IntegratedGradients`` (32 steps, Gauss-Legendre, internal batch = probe) on the probe at each
  validation epoch and logs an image grid and a scalar, as a user would write it.

Runs are interleaved (none, suite, suite+ig, captum_ig, suite, ...); the figure per variant is the
median over runs of the last epoch's time (training + validation + callbacks,
``on_train_epoch_start`` to ``on_train_epoch_end``); overhead = variant / none. On a CPU the ratio is
taken on process CPU time (robust to other processes' load), wall time is reported next to it.

All the callbacks' work happens inside the validation loop (the timer waits for TensorBoard's
writer thread to write what the validation queued before it stops the clock), so the extra
validation time over ``none`` is the callbacks' cost measured where it is spent; ``1 + extra/epoch`` turns it into an
overhead figure that is far less noisy than the ratio of whole epochs (training epochs of the same
run vary by a few percent on a shared machine).

Run:  .venv/bin/python benchmarks/training_overhead.py [--small] [--runs 3] [--train-size 50000] [--threads 1]
(``--train-size 8192``: epochs six times shorter, so validation and the callbacks weigh six times more.)
"""

from __future__ import annotations

import tempfile
import time
import warnings
from typing import Any, Dict, List, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from _common import base_parser, build_network, cam_layer, emit, median, setup, table

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai import ProbeSet


# ------------------------------------------------------------------------------------- workload
def synthetic(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(1234)
    templates = torch.randn(10, 3, 32, 32, generator=g)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = 0.5 * templates[y] + torch.randn(n, 3, 32, 32, generator=g)
    return TensorDataset(x, y)


class Classifier(pl.LightningModule):
    def __init__(self, model: str = "resnetish", small: bool = True) -> None:
        super().__init__()
        self.net = build_network(model, small)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", nn.functional.cross_entropy(logits, y))
        self.log("val/acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


# ------------------------------------------------------------------------------------- the hand-written Captum callback
class CaptumIGCallback(pl.Callback):
    """What a user writes by hand: Captum IG on a fixed probe at each validation epoch, one image + one scalar."""

    def __init__(self, probe: torch.Tensor, n_steps: int = 32) -> None:
        self.probe = probe
        self.n_steps = n_steps

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        from captum.attr import IntegratedGradients

        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.inference_mode(False), torch.enable_grad():
                x = self.probe.to(pl_module.device).clone()
                with torch.no_grad():
                    target = pl_module(x).argmax(1)
                attr = IntegratedGradients(pl_module).attribute(
                    x, target=target, n_steps=self.n_steps, method="gausslegendre", internal_batch_size=len(x)
                )
        finally:
            pl_module.train(was_training)
        heat = attr.detach().abs().sum(1)
        heat = heat / heat.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        grid = torch.cat(list(heat[:16]), dim=1)  # one row of maps
        trainer.logger.experiment.add_image("captum/ig", grid.unsqueeze(0).cpu().numpy(), trainer.global_step)
        trainer.logger.log_metrics({"captum/ig_mean_abs": float(attr.abs().mean())}, step=trainer.global_step)


# ------------------------------------------------------------------------------------- the suite
def suite(probe: ProbeSet, methods: List[str], small_layer: str) -> Tuple[List[pl.Callback], Dict[str, str]]:
    """The whole lightning_xai suite; returns (callbacks, {name: what it does})."""
    from lightning_xai import checks
    from lightning_xai.callbacks import AttributionMonitor, DeadReLUMonitor, FeatureDriftMonitor, SanityGate

    grad_cam_opts = {"layer": small_layer}
    spec = {m: (grad_cam_opts if m == "grad_cam" else {}) for m in methods}
    callbacks: List[pl.Callback] = [
        AttributionMonitor(probe, methods=spec, target="predicted"),
        FeatureDriftMonitor(probe, method=methods[0]),  # reuses AttributionMonitor's maps
        DeadReLUMonitor(source="validation"),  # counts on the validation loop's own forwards
        SanityGate(probe, checks=[checks.ParameterRandomization(methods[0], max_similarity=0.9, layers=3)], action="warn"),
    ]
    status = {
        "AttributionMonitor": f"included ({', '.join(methods)})",
        "FeatureDriftMonitor": f"included ({methods[0]}, shared with AttributionMonitor)",
        "DeadReLUMonitor": "included (source='validation')",
        "SanityGate": f"included (ParameterRandomization on {methods[0]}, top 3 layers, cascading)",
    }
    return callbacks, status


#: the suite's members in the order suite() returns them (variants that run one of them alone)
MEMBERS = ("attribution", "drift", "dead_relu", "gate")


# ------------------------------------------------------------------------------------- timing
class EpochTimer(pl.Callback):
    """Wall and process-CPU time of each training epoch (validation and callbacks included) and of each validation."""

    def __init__(self) -> None:
        self.epochs: List[Tuple[float, float]] = []
        self.validation: List[Tuple[float, float]] = []

    @staticmethod
    def _now() -> Tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._t0 = self._now()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._v0 = self._now()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            # TensorBoard writes events from a thread (serialising, a pure-Python CRC per record);
            # wait for it here so that the work the validation queued is counted in the validation
            # window, in every variant alike, rather than spilling into the next training steps
            for logger in trainer.loggers:
                writer = getattr(logger, "experiment", None)
                if hasattr(writer, "flush"):
                    writer.flush()
            t = self._now()
            self.validation.append((t[0] - self._v0[0], t[1] - self._v0[1]))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        t = self._now()
        self.epochs.append((t[0] - self._t0[0], t[1] - self._t0[1]))


def run_once(variant: str, args: Any, data: Tuple[TensorDataset, TensorDataset], probe: ProbeSet, logdir: str) -> Dict[str, float]:
    train, val = data
    pl.seed_everything(args.seed, workers=True, verbose=False)
    model = Classifier(args.model, args.small_model)
    layer = "net." + cam_layer(model.net)
    callbacks: List[pl.Callback] = []
    if variant == "suite":
        callbacks, _ = suite(probe, args.suite_methods, layer)
    elif variant == "suite+ig":
        callbacks, _ = suite(probe, ["saliency", "grad_cam", "integrated_gradients"], layer)
    elif variant == "captum_ig":
        callbacks = [CaptumIGCallback(probe.inputs)]
    elif variant in MEMBERS:
        callbacks = [suite(probe, args.suite_methods, layer)[0][MEMBERS.index(variant)]]
    timer = EpochTimer()
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator="cpu" if args.device == "cpu" else "gpu", devices=1,
        logger=TensorBoardLogger(logdir, name=variant.replace("+", "_")), callbacks=callbacks + [timer],
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=50,
    )
    t0 = time.perf_counter()
    trainer.fit(model, DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, batch_size=256))
    total = time.perf_counter() - t0
    return {
        "epoch_wall": timer.epochs[-1][0], "epoch_cpu": timer.epochs[-1][1],
        "validation_wall": timer.validation[-1][0], "validation_cpu": timer.validation[-1][1], "fit_wall": total,
    }


def main(argv: Any = None) -> Dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=None, help="runs per variant (default 3, --small 2)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-size", type=int, default=None, help="training samples (default 50000, --small 1024)")
    p.add_argument("--probe", type=int, default=32)
    p.add_argument("--big-model", dest="small_model", action="store_false", help="the 1.2M-parameter ResNet-ish")
    p.add_argument("--suite-methods", nargs=3, default=["saliency", "input_x_gradient", "grad_cam"])
    p.add_argument(
        "--variants", nargs="+", default=["none", "suite", "suite+ig", "captum_ig"],
        choices=["none", "suite", "suite+ig", "captum_ig", *MEMBERS],
    )
    args = p.parse_args(argv)
    if args.model == "resnet50":
        p.error("training_overhead trains on CIFAR-size (32x32) data: use --model resnetish or resnet18")
    setup(args)
    args.runs = args.runs or (2 if args.small else 3)
    args.train_size = args.train_size or (1024 if args.small else 50000)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    try:
        import captum  # noqa: F401
    except ImportError:
        args.variants = [v for v in args.variants if v != "captum_ig"]
    data = (synthetic(args.train_size, args.seed), synthetic(512, args.seed + 1))
    probe = ProbeSet.from_dataset(data[1], n=args.probe, seed=args.seed)
    _, status = suite(probe, args.suite_methods, "net." + cam_layer(Classifier(args.model, args.small_model).net))
    results: Dict[str, List[Dict[str, float]]] = {v: [] for v in args.variants}
    with tempfile.TemporaryDirectory() as logdir:
        for r in range(args.runs):
            order = args.variants[r % len(args.variants):] + args.variants[: r % len(args.variants)]
            for v in order:
                results[v].append(run_once(v, args, data, probe, logdir))
    keys = ("epoch_wall", "epoch_cpu", "validation_wall", "validation_cpu", "fit_wall")
    med = {v: {k: median([x[k] for x in rs]) for k in keys} for v, rs in results.items()}
    clock = "cpu" if args.clock == "cpu" else "wall"
    rows = []
    out: Dict[str, Any] = {}
    for v, m in med.items():
        none = med.get("none")
        ratio = m[f"epoch_{clock}"] / none[f"epoch_{clock}"] if none else float("nan")
        extra = m[f"validation_{clock}"] - none[f"validation_{clock}"] if none else float("nan")
        out[v] = {
            **{f"{k}_s": x for k, x in m.items()},
            "overhead": ratio,
            "overhead_from_validation": 1 + extra / none[f"epoch_{clock}"] if none else None,
            "overhead_wall": m["epoch_wall"] / none["epoch_wall"] if none else None,
            "extra_validation_s": m[f"validation_{clock}"] - none[f"validation_{clock}"] if none else None,
            "epoch_s_all_runs": [round(x[f"epoch_{clock}"], 3) for x in results[v]],
        }
        rows.append([
            v, m[f"epoch_{clock}"], ratio, m[f"validation_{clock}"], extra, out[v]["overhead_from_validation"],
            m["epoch_wall"], out[v]["overhead_wall"],
        ])
    text = table(rows, [
        "variant", f"epoch s ({clock})", "x none", f"validation s ({clock})", "extra val s", "1 + extra/epoch",
        "epoch s (wall)", "x none (wall)",
    ])
    text += "\nsuite members: " + "; ".join(f"{k}: {s}" for k, s in status.items())
    config = {
        "workload": f"synthetic 3x32x32, 10 classes, {args.train_size} train / 512 val, batch 64, "
        f"{args.model}({('small' if args.small_model else 'default') if args.model == 'resnetish' else 'torchvision'}), "
        "Adam, TensorBoardLogger",
        "epochs_per_run": args.epochs, "runs_per_variant": args.runs, "probe": args.probe,
        "suite_methods": args.suite_methods, "statistic": "median over runs of the last epoch's time, runs interleaved", "clock": clock,
        "device": str(args.device),
    }
    emit("training_overhead", {"config": config, "suite": status, "results": out}, text)
    return out


if __name__ == "__main__":
    main()
