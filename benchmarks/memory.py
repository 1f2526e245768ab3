"""Peak memory of an attribution vs the training step's peak, with default settings.

What is compared: the memory a step allocates on top of what was already live before it (model,
optimizer state, data) at its highest point:

- the training step: ``model.train()``, forward, cross-entropy, backward, ``Adam.step()``,
  ``zero_grad(set_to_none=True)``, batch ``--batch`` (default 64), measured after a warm-up step so
  that the optimizer state already exists (it stays live during validation too);
- each attribution method on a probe of ``--probe`` samples (default 64) with the chunk size the
  callbacks choose automatically: the probe size, capped at the training batch size.

Since the optimizer state and the model are live in both phases, "attribution peak <= training
step peak" holds for the whole process exactly when the attribution's working memory is at most the
training step's.

Target: attribution peak <= training step peak + ``(chunk + probe) x one input sample``. The
allowance is the input-sized memory an attribution must allocate and a training step does not: the
rows it feeds are made inside the step (the alpha-scaled path points of integrated gradients, the
noisy copies of SmoothGrad, the occluded copies; a training step's batch already exists when the
step starts), one chunk of them at a time, and it returns a probe-sized map (the running sum of
the path or noise gradients) where a training step returns nothing. With the default 0.7M-parameter
model the parameter gradients and Adam's temporaries of the training step are larger than this
allowance, and every method stays under the training step itself (``x training step`` <= 1); with
``--small`` (78k parameters) they are not, and integrated gradients and SmoothGrad come out a few
percent above the training step (1.03x) though within the allowance.

How memory is measured:

- CPU: ``torch.profiler`` with ``profile_memory=True``; every allocation and free of the CPU
  allocator during the step is replayed in time order (``export_memory_timeline(device="cpu")``,
  summed over categories) and the highest point above the start is the peak. This counts tensor
  memory at allocator level, as ``torch.cuda.max_memory_allocated`` does on a GPU; it does not count
  allocator caching or the Python heap (RSS-based figures would mostly measure glibc's caching).
- CUDA: ``torch.cuda.max_memory_allocated() - memory_allocated()`` around the step, after
  ``reset_peak_memory_stats``.

Per-epoch statistics (``--statistics``): what the callbacks compute from the maps every epoch
(AttributionMonitor's summaries, FeatureDriftMonitor's drift scores with the per-sample map metrics,
the randomisation checks' map similarity) on probes of 256, 1024 and 4096 samples of 3x32x32 maps,
processed ``ROWS_PER_CHUNK`` samples at a time (ours) and all at once (as before), side by side. The
bound: peak <= a few probe-sized float64 copies of the maps (what the statistics read) + temporaries
of ``ROWS_PER_CHUNK`` samples, whatever the probe size; reported as peak / (probe maps in float64).

Run:  .venv/bin/python benchmarks/memory.py [--small] [--probe 64] [--batch 64]
      .venv/bin/python benchmarks/memory.py --statistics [--sizes 256 1024 4096]
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from typing import Any, Callable, Dict

import torch
from torch import nn

from _common import base_parser, cam_layer, emit, input_shape, make_model, model_label, setup, table

from lightning_xai import functional as F

METHODS = ["saliency+input_x_gradient+grad_cam", "integrated_gradients", "smoothgrad", "occlusion"]


def peak_bytes(fn: Callable[[], Any], device: str) -> int:
    """Highest tensor memory allocated by ``fn`` above what was live when it started."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - before)
    from torch.profiler import ProfilerActivity, profile

    # libkineto, the profiler's backend, writes its own log lines straight to stderr (a "profiler_start"
    # and "profiler_stop" pair at its top level, USDT, for every profile). Its threshold is read from
    # KINETO_LOG_LEVEL when the profiler first starts; 6 is above its highest level. Set it only if the
    # caller has not chosen one. (Kineto's errors go too: a failed profile is caught below, as no events.)
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.path.join(d, "timeline.json")
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as f:
            _, sizes = json.load(f)
    totals = [sum(s) for s in sizes]
    if not totals:
        raise RuntimeError("the profiler recorded no memory events (set KINETO_LOG_LEVEL=0 to see why)")
    return int(max(totals) - totals[0])


def statistics(sizes: Any, seed: int) -> Dict[str, Any]:
    """Peak memory of one epoch's statistics over the maps, chunked (ours) and at once, per probe size."""
    from lightning_xai.functional import drift as D

    results: Dict[str, Any] = {}
    rows = []
    for n in sizes:
        g = torch.Generator().manual_seed(seed)
        ref, cur = torch.rand(n, 3, 32, 32, generator=g), torch.rand(n, 3, 32, 32, generator=g)

        def epoch() -> None:
            F.summarize(cur)
            F.drift_scores(F.feature_importance(ref), F.feature_importance(cur), F.per_sample_maps(ref),
                           F.per_sample_maps(cur), metrics=F.DRIFT_METRICS)
            F.map_similarity(ref, cur, "spearman")

        maps_bytes = n * 32 * 32 * 8  # the probe's per-sample maps in float64
        entry: Dict[str, Any] = {}
        for label, chunk in (("chunked", D.ROWS_PER_CHUNK), ("at once", 10**9)):
            saved, D.ROWS_PER_CHUNK = D.ROWS_PER_CHUNK, chunk
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    epoch()  # warm-up
                    peak = peak_bytes(epoch, "cpu")
            finally:
                D.ROWS_PER_CHUNK = saved
            entry[label] = {"peak_MB": peak / 2**20, "over_maps": peak / maps_bytes}
        results[str(n)] = entry
        rows.append([n, entry["chunked"]["peak_MB"], entry["chunked"]["over_maps"], entry["at once"]["peak_MB"],
                     entry["at once"]["over_maps"]])
    text = table(rows, ["probe", "chunked MB", "chunked / maps", "at once MB", "at once / maps"])
    text += f"\nmaps: the probe's per-sample maps in float64 (N x 32 x 32 x 8 bytes); chunks of {D.ROWS_PER_CHUNK} samples"
    emit("memory_statistics", {"config": {"sizes": list(sizes), "map": [3, 32, 32], "chunk_rows": D.ROWS_PER_CHUNK},
                               "results": results}, text)
    return results


def main(argv: Any = None) -> Dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--probe", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--statistics", action="store_true", help="per-epoch statistics over the maps, by probe size")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    args = p.parse_args(argv)
    setup(args)
    if args.statistics:
        return statistics(args.sizes, args.seed)
    dev = args.device
    model = make_model(args).to(dev)
    layer = cam_layer(model)
    g = torch.Generator().manual_seed(args.seed)
    xb = torch.randn(args.batch, *input_shape(args), generator=g).to(dev)
    yb = torch.randint(0, 10, (args.batch,), generator=g).to(dev)
    probe = torch.randn(args.probe, *input_shape(args), generator=g).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step() -> None:
        model.train()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    train_step()  # warm-up: the optimizer state exists from now on, as it does during validation
    train_peak = peak_bytes(train_step, dev)
    model.eval()
    chunk = min(args.probe, args.batch)  # the callbacks' automatic chunk size
    with torch.no_grad():
        target = model(probe).argmax(1)
    calls: Dict[str, Callable[[], Any]] = {
        "saliency+input_x_gradient+grad_cam": lambda: F.attribute_many(
            model, probe, target, ["saliency", "input_x_gradient", "grad_cam"], layer=layer, chunk_size=chunk
        ),
        "integrated_gradients": lambda: F.integrated_gradients(model, probe, target, n_steps=args.steps, chunk_size=chunk),
        "smoothgrad": lambda: F.smoothgrad(model, probe, target, chunk_size=chunk),
        "occlusion": lambda: F.occlusion(model, probe, target, chunk_size=chunk),
    }
    # the target's allowance (module docstring): a chunk of fed rows made in the step + the probe-sized map
    sample_bytes = probe[0].numel() * probe.element_size()
    allowance = (chunk + args.probe) * sample_bytes
    target_bytes = train_peak + allowance
    results: Dict[str, Any] = {"training_step_MB": train_peak / 2**20, "target_MB": target_bytes / 2**20,
                               "allowance_MB": allowance / 2**20}
    rows = [["training step (batch %d)" % args.batch, train_peak / 2**20, 1.0, "-", "-"]]
    for name, fn in calls.items():
        fn()  # warm-up
        peak = peak_bytes(fn, dev)
        ratio = peak / train_peak
        meets = peak <= target_bytes
        results[name] = {"peak_MB": peak / 2**20, "over_training_step": ratio, "under_training_step": ratio <= 1.0,
                         "meets_target": meets}
        rows.append([name, peak / 2**20, ratio, "yes" if ratio <= 1.0 else "no", "yes" if meets else "NO"])
    text = table(rows, ["step", "peak MB", "x training step", "<= training", "<= target"])
    text += (f"\ntarget: training step + (chunk {chunk} + probe {args.probe}) x one input sample "
             f"= {train_peak / 2**20:.4g} + {allowance / 2**20:.4g} = {target_bytes / 2**20:.4g} MB")
    config = {
        "model": model_label(args, model),
        "probe": args.probe, "train_batch": args.batch, "chunk_size": chunk, "ig_steps": args.steps,
        "target": "peak <= training step peak + (chunk + probe) x one input sample",
        "method": "torch.profiler memory timeline (CPU allocator)" if torch.device(dev).type == "cpu"
        else "torch.cuda.max_memory_allocated", "device": str(dev),
    }
    emit("memory", {"config": config, "results": results}, text)
    return results


if __name__ == "__main__":
    main()
