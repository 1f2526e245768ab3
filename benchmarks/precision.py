"""bf16 vs fp32 attributions: speed, and the error of the bf16 maps against the fp32 ones, per method.

Three ways to run the same method on the same model and probe:

- ``fp32``: the reference;
- ``bf16``: weights and probe in bfloat16 (what the callbacks do under ``Trainer(precision="bf16-true")``,
  where ``ProbeSet.inputs_for`` casts the probe to the model's dtype);
- ``autocast``: fp32 weights inside ``torch.autocast(dtype=torch.bfloat16)`` (what a user gets by
  calling the functional API inside a ``"bf16-mixed"`` region).

Error of a bf16 map ``a`` against the fp32 map ``r``: the relative error ``||a - r|| / ||r||``
(Frobenius norm over the whole probe) and the mean per-sample Spearman rank correlation of ``|a|``
and ``|r|`` (what a heatmap shows is mostly the ranking). Timings are interleaved medians.

Run:  .venv/bin/python benchmarks/precision.py [--small] [--probe 32] [--threads 1]
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Dict

import torch

from _common import base_parser, cam_layer, emit, interleaved, input_shape, make_model, model_label, median, setup, table

from lightning_xai import functional as F

METHODS = ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "grad_cam", "occlusion"]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-sample Spearman correlation of ``|a|`` and ``|b|`` (the library's one Spearman; a constant
    pair of rows counts as 1)."""
    return float(F.spearman(a.abs().float().cpu(), b.abs().float().cpu(), constant="defined").mean())


def main(argv: Any = None) -> Dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--probe", type=int, default=32)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    args = p.parse_args(argv)
    setup(args)
    dev = args.device
    m32 = make_model(args).to(dev)
    m16 = copy.deepcopy(m32).to(torch.bfloat16)
    layer = cam_layer(m32)
    x32 = torch.randn(args.probe, *input_shape(args), generator=torch.Generator().manual_seed(args.seed)).to(dev)
    x16 = x32.to(torch.bfloat16)
    with torch.no_grad():
        t = m32(x32).argmax(1)
    opts: Dict[str, Dict[str, Any]] = {
        "integrated_gradients": {"n_steps": args.steps},
        "grad_cam": {"layer": layer},
        "occlusion": {"window": (3, 4, 4)},
    }
    autocast = lambda: torch.autocast(device_type=torch.device(dev).type, dtype=torch.bfloat16)  # noqa: E731

    def call(method: str, model: torch.nn.Module, x: torch.Tensor, ctx: Callable[[], Any]) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with ctx():
                return F.attribute(model, x, t, method, **opts.get(method, {}))

        return run

    results: Dict[str, Any] = {}
    rows = []
    for method in args.methods:
        variants = {
            "fp32": call(method, m32, x32, contextlib.nullcontext),
            "bf16": call(method, m16, x16, contextlib.nullcontext),
            "autocast": call(method, m32, x32, autocast),
        }
        ref = variants["fp32"]().float()
        maps = {k: variants[k]().float() for k in ("bf16", "autocast")}
        times = interleaved(variants, args.repeats, dev)
        med = {k: median(v) for k, v in times.items()}
        entry: Dict[str, Any] = {"fp32_ms": 1e3 * med["fp32"]}
        for k in ("bf16", "autocast"):
            rel = float((maps[k] - ref).norm() / ref.norm().clamp_min(1e-30))
            entry[k] = {
                "ms": 1e3 * med[k], "speedup": med["fp32"] / med[k], "relative_error": rel,
                "spearman": spearman(maps[k], ref),
            }
            rows.append([method, k, 1e3 * med["fp32"], 1e3 * med[k], med["fp32"] / med[k], rel, entry[k]["spearman"]])
        results[method] = entry
    text = table(rows, ["method", "variant", "fp32 ms", "bf16 ms", "speed-up", "rel. error", "spearman"])
    config = {
        "model": model_label(args, m32),
        "input": [args.probe, *input_shape(args)], "ig_steps": args.steps, "repeats": args.repeats, "device": str(dev),
        "statistic": "median, interleaved", "clock": args.clock,
    }
    emit("precision", {"config": config, "results": results}, text)
    return results


if __name__ == "__main__":
    main()
