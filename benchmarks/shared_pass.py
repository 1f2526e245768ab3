"""Saliency + input x gradient + Grad-CAM from one shared pass vs one of them alone.

The three one-pass methods need the same forward and the same backward over the probe: asked together
(``functional.attribute_many``, as ``AttributionMonitor`` does) they should cost about one of them.
Target: together <= 1.2x saliency alone. The three computed one by one are timed too, for scale.

Run:  .venv/bin/python benchmarks/shared_pass.py [--small] [--probe 64] [--threads 1]
"""

from __future__ import annotations

from typing import Any, Dict

import torch

from _common import base_parser, cam_layer, emit, interleaved, input_shape, make_model, model_label, median, setup, table

from lightning_xai import functional as F

TRIO = ["saliency", "input_x_gradient", "grad_cam"]


def main(argv: Any = None) -> Dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--probe", type=int, default=64)
    args = p.parse_args(argv)
    setup(args)
    model = make_model(args).to(args.device)
    layer = cam_layer(model)
    x = torch.randn(args.probe, *input_shape(args), generator=torch.Generator().manual_seed(args.seed)).to(args.device)
    with torch.no_grad():
        t = model(x).argmax(1)

    def separately() -> None:
        F.saliency(model, x, t)
        F.input_x_gradient(model, x, t)
        F.grad_cam(model, x, t, layer=layer)

    variants = {
        "saliency alone": lambda: F.saliency(model, x, t),
        "three, shared pass": lambda: F.attribute_many(model, x, t, TRIO, layer=layer),
        "three, one by one": separately,
    }
    with F.count_passes() as shared_count:
        F.attribute_many(model, x, t, TRIO, layer=layer)
    times = interleaved(variants, args.repeats * 2, args.device)
    med = {k: median(v) for k, v in times.items()}
    base = med["saliency alone"]
    rows = [[k, 1e3 * v, v / base] for k, v in med.items()]
    ratio = med["three, shared pass"] / base
    text = table(rows, ["variant", "ms", "x saliency alone"]) + f"\nshared/alone = {ratio:.3f} (target <= 1.2)"
    payload = {
        "config": {
            "model": model_label(args, model),
            "input": [args.probe, *input_shape(args)], "grad_cam_layer": layer, "repeats": args.repeats * 2,
            "device": str(args.device), "statistic": "median, interleaved", "clock": args.clock,
        },
        "results": {
            **{f"{k.replace(' ', '_').replace(',', '')}_ms": 1e3 * v for k, v in med.items()},
            "shared_over_alone": ratio,
            "target": 1.2,
            "meets_target": ratio <= 1.2,
            "shared_pass_forward_calls": shared_count.forward_calls,
            "shared_pass_backward_calls": shared_count.backward_calls,
        },
    }
    emit("shared_pass", payload, text)
    return payload


if __name__ == "__main__":
    main()
