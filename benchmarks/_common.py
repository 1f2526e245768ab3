"""Shared pieces of the benchmarks: a CIFAR-size ResNet-ish CNN, interleaved timing, output.

Every benchmark prints a short table and then ONE JSON line (the last line of its output), so that
results can be collected with ``.venv/bin/python benchmarks/<name>.py | tail -n 1``.

Timing rule: the variants being compared are run interleaved (A, B, C, A, B, C, ...) after a warm-up
round, and the median of the repeats is reported, so that load from other processes on a shared
machine hits every variant alike. Torch runs with a fixed number of intra-op threads
(``--threads``, default 1) so that figures are stable.

Clock (``--clock``): on a CPU the default is the process's CPU time (``time.process_time``, all its
threads), which other processes' load on a shared machine inflates far less than wall time; on a
GPU it is wall time after ``torch.cuda.synchronize()``. Both are recorded where it matters.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Sequence

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# ------------------------------------------------------------------------------------- model
class _Block(nn.Module):
    """ResNet basic block: conv-bn-relu-conv-bn + (projected) shortcut, relu."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(y + self.short(x))


class ResNetish(nn.Module):
    """A small CIFAR-size ResNet: stem, three stages of basic blocks (strides 1, 2, 2), pool, linear.

    ``width=16`` and ``blocks=1`` give 78k parameters (``--small``); ``width=32, blocks=2``
    (default) 0.7M parameters: ResNet-18's CIFAR layout (two blocks per stage) at half its width,
    three stages instead of four.
    """

    def __init__(self, width: int = 32, blocks: int = 2, classes: int = 10, in_ch: int = 3) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_ch, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        layers: List[nn.Module] = []
        cin = w
        for stage, cout in enumerate((w, 2 * w, 4 * w)):
            for b in range(blocks):
                layers.append(_Block(cin, cout, 2 if (stage > 0 and b == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


#: ``--model`` choices: the ResNet-ish CNN above, or torchvision's ResNet-18 at 32x32 (CIFAR size)
#: and ResNet-50 at 224x224 (ImageNet size), where torchvision is installed (e.g. on a GPU machine)
MODELS = {"resnetish": (3, 32, 32), "resnet18": (3, 32, 32), "resnet50": (3, 224, 224)}


def build_network(name: str, small: bool) -> nn.Module:
    """The network named by ``--model`` (train mode, default initialisation)."""
    if name == "resnetish":
        return ResNetish(width=16, blocks=1) if small else ResNetish(width=32, blocks=2)
    if name not in MODELS:
        raise SystemExit(f"unknown --model {name!r}; choose one of {', '.join(MODELS)}")
    try:
        import torchvision
    except ImportError:
        raise SystemExit(
            f"--model {name} needs torchvision (pip install torchvision); --model resnetish needs nothing"
        ) from None
    return getattr(torchvision.models, name)(num_classes=10 if name == "resnet18" else 1000)


def make_model(args: argparse.Namespace) -> nn.Module:
    """``--model`` in eval mode, seeded, with non-trivial BatchNorm statistics."""
    torch.manual_seed(args.seed)
    model = build_network(args.model, args.small)
    # move BatchNorm statistics away from the identity so that eval mode is a real network
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def input_shape(args: argparse.Namespace) -> tuple:
    """One sample's shape for ``--model``."""
    return MODELS[args.model]


def model_label(args: argparse.Namespace, model: nn.Module) -> str:
    params = sum(q.numel() for q in model.parameters())
    size = ("small" if args.small else "default") if args.model == "resnetish" else "torchvision"
    return f"{args.model}({size}, {params} params, input {'x'.join(map(str, input_shape(args)))})"


def cam_layer(model: nn.Module) -> str:
    """The Grad-CAM layer: the last residual stage (``layer4`` of a torchvision ResNet)."""
    if hasattr(model, "layer4"):
        return "layer4"
    return f"layers.{len(model.layers) - 1}"


# ------------------------------------------------------------------------------------- timing
def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--small", action="store_true", help="tiny model and few repeats (a quick run)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7, --small 3)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (fixed for stability)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", choices=list(MODELS), default="resnetish",
                   help="resnetish (no dependency), or torchvision's resnet18 (32x32) / resnet50 (224x224)")
    p.add_argument("--clock", choices=["auto", "cpu", "wall"], default="auto",
                   help="process CPU time (default on CPU) or wall time (default on GPU)")
    return p


CLOCK = {"fn": time.process_time, "name": "cpu"}


def setup(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if args.repeats is None:
        args.repeats = 3 if args.small else 7
    if args.clock == "auto":
        args.clock = "wall" if torch.device(args.device).type == "cuda" else "cpu"
    CLOCK["fn"] = time.process_time if args.clock == "cpu" else time.perf_counter
    CLOCK["name"] = "process CPU time" if args.clock == "cpu" else "wall time"


def captum_wanted(args: argparse.Namespace) -> bool:
    """``args.captum`` (the scripts' ``--no-captum``), and only where Captum is installed."""
    if not getattr(args, "captum", False):
        return False
    try:
        import captum  # noqa: F401
    except ImportError:
        return False
    return True


def probe_batch(args: argparse.Namespace, model: nn.Module, n: int) -> Any:
    """``n`` seeded random inputs of the benchmark's shape on its device, and the model's predicted classes."""
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(n, *input_shape(args), generator=g).to(args.device)
    with torch.no_grad():
        t = model(x).argmax(1)
    return x, t


def now() -> float:
    return CLOCK["fn"]()


def sync(device: Any) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(variants: Mapping[str, Callable[[], Any]], repeats: int, device: Any, warmup: int = 1) -> Dict[str, List[float]]:
    """Time each variant ``repeats`` times, round-robin (A B C A B C ...), after ``warmup`` rounds.

    The order inside a round rotates so that no variant always runs first (or right after another).
    Returns the list of wall times in seconds per variant.
    """
    names = list(variants)
    for _ in range(warmup):
        for n in names:
            variants[n]()
        sync(device)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            sync(device)
            t0 = now()
            variants[n]()
            sync(device)
            times[n].append(now() - t0)
    return times


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def over_limit(times: Mapping[str, Mapping[str, Sequence[float]]]) -> "tuple[Dict[str, Any], str]":
    """``{method: {variant: times}}`` (variants ``ours``, ``limit``, ``engine`` and maybe ``captum``) as the
    results (medians in ms, each variant over the limit) and the table the attribution benchmarks print."""
    results: Dict[str, Any] = {}
    rows = []
    for method, variants in times.items():
        med = {k: median(v) for k, v in variants.items()}
        entry: Dict[str, Any] = {f"{k}_ms": 1e3 * v for k, v in med.items()}
        entry["ours_over_limit"] = med["ours"] / med["limit"]
        entry["engine_over_limit"] = med["engine"] / med["limit"]
        if "captum" in med:
            entry["captum_over_limit"] = med["captum"] / med["limit"]
        results[method] = entry
        rows.append(
            [method, 1e3 * med["limit"], 1e3 * med["ours"], entry["ours_over_limit"], entry["engine_over_limit"]]
            + ([1e3 * med["captum"], entry["captum_over_limit"]] if "captum" in med else ["-", "-"])
        )
    text = table(rows, ["method", "limit ms", "ours ms", "ours/limit", "engine/limit", "captum ms", "captum/limit"])
    return results, text


def machine() -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "clock": CLOCK["name"],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        import captum

        info["captum"] = captum.__version__
    except ImportError:
        pass
    return info


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(h) for h in header]] + [[c if isinstance(c, str) else f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(name: str, payload: Dict[str, Any], text: str) -> None:
    print(text)
    print(json.dumps({"benchmark": name, **payload, "machine": machine()}, sort_keys=False))
