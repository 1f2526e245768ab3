"""Perturbation methods (SHAP, LIME, ...) over their forward-pass limit, with Captum in the same run.

The limit of a perturbation method is the forwards it needs: its perturbed rows (``coalitions x
probe rows``) through the model, forward only, in chunks of ``--chunk`` rows, with nothing else
(the perturbed batch is a plain ``repeat`` of the probe, built outside the timed loop):

    kernel_shap, lime    n_samples x rows               forward
    shapley_sampling     (perms x (F - 1) + 2) x rows   forward   (perms = n_samples // F, about n_samples)
    feature_ablation     (F + 1) x rows                 forward
    gradient_shap        gs_samples x rows              forward + backward to the input

Ours (``lightning_xai.functional``, same chunk) and Captum's class with the same feature mask run
interleaved with the limit (ours, limit, captum default, captum best, ours, ...); medians are
reported. Captum is run twice: with its default ``perturbations_per_eval=1`` (one coalition per
forward) and with the value that gives it the same rows per forward as ours (``chunk`` for Lime and
KernelShap, which Captum runs one probe row at a time; ``chunk // rows`` for the others). Captum's
Lime is its default (Lasso surrogate, cosine similarity in input space), ours a ridge: the cost
compared is the method's, not the same numbers. GradientShap has no ``perturbations_per_eval``:
Captum runs its samples in one batch (best and default alike).

Reference setting (the issue's): probe 16 x 3x32x32, an 8 x 8 grid (64 superpixels), 200 samples.

Run:  python benchmarks/perturbation_cost.py [--small] [--probe 16] [--grid 8] [--samples 200] [--chunk 128]
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict

import torch
from torch import nn

from _common import captum_wanted, probe_batch, base_parser, emit, input_shape, interleaved, make_model, median, model_label, setup, table

from lightning_xai import functional as F

METHODS = ["kernel_shap", "lime", "shapley_sampling", "feature_ablation", "gradient_shap"]
CAPTUM = {"kernel_shap": "KernelShap", "lime": "Lime", "shapley_sampling": "ShapleyValueSampling",
          "feature_ablation": "FeatureAblation", "gradient_shap": "GradientShap"}


def _frozen(model: nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def forward_limit(model: nn.Module, rows: torch.Tensor, chunk: int) -> None:
    """The physical limit of a forward-only method: its perturbed rows through the model, in chunks."""
    _frozen(model)
    with torch.no_grad():
        for s in range(0, rows.shape[0], chunk):
            model(rows[s : s + chunk])


def gradient_limit(model: nn.Module, rows: torch.Tensor, target: torch.Tensor, chunk: int) -> None:
    """Forward + backward to the input, in chunks (target repeated per row)."""
    _frozen(model)
    t_all = target.repeat_interleave(rows.shape[0] // target.shape[0])
    for s in range(0, rows.shape[0], chunk):
        x = rows[s : s + chunk].detach().requires_grad_(True)
        out = model(x).gather(1, t_all[s : s + chunk].view(-1, 1)).sum()
        torch.autograd.grad(out, x)


def options(method: str, args: Any, features: int) -> Dict[str, Any]:
    if method in ("kernel_shap", "lime"):
        return {"n_samples": args.samples, "grid": args.grid}
    if method == "shapley_sampling":
        return {"n_samples": max(1, args.samples // features), "grid": args.grid}
    if method == "feature_ablation":
        return {"grid": args.grid}
    return {"n_samples": args.gs_samples}


def coalition_rows(method: str, opts: Dict[str, Any], features: int) -> int:
    if method in ("kernel_shap", "lime"):
        return opts["n_samples"]
    if method == "shapley_sampling":
        return opts["n_samples"] * (features - 1) + 2
    if method == "feature_ablation":
        return features + 1
    return opts["n_samples"]


def build(method: str, model: nn.Module, x: torch.Tensor, t: torch.Tensor, args: Any) -> Dict[str, Callable[[], Any]]:
    n = x.shape[0]
    mask = F.feature_mask(x, grid=args.grid)
    features = F.count_features(mask)
    opts = options(method, args, features)
    per_row = coalition_rows(method, opts, features)
    rows = x.repeat(per_row, 1, 1, 1)
    fn = getattr(F, method)
    variants: Dict[str, Callable[[], Any]] = {"ours": lambda: fn(model, x, t, chunk_size=args.chunk, **opts)}
    if method == "gradient_shap":
        variants["limit"] = lambda: gradient_limit(model, rows, t, args.chunk)
    else:
        variants["limit"] = lambda: forward_limit(model, rows, args.chunk)
    if args.captum:
        from captum import attr as ca

        cls = getattr(ca, CAPTUM[method])
        per_example = method in ("kernel_shap", "lime")
        best = args.chunk if per_example else max(1, args.chunk // n)

        def captum(ppe: int) -> Callable[[], Any]:
            def run() -> Any:
                _frozen(model)
                xi = x.detach().clone()
                if method == "gradient_shap":
                    return cls(model).attribute(xi, baselines=torch.zeros_like(xi[:1]), target=t, n_samples=opts["n_samples"])
                kw: Dict[str, Any] = {"feature_mask": mask, "perturbations_per_eval": ppe, "target": t}
                if method in ("kernel_shap", "lime", "shapley_sampling"):
                    kw["n_samples"] = opts["n_samples"]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return cls(model).attribute(xi, **kw)

            return run

        if args.captum_default or method == "gradient_shap":
            variants["captum_default"] = captum(1)
        if method != "gradient_shap":
            variants["captum_best"] = captum(best)
    return variants


def main(argv: Any = None) -> Dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--probe", type=int, default=16)
    p.add_argument("--grid", type=int, default=8, help="superpixel grid (grid x grid features)")
    p.add_argument("--samples", type=int, default=200, help="coalitions per row (kernel_shap, lime)")
    p.add_argument("--gs-samples", type=int, default=16, help="gradient_shap samples per row")
    p.add_argument("--chunk", type=int, default=128, help="rows per forward, ours, the limit and Captum's best")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--no-captum", dest="captum", action="store_false")
    p.add_argument("--no-captum-default", dest="captum_default", action="store_false",
                   help="skip Captum with its default perturbations_per_eval=1 (one coalition per forward: slow)")
    args = p.parse_args(argv)
    setup(args)
    args.captum = captum_wanted(args)
    model = make_model(args).to(args.device)
    x, t = probe_batch(args, model, args.probe)
    results: Dict[str, Any] = {}
    rows = []
    features = F.count_features(F.feature_mask(x, grid=args.grid))
    for method in args.methods:
        times = interleaved(build(method, model, x, t, args), args.repeats, args.device)
        med = {k: median(v) for k, v in times.items()}
        entry: Dict[str, Any] = {f"{k}_ms": 1e3 * v for k, v in med.items()}
        entry["forward_rows"] = coalition_rows(method, options(method, args, features), features) * args.probe
        for k in med:
            if k != "limit":
                entry[f"{k}_over_limit"] = med[k] / med["limit"]
        results[method] = entry
        rows.append([
            method, entry["forward_rows"], 1e3 * med["limit"], 1e3 * med["ours"], entry["ours_over_limit"],
            entry.get("captum_default_over_limit", "-"), entry.get("captum_best_over_limit", "-"),
        ])
    text = table(rows, ["method", "rows", "limit ms", "ours ms", "ours/limit", "captum default/limit", "captum best/limit"])
    config = {
        "model": model_label(args, model), "input": [args.probe, *input_shape(args)], "features": features,
        "samples": args.samples, "gradient_shap_samples": args.gs_samples, "chunk": args.chunk,
        "repeats": args.repeats, "device": str(args.device), "statistic": "median, interleaved", "clock": args.clock,
    }
    emit("perturbation_cost", {"config": config, "results": results}, text)
    return results


if __name__ == "__main__":
    main()
