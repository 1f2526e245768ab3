"""Attribution cost over its physical limit, per method, with Captum measured in the same run.

The physical limit of a method is the forward(+backward) passes it needs over the probe, done by a
plain batched loop in chunks of the probe size: model frozen in eval mode, ``out.gather(target)``,
``torch.autograd.grad`` with respect to the input (or, for Grad-CAM, the layer's activation).

    saliency, input_x_gradient   1 x (forward + backward to the input) of the probe
    grad_cam                     1 x (forward + backward to the layer: the last residual block) of the probe
    integrated_gradients         n_steps x (forward + backward to the input) of the probe
    smoothgrad                   n_samples x (forward + backward to the input) of the probe
    occlusion                    (1 + windows) x forward of the probe, no backward

Ours (``lightning_xai.functional``), the engine (``lightning_xai.engine.AttributionEngine``: the
path every callback takes, method table and cache included, a fresh engine each time so nothing is
read from its cache) and Captum run on the same model, inputs and targets, with the same rows per
pass, interleaved (ours, limit, engine, captum, ours, ...); medians are reported.

Run:  .venv/bin/python benchmarks/attribution_cost.py [--small] [--probe 64] [--threads 1] [--methods ...]
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import torch
from torch import nn

from _common import base_parser, cam_layer, captum_wanted, emit, input_shape, interleaved, make_model, model_label, over_limit, probe_batch, setup

from lightning_xai import ProbeSet, functional as F
from lightning_xai.engine import AttributionEngine

METHODS = ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "grad_cam", "occlusion"]


def _frozen(model: nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def limit_loop(model: nn.Module, rows: torch.Tensor, target: torch.Tensor, chunk: int, layer: nn.Module = None) -> None:
    """The physical limit: forward + backward (to the input, or to ``layer``) in chunks, nothing else."""
    _frozen(model)
    n = rows.shape[0]
    t_all = target.repeat((n + target.shape[0] - 1) // target.shape[0])[:n]
    for s in range(0, n, chunk):
        x = rows[s : s + chunk].detach().requires_grad_(True)  # the input joins the graph (params are frozen)
        t = t_all[s : s + chunk]
        if layer is None:
            out = model(x).gather(1, t.view(-1, 1)).sum()
            torch.autograd.grad(out, x)
        else:
            act: List[torch.Tensor] = []
            h = layer.register_forward_hook(lambda m, i, o: act.append(o))
            try:
                out = model(x).gather(1, t.view(-1, 1)).sum()
            finally:
                h.remove()
            torch.autograd.grad(out, act[0])


def forward_loop(model: nn.Module, x: torch.Tensor, passes: int) -> None:
    _frozen(model)
    with torch.no_grad():
        for _ in range(passes):
            model(x)


def build(method: str, model: nn.Module, x: torch.Tensor, t: torch.Tensor, args: Any) -> Dict[str, Callable[[], Any]]:
    n = x.shape[0]
    layer_name = cam_layer(model)
    layer = dict(model.named_modules())[layer_name]
    window = (x.shape[1], x.shape[2] // 8, x.shape[3] // 8)
    variants: Dict[str, Callable[[], Any]] = {}
    if method == "saliency":
        variants["ours"] = lambda: F.saliency(model, x, t)
        variants["limit"] = lambda: limit_loop(model, x, t, n)
    elif method == "input_x_gradient":
        variants["ours"] = lambda: F.input_x_gradient(model, x, t)
        variants["limit"] = lambda: limit_loop(model, x, t, n)
    elif method == "grad_cam":
        variants["ours"] = lambda: F.grad_cam(model, x, t, layer=layer_name)
        variants["limit"] = lambda: limit_loop(model, x, t, n, layer=layer)
    elif method == "integrated_gradients":
        rows = x.repeat(args.steps, 1, 1, 1)
        variants["ours"] = lambda: F.integrated_gradients(model, x, t, n_steps=args.steps)
        variants["limit"] = lambda: limit_loop(model, rows, t, n)
    elif method == "smoothgrad":
        rows = x.repeat(args.samples, 1, 1, 1)
        variants["ours"] = lambda: F.smoothgrad(model, x, t, n_samples=args.samples, noise=0.15)
        variants["limit"] = lambda: limit_loop(model, rows, t, n)
    elif method == "occlusion":
        positions = 8 * 8
        variants["ours"] = lambda: F.occlusion(model, x, t, window=window)
        variants["limit"] = lambda: forward_loop(model, x, 1 + positions)
    options = {
        "grad_cam": {"layer": layer_name}, "integrated_gradients": {"n_steps": args.steps},
        "smoothgrad": {"n_samples": args.samples, "noise": 0.15}, "occlusion": {"window": window},
    }.get(method, {})
    calls = F.resolve_methods({method: options})
    probe = ProbeSet(x.cpu())
    # the callbacks' default target: the predicted class comes from the shared pass's own forward
    # (saliency, input x gradient, Grad-CAM), or from one forward of the probe (the other methods)
    variants["engine"] = lambda: AttributionEngine().attributions(model, probe, calls, target="predicted")
    if args.captum:
        variants["captum"] = captum_variant(method, model, x, t, layer, window, args)
    return variants


def captum_variant(method: str, model: nn.Module, x: torch.Tensor, t: torch.Tensor, layer: nn.Module, window: Any, args: Any) -> Callable[[], Any]:
    from captum import attr as ca

    n = x.shape[0]

    def run() -> Any:
        # Captum leaves parameters as they are; freeze them as ours does, so that the backward
        # computes the same gradients (input only) and the comparison is like for like.
        _frozen(model)
        xi = x.detach().clone()
        if method == "saliency":
            return ca.Saliency(model).attribute(xi, target=t, abs=True)
        if method == "input_x_gradient":
            return ca.InputXGradient(model).attribute(xi, target=t)
        if method == "integrated_gradients":
            return ca.IntegratedGradients(model).attribute(
                xi, target=t, n_steps=args.steps, method="gausslegendre", internal_batch_size=n
            )
        if method == "smoothgrad":
            return ca.NoiseTunnel(ca.Saliency(model)).attribute(
                xi, nt_type="smoothgrad", nt_samples=args.samples, nt_samples_batch_size=1, stdevs=0.15, target=t
            )
        if method == "grad_cam":
            cam = ca.LayerGradCam(model, layer).attribute(xi, target=t, relu_attributions=True)
            return ca.LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")
        if method == "occlusion":
            return ca.Occlusion(model).attribute(
                xi, sliding_window_shapes=window, strides=window, baselines=0.0, target=t, perturbations_per_eval=1
            )
        raise AssertionError(method)

    return run


def main(argv: Any = None) -> Dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--probe", type=int, default=64)
    p.add_argument("--steps", type=int, default=32, help="integrated gradients steps")
    p.add_argument("--samples", type=int, default=16, help="smoothgrad samples")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--no-captum", dest="captum", action="store_false")
    args = p.parse_args(argv)
    setup(args)
    args.captum = captum_wanted(args)
    model = make_model(args).to(args.device)
    x, t = probe_batch(args, model, args.probe)
    times = {method: interleaved(build(method, model, x, t, args), args.repeats, args.device) for method in args.methods}
    results, text = over_limit(times)
    config = {
        "model": model_label(args, model),
        "input": [args.probe, *input_shape(args)], "ig_steps": args.steps, "smoothgrad_samples": args.samples,
        "repeats": args.repeats, "device": str(args.device), "statistic": "median, interleaved", "clock": args.clock,
    }
    emit("attribution_cost", {"config": config, "results": results}, text)
    return results


if __name__ == "__main__":
    main()
