"""``AttributionTester``: one grid of models x methods x chunk sizes x targets, checked against oracles.

In the spirit of torchmetrics' ``MetricTester``: the thing under test (the
:class:`~lightning_xai.engine.AttributionEngine`) is run over a declared parameter grid and compared
with a reference that is computed independently (Captum, on the same model and inputs, with the
target resolved here, not by the engine):

- :meth:`AttributionTester.run_engine`: the engine in one process equals the oracle (relative error
  <= ``RTOL``), for every chunk size and target rule;
- :func:`run_ddp`: the engine in two gloo processes, each explaining its shard of the probe (an
  uneven probe: 7 rows on 2 ranks, and a 1-row probe where rank 1 has nothing to explain), gathers
  maps equal to the single-process ones (``DDP_RTOL``), smoothgrad included (its noise stream is
  sharded). Every case of every tester given runs in ONE spawned job: a spawn and its imports cost
  seconds per process, the cases milliseconds;
- :meth:`AttributionTester.run_cache` and :meth:`AttributionTester.run_hygiene`: asking twice
  computes once, and the engine leaves the model (parameters, buffers, ``requires_grad``, training
  flags) and the global RNG as it found them.

Extending it (later issues): append a :class:`ModelCase` to ``MODELS`` or a :class:`MethodCase`
(the method's name as the method table knows it, its options and an oracle
``oracle(model, inputs, target, options) -> maps``) to ``METHODS``, or subclass the tester with
other tables (and a :meth:`~AttributionTester.prepare` that registers its methods in the DDP ranks)
and add it to ``DDP_TESTERS`` in ``tests/test_attribution_tester.py``, whose parametrisation picks
the tables up.
"""

from __future__ import annotations

import atexit
import os
import socket
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import pytest
import torch
from torch import Tensor, nn

from lightning_xai import ProbeSet
from lightning_xai.engine import AttributionEngine, Chunking, Shard
from lightning_xai import functional as F
from lightning_xai.functional import resolve_methods

from .ddp_exit import _let_gloo_workers_finish
from .fixtures import MLP, SmallCNN, TwoBranchCNN, trained_batchnorm


def captum_attr() -> Any:
    """``captum.attr``, imported when an oracle first runs (the DDP ranks never need it: they start faster)."""
    return pytest.importorskip("captum.attr")


# ----------------------------------------------------------------------------------------------
# comparison
# ----------------------------------------------------------------------------------------------
def rel_err(ours: Any, ref: Any) -> float:
    """max |ours - ref| / max |ref| (as tests/test_captum_agreement.py measures it); for maps of several
    inputs (a tuple or dict), the largest over the inputs, which must have the same structure."""
    if F.is_structured(ours) or F.is_structured(ref):
        a, b = dict(F.input_entries(ours)), dict(F.input_entries(ref))
        assert a.keys() == b.keys(), (list(a), list(b))
        assert all((a[k] is None) == (b[k] is None) for k in a), "an input attributed on one side only"
        return max(rel_err(a[k], b[k]) for k in a if a[k] is not None)
    ours, ref = ours.detach().double(), ref.detach().double()
    assert ours.shape == ref.shape, (tuple(ours.shape), tuple(ref.shape))
    return float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


# ----------------------------------------------------------------------------------------------
# the models
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelCase:
    """A model and a probe to explain. ``build(n)`` returns a fresh model (left in train mode, to check
    that the engine explains in eval mode and restores the flag) and an ``n``-row probe with targets;
    the same ``n`` gives the same model and probe in every process."""

    name: str
    build: Callable[[int], Tuple[nn.Module, ProbeSet]]
    has_conv: bool = False  # Grad-CAM applies
    probe_size: int = 7


def _seeded(seed: int, make: Callable[[], Tuple[nn.Module, Tensor, Tensor]]) -> Tuple[nn.Module, ProbeSet]:
    with torch.random.fork_rng(devices=[]):  # building a case leaves the global RNG as it was
        torch.manual_seed(seed)
        model, x, y = make()
    return model.train(), ProbeSet(x, targets=y)


def _classes(n: int, k: int) -> Tensor:
    return torch.arange(n) % k


def build_mlp(n: int) -> Tuple[nn.Module, ProbeSet]:
    """Tabular: 6 features, 3 classes."""
    return _seeded(1, lambda: (MLP(features=6, classes=3), torch.randn(n, 6), _classes(n, 3)))


def build_cnn(n: int) -> Tuple[nn.Module, ProbeSet]:
    """1x8x8 images; Conv + BatchNorm (non-trivial running statistics) + ReLU(inplace) + Dropout."""
    return _seeded(0, lambda: (trained_batchnorm(SmallCNN(classes=4)), torch.randn(n, 1, 8, 8), _classes(n, 4)))


def build_two_branch(n: int) -> Tuple[nn.Module, ProbeSet]:
    """3x8x8 images (Grad-CAM maps broadcast over 3 channels); two conv layers, both at 8x8."""
    return _seeded(2, lambda: (TwoBranchCNN(classes=5), torch.randn(n, 3, 8, 8), _classes(n, 5)))


class TwoConvNet(nn.Module):
    """Two conv layers at two resolutions: ``conv1`` at 8x8, ``conv2`` (stride 2) at 4x4, so that
    Grad-CAM at the default (last) layer is really upsampled."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))


def build_two_conv(n: int) -> Tuple[nn.Module, ProbeSet]:
    """1x8x8 images; Grad-CAM layers at 8x8 and 4x4."""
    return _seeded(3, lambda: (TwoConvNet(classes=3), torch.randn(n, 1, 8, 8), _classes(n, 3)))


# ----------------------------------------------------------------------------------------------
# the oracles: Captum on the same model and inputs, the target already resolved (a tensor)
# ----------------------------------------------------------------------------------------------
FIRST_CONV = "<first conv>"  # a grad_cam ``layer`` option: the model's first conv layer (resolved per model)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode (as the engine explains it), its flags put back afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def conv_names(model: nn.Module) -> List[str]:
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def concrete_options(model: nn.Module, options: Mapping[str, Any]) -> Dict[str, Any]:
    """``options`` with the :data:`FIRST_CONV` placeholder replaced by the model's first conv layer."""
    return {k: (conv_names(model)[0] if v == FIRST_CONV else v) for k, v in options.items()}


def oracle_saliency(model: nn.Module, x: Tensor, t: Optional[Tensor], o: Mapping[str, Any]) -> Tensor:
    return captum_attr().Saliency(model).attribute(x, target=t, abs=True)


def oracle_input_x_gradient(model: nn.Module, x: Tensor, t: Optional[Tensor], o: Mapping[str, Any]) -> Tensor:
    return captum_attr().InputXGradient(model).attribute(x, target=t)


def oracle_integrated_gradients(model: nn.Module, x: Tensor, t: Optional[Tensor], o: Mapping[str, Any]) -> Tensor:
    baseline = o.get("baseline")
    return captum_attr().IntegratedGradients(model).attribute(
        x, baselines=0.0 if baseline is None else baseline, target=t,
        n_steps=o.get("n_steps", 32), method=o.get("method", "gausslegendre"),
    )


def oracle_smoothgrad(model: nn.Module, x: Tensor, t: Optional[Tensor], o: Mapping[str, Any]) -> Tensor:
    # Captum draws its noise from the global RNG, lightning_xai from a generator seeded with ``seed``:
    # seeding the global RNG with the same seed gives the same noise (in a fork: the caller's RNG stays)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(o.get("seed", 0))
        captum = captum_attr()
        return captum.NoiseTunnel(captum.Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=o.get("n_samples", 16), stdevs=o.get("noise", 0.15), target=t
        )


def oracle_grad_cam(model: nn.Module, x: Tensor, t: Optional[Tensor], o: Mapping[str, Any]) -> Tensor:
    name = o.get("layer") or conv_names(model)[-1]  # default: the last conv layer
    layer = dict(model.named_modules())[name]
    cam = captum_attr().LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
    if not o.get("upsample", True):
        return cam
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[x.dim() - 2]
    return captum_attr().LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode=mode).expand_as(x)


def _occlusion_shape(value: Any, sample: Sequence[int]) -> Tuple[int, ...]:
    """lightning_xai's documented window/stride spelling -> one size per non-batch dimension."""
    if len(sample) == 1:  # tabular
        return (1,) if value is None else (int(value),) if isinstance(value, int) else tuple(value)
    if value is None:  # whole channels x 1/8 of each spatial size
        return (sample[0],) + tuple(max(1, d // 8) for d in sample[1:])
    if isinstance(value, int):
        return (sample[0],) + (value,) * (len(sample) - 1)
    value = tuple(value)
    return (sample[0],) + value if len(value) == len(sample) - 1 else value


def oracle_occlusion(model: nn.Module, x: Tensor, t: Optional[Tensor], o: Mapping[str, Any]) -> Tensor:
    sample = tuple(x.shape[1:])
    window = _occlusion_shape(o.get("window"), sample)
    stride = _occlusion_shape(o.get("stride"), sample) if o.get("stride") is not None else window
    return captum_attr().Occlusion(model).attribute(
        x, sliding_window_shapes=window, strides=stride, target=t, baselines=o.get("baseline", 0.0)
    )


@dataclass(frozen=True)
class MethodCase:
    """A method as the method table names it, one set of its options, and its oracle."""

    method: str
    options: Mapping[str, Any] = field(default_factory=dict)
    oracle: Optional[Callable[[nn.Module, Tensor, Optional[Tensor], Mapping[str, Any]], Tensor]] = None
    needs_conv: bool = False
    label: str = ""
    #: the DDP tolerance when not the tester's ``DDP_RTOL`` (see ``OCCLUSION_DDP_RTOL``)
    ddp_rtol: Optional[float] = None
    #: the model cases (by name) this method case applies to; empty: every one
    models: Tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return self.method + (f".{self.label}" if self.label else "")


# ----------------------------------------------------------------------------------------------
# the targets, resolved independently of the engine
# ----------------------------------------------------------------------------------------------
def least_likely(outputs: Tensor, targets: Optional[Tensor]) -> Tensor:
    """A callable target rule: each sample's least likely class."""
    return outputs.argmin(1)


def target_id(target: Any) -> str:
    if callable(target):
        return getattr(target, "__name__", "callable")
    return f"class{target}" if isinstance(target, int) else str(target)


def reference_target(model: nn.Module, probe: ProbeSet, target: Any) -> Tensor:
    """The class each probe sample is explained for, worked out here (the model in eval mode)."""
    with eval_mode(model), torch.no_grad():
        outputs = F.call_model(model, probe.inputs)
    if target == "predicted":
        return outputs.argmax(1)
    if target == "true":
        return probe.targets.long()
    if isinstance(target, int):
        return torch.full((len(probe),), target, dtype=torch.long)
    return torch.as_tensor(target(outputs, probe.targets)).long()


# ----------------------------------------------------------------------------------------------
# DDP plumbing
# ----------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def all_gather(t: Tensor) -> Tensor:
    """Every rank's ``t`` stacked on a new first axis (what :class:`Shard` expects of ``gather``)."""
    parts = [torch.empty_like(t) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, t.contiguous())
    return torch.stack(parts)


def _ddp_worker(rank: int, tester_classes: Sequence[type], port: int, out_dir: str) -> None:
    """One rank: every tester's DDP grid, sharded; each rank saves what it gathered."""
    atexit.register(_let_gloo_workers_finish)  # every DDP test rank (see tests/ddp_exit.py)
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        shard = Shard(rank, 2, all_gather)
        maps = {}
        for i, cls in enumerate(tester_classes):
            tester = cls()
            tester.prepare()
            for case in tester.MODELS:
                for key, (n, method, chunk, target) in tester.ddp_grid(case).items():
                    maps[(i, case.name, key)] = tester.engine_maps(case, n, method, chunk, target, shard)
        torch.save(maps, os.path.join(out_dir, f"rank{rank}.pt"))
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def run_ddp(testers: Sequence["AttributionTester"]) -> int:
    """Every DDP case of every tester in ONE 2-process gloo job (a spawn and its imports cost seconds
    per process): both ranks' gathered maps must equal the single-process maps. Returns the number
    of cases checked. Each tester's :meth:`~AttributionTester.prepare` runs in each rank first."""
    with tempfile.TemporaryDirectory() as d:
        torch.multiprocessing.spawn(
            _ddp_worker, args=([type(t) for t in testers], free_port(), d), nprocs=2, join=True
        )
        got = [torch.load(os.path.join(d, f"rank{r}.pt")) for r in (0, 1)]
    failures, count = [], 0
    for i, tester in enumerate(testers):
        for case in tester.MODELS:
            for key, (n, method, chunk, target) in tester.ddp_grid(case).items():
                single = tester.engine_maps(case, n, method, chunk, target)
                tol = tester.DDP_RTOL if method.ddp_rtol is None else method.ddp_rtol
                for rank in (0, 1):
                    err = rel_err(got[rank][(i, case.name, key)], single)
                    if not err <= tol:
                        failures.append(f"rank {rank} {type(tester).__name__} {case.name} {key}: rel err {err:.3g} > {tol:g}")
                count += 1
    assert not failures, "\n".join(failures)
    return count


#: Occlusion maps are differences of outputs, ``f(x) - f(x_occluded)``: a last-bit difference in an
#: output from a different batch size (a rank's forward holds 4 of the 7 rows; float32 kernels do
#: not promise the same bits for a row in batches of different sizes) is ~1e-6 of the map's maximum.
#: It is not the sharding: ``F.occlusion(model, x[:4])`` differs from ``F.occlusion(model, x)[:4]``
#: as much, in one process.
OCCLUSION_DDP_RTOL = 1e-5


# ----------------------------------------------------------------------------------------------
# the tester
# ----------------------------------------------------------------------------------------------
class AttributionTester:
    """The grid and the checks; see the module docstring."""

    MODELS: Tuple[ModelCase, ...] = (
        ModelCase("mlp", build_mlp),
        ModelCase("cnn", build_cnn, has_conv=True),
        ModelCase("two_conv", build_two_conv, has_conv=True),
        ModelCase("two_branch", build_two_branch, has_conv=True),
    )
    METHODS: Tuple[MethodCase, ...] = (
        MethodCase("saliency", oracle=oracle_saliency),
        MethodCase("input_x_gradient", oracle=oracle_input_x_gradient),
        MethodCase("integrated_gradients", {"n_steps": 8}, oracle_integrated_gradients, label="gl8"),
        MethodCase("integrated_gradients", {"n_steps": 6, "method": "riemann_trapezoid", "baseline": 0.1},
                   oracle_integrated_gradients, label="trapezoid6-b0.1"),
        MethodCase("smoothgrad", {"n_samples": 4, "noise": 0.2, "seed": 7}, oracle_smoothgrad, label="n4"),
        MethodCase("grad_cam", oracle=oracle_grad_cam, needs_conv=True),
        MethodCase("grad_cam", {"layer": FIRST_CONV, "upsample": False}, oracle_grad_cam, needs_conv=True,
                   label="first-conv-raw"),
        MethodCase("occlusion", oracle=oracle_occlusion, ddp_rtol=OCCLUSION_DDP_RTOL),
        MethodCase("occlusion", {"window": 3, "stride": 2, "baseline": 0.5}, oracle_occlusion, label="w3s2",
                   ddp_rtol=OCCLUSION_DDP_RTOL),
    )
    CHUNK_SIZES: Tuple[Optional[int], ...] = (None, 1, 3)
    TARGETS: Tuple[Any, ...] = ("predicted", "true", 1, least_likely)
    #: probe sizes of the DDP job: uneven on 2 ranks, and one row (rank 1 explains nothing)
    DDP_PROBE_SIZES: Tuple[int, ...] = (7, 1)
    #: chunk sizes of the DDP job (1 adds little to sharding but time; sizes >= the probe's are skipped)
    DDP_CHUNK_SIZES: Tuple[Optional[int], ...] = (None, 3)
    RTOL = 1e-5
    DDP_RTOL = 1e-6

    # ------------------------------------------------------------------ the grid
    def model_case(self, name: str) -> ModelCase:
        return next(m for m in self.MODELS if m.name == name)

    def methods_for(self, model: ModelCase) -> List[MethodCase]:
        return [
            m for m in self.METHODS if (model.has_conv or not m.needs_conv) and (not m.models or model.name in m.models)
        ]

    @classmethod
    def grid(cls) -> List[Any]:
        """``pytest.param(model, method, chunk_size, target)`` for every case, with readable ids."""
        tester = cls()
        return [
            pytest.param(model, method, chunk, target,
                         id=f"{model.name}-{method.id}-chunk{chunk}-{target_id(target)}")
            for model in cls.MODELS
            for method in tester.methods_for(model)
            for chunk in cls.CHUNK_SIZES
            for target in cls.TARGETS
        ]

    def ddp_grid(self, model: ModelCase) -> Dict[str, Tuple[int, MethodCase, Optional[int], Any]]:
        return {
            f"n{n}-{method.id}-chunk{chunk}-{target_id(target)}": (n, method, chunk, target)
            for n in self.DDP_PROBE_SIZES
            for method in self.methods_for(model)
            for chunk in self.DDP_CHUNK_SIZES
            if chunk is None or chunk < n
            for target in self.TARGETS
        }

    # ------------------------------------------------------------------ the two sides
    def engine_maps(
        self, model_case: ModelCase, n: int, method: MethodCase, chunk: Optional[int], target: Any,
        shard: Shard = Shard(), engine: Optional[AttributionEngine] = None, step: int = 0,
    ) -> Tensor:
        """The engine's maps (a fresh engine unless one is given)."""
        model, probe = model_case.build(n)
        engine = engine or AttributionEngine()
        calls = resolve_methods({method.method: concrete_options(model, method.options)})
        maps = engine.attributions(
            model, probe, calls, target=target, chunking=Chunking(chunk), shard=shard, step=step
        )
        return maps[method.method]

    _oracle_cache: Dict[Tuple[str, str, int, str, str], Tensor] = {}

    def reference_maps(self, model_case: ModelCase, n: int, method: MethodCase, target: Any) -> Tensor:
        """The oracle's maps (one computation per model, probe size, method case and target)."""
        key = (type(self).__qualname__, model_case.name, n, method.id, target_id(target))
        if key not in self._oracle_cache:
            model, probe = model_case.build(n)
            t = reference_target(model, probe, target)
            assert method.oracle is not None, f"{method.id} has no oracle"
            with eval_mode(model):
                inputs = F.map_tensors(lambda v: v.clone(), probe.inputs)
                ref = method.oracle(model, inputs, t, concrete_options(model, method.options))
            self._oracle_cache[key] = F.map_tensors(lambda v: v.detach(), ref)
        return self._oracle_cache[key]

    # ------------------------------------------------------------------ the checks
    def run_engine(self, model: ModelCase, method: MethodCase, chunk: Optional[int], target: Any) -> None:
        """The engine in one process equals the oracle."""
        n = model.probe_size
        ours = self.engine_maps(model, n, method, chunk, target)
        ref = self.reference_maps(model, n, method, target)
        err = rel_err(ours, ref)
        assert err <= self.RTOL, f"{model.name} {method.id} chunk={chunk} target={target_id(target)}: rel err {err:.3g}"

    def prepare(self) -> None:
        """Run in each DDP rank before its grid: a subclass registers its methods here."""

    def run_ddp(self, *others: "AttributionTester") -> int:
        """This tester's DDP grid (and ``others``'), in one 2-process job: see :func:`run_ddp`."""
        return run_ddp([self, *others])

    def run_cache(self, model: ModelCase, method: MethodCase) -> None:
        """Asking twice computes once; another target or step computes again, and gives the same maps."""
        engine = AttributionEngine()
        first = self.engine_maps(model, model.probe_size, method, None, "true", engine=engine)
        again = self.engine_maps(model, model.probe_size, method, 3, "true", engine=engine)  # chunk size: not in the key
        assert engine.computed[method.method] == 1, "asked twice, computed twice"
        assert rel_err(first, again) == 0
        self.engine_maps(model, model.probe_size, method, None, 0, engine=engine)
        assert engine.computed[method.method] == 2
        later = self.engine_maps(model, model.probe_size, method, None, "true", engine=engine, step=1)
        assert engine.computed[method.method] == 3
        assert rel_err(first, later) == 0  # the same weights: the same maps

    def run_hygiene(self, model_case: ModelCase, method: MethodCase) -> None:
        """The engine leaves the model and the global RNG exactly as they were, for every target rule."""
        model, probe = model_case.build(model_case.probe_size)
        frozen = next(iter(model.parameters()))
        frozen.requires_grad_(False)  # a mixed set of flags, to see each one put back
        next(iter(model.children())).eval()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        flags = [p.requires_grad for p in model.parameters()]
        modes = [m.training for m in model.modules()]
        rng = torch.get_rng_state()
        calls = resolve_methods({method.method: concrete_options(model, method.options)})
        for target in self.TARGETS:
            AttributionEngine().attributions(model, probe, calls, target=target, chunking=Chunking(3))
        assert torch.equal(torch.get_rng_state(), rng), "the global RNG state changed"
        assert [p.requires_grad for p in model.parameters()] == flags, "requires_grad flags changed"
        assert [m.training for m in model.modules()] == modes, "training flags changed"
        assert all(p.grad is None for p in model.parameters()), "a parameter .grad was written"
        after = model.state_dict()
        assert after.keys() == state.keys()
        changed = [k for k, v in state.items() if not torch.equal(after[k], v)]
        assert not changed, f"parameters/buffers changed: {changed}"


# ----------------------------------------------------------------------------------------------
# models of several inputs and of token ids (issue 15): the same checks, other tables
# ----------------------------------------------------------------------------------------------
class TwoInputNet(nn.Module):
    """An image, a vector of metadata and an integer class mask (it rides along, never attributed)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm1d(3)
        self.meta = nn.Linear(4, 3)
        self.fc = nn.Linear(2 * 6 * 6, 3)

    def forward(self, image: Tensor, meta: Tensor, mask: Tensor) -> Tensor:
        h = self.fc(torch.tanh(self.conv(image)).flatten(1)) * torch.sigmoid(self.bn(self.meta(meta)))
        return h.masked_fill(mask == 0, -1.0)


def _two_inputs(n: int) -> Tuple[Tensor, Tensor, Tensor]:
    mask = torch.ones(n, 3, dtype=torch.long)
    mask[1::3, 2] = 0
    return torch.randn(n, 1, 6, 6), torch.randn(n, 4), mask


def build_tuple_inputs(n: int) -> Tuple[nn.Module, ProbeSet]:
    """``model(image, meta, mask)``: a tuple probe."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        model = trained_batchnorm_1d(TwoInputNet())
        image, meta, mask = _two_inputs(n)
    return model.train(), ProbeSet((image, meta, mask), targets=_classes(n, 3))


def build_dict_inputs(n: int) -> Tuple[nn.Module, ProbeSet]:
    """``model(**{"image", "meta", "mask"})``: a dict probe."""
    model, probe = build_tuple_inputs(n)
    image, meta, mask = probe.inputs
    return model, ProbeSet({"image": image, "meta": meta, "mask": mask}, targets=probe.targets)


def trained_batchnorm_1d(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics (so that explaining in eval mode matters)."""
    with torch.no_grad():
        model.train()
        for _ in range(3):
            image, meta, mask = _two_inputs(8)
            model(image, meta, mask)
    return model


class TokenNet(nn.Module):
    """Token ids through an embedding (and a position embedding that reads no input), GRU, mean over tokens."""

    def __init__(self, vocab: int = 11, length: int = 6) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, 5)
        self.pos_emb = nn.Embedding(length, 5)
        self.rnn = nn.GRU(5, 6, batch_first=True)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(6, 3)

    def forward(self, ids: Tensor) -> Tensor:
        h, _ = self.rnn(self.tok_emb(ids) + self.pos_emb(torch.arange(ids.shape[1], device=ids.device)))
        return self.fc(self.drop(h.mean(1)))


def build_tokens(n: int) -> Tuple[nn.Module, ProbeSet]:
    """``(N, 6)`` token ids, some rows padded with 0."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = TokenNet()
        ids = torch.randint(1, 11, (n, 6))
        ids[1::2, 4:] = 0
    return model.train(), ProbeSet(ids, targets=_classes(n, 3))


def _positional(model: nn.Module, x: Any) -> Tuple[Callable[..., Tensor], Tuple[Tensor, ...], Tuple[Tensor, ...]]:
    """Captum's view of several inputs: a positional forward, the attributed inputs, the riding ones."""
    entries = F.input_entries(x)
    names = [k for k, _ in entries]

    def forward(*args: Tensor) -> Tensor:
        values = dict(zip([k for k, v in entries if v.is_floating_point()] + [k for k, v in entries if not v.is_floating_point()], args))
        return F.call_model(model, {k: values[k] for k in names} if isinstance(x, dict) else tuple(values[k] for k in names))

    floats = tuple(v for _, v in entries if v.is_floating_point())
    riding = tuple(v for _, v in entries if not v.is_floating_point())
    return forward, floats, riding


def _restructure(x: Any, maps: Sequence[Tensor]) -> Any:
    keys = [k for k, v in F.input_entries(x) if v.is_floating_point()]
    return F.structure_like(x, dict(zip(keys, maps)))


def captum_fed_kernel_shap(forward: Callable[..., Tensor], coalitions: Tensor) -> Any:
    """Captum's ``KernelShap``, drawing its coalitions (0/1 rows over every feature of every input) from
    ``coalitions`` instead of its sampler; Captum evaluates the model and fits its own regression."""
    captum = captum_attr()

    class FedKernelShap(captum.KernelShap):  # type: ignore[misc,name-defined]
        def kernel_shap_perturb_generator(self, original_inp: Any, **kwargs: Any) -> Iterator[Tensor]:
            for row in coalitions:
                yield row.view(1, -1).long()

    return FedKernelShap(forward)


def captum_fed_lime(forward: Callable[..., Tensor], coalitions: Tensor, alpha: float = 1.0,
                    kernel_width: float = 0.25) -> Any:
    """Captum's ``Lime`` with a ``SkLearnRidge(alpha)`` surrogate, lightning_xai's similarity
    (:func:`lightning_xai.functional.lime_weights`) and the coalitions given."""
    captum = captum_attr()
    from captum._utils.models.linear_model import SkLearnRidge

    def perturb(original_inp: Any, **kwargs: Any) -> Iterator[Tensor]:
        for row in coalitions:
            yield row.view(1, -1).long()

    def similarity(original: Any, perturbed: Any, interpretable: Tensor, **kwargs: Any) -> Tensor:
        return F.lime_weights(interpretable, kernel_width).float()

    return captum.Lime(forward, interpretable_model=SkLearnRidge(alpha=alpha), similarity_func=similarity,
                       perturb_func=perturb)


@contextmanager
def captum_noise(noise: Tensor, sizes: Sequence[int]) -> Iterator[None]:
    """``torch.normal`` as Captum's ``NoiseTunnel`` calls it (once per input, in order, with the standard
    deviation expanded to the noisy rows), handing out the next input's columns of ``noise`` ``(rows,
    sum(sizes))`` times the standard deviation: Captum given lightning_xai's draws, which span all the
    attributed inputs of a row together (one flat row per noisy copy)."""
    from unittest import mock

    parts = iter(noise.split(list(sizes), dim=1))

    def normal(mean: float, std: Tensor) -> Tensor:
        return next(parts).reshape(std.shape) * std + mean

    with mock.patch("torch.normal", normal):
        yield


def _feature_sizes(floats: Sequence[Tensor]) -> List[int]:
    return [int(v[0].numel()) for v in floats]


def structured_oracle(kind: str) -> Callable[[nn.Module, Any, Optional[Tensor], Mapping[str, Any]], Any]:
    """Captum on several inputs (a tuple of the attributed ones, ``additional_forward_args`` for the riding
    ones), or Captum's layer method on the token embedding summed over its last dimension.

    The samplers get lightning_xai's random numbers, as the single-input tests feed them
    (tests/test_perturbation.py): the features of several inputs are Captum's default, one per value,
    numbered across the inputs in turn, which is the flat row lightning_xai's methods see; coalitions,
    permutations (the global RNG seeded like the private generator), GradientSHAP's references and path
    points (``numpy.random`` patched) and the noise of SmoothGrad and GradientSHAP (:func:`captum_noise`)
    are the same numbers on both sides."""

    def oracle(model: nn.Module, x: Any, t: Optional[Tensor], o: Mapping[str, Any]) -> Any:
        captum = captum_attr()
        if isinstance(x, Tensor):  # token ids
            emb = model.tok_emb
            if kind == "integrated_gradients":
                return captum.LayerIntegratedGradients(model, emb).attribute(
                    x, baselines=torch.zeros_like(x), target=t, n_steps=o.get("n_steps", 32)
                ).sum(-1)
            if kind == "occlusion":
                with torch.no_grad():
                    f0 = model(x).gather(1, t[:, None])[:, 0]
                    cols = [f0 - model(torch.where(torch.arange(x.shape[1]) == j, 0, x)).gather(1, t[:, None])[:, 0]
                            for j in range(x.shape[1])]
                return torch.stack(cols, 1)
            a = captum.LayerGradientXActivation(model, emb, multiply_by_inputs=kind == "input_x_gradient").attribute(x, target=t)
            return (a.abs() if kind == "saliency" else a).sum(-1)
        forward, floats, riding = _positional(model, x)
        extra: Dict[str, Any] = {"additional_forward_args": riding} if riding else {}
        n, sizes = floats[0].shape[0], _feature_sizes(floats)
        if o.get("feature_mask") is not None:  # Captum's tuple of masks, one per attributed input, (1, *sample)
            given = dict(F.input_entries(o["feature_mask"]))
            keys = [k for k, v in F.input_entries(x) if v.is_floating_point()]
            extra["feature_mask"] = tuple(given[k].reshape((1,) + tuple(v.shape[1:])) for k, v in zip(keys, floats))
        if kind == "shapley_values":  # exact: every order of the features
            return _restructure(x, captum.ShapleyValues(forward).attribute(floats, target=t, **extra))
        if kind == "grad_cam":  # the conv layer reads the image only: the map goes to the image, no other input
            layer = dict(model.named_modules())[o.get("layer") or conv_names(model)[-1]]
            cam = captum.LayerGradCam(forward, layer).attribute(floats, target=t, relu_attributions=True, **extra)
            if not o.get("upsample", True):
                return cam
            (key, image), = [(k, v) for k, v in F.input_entries(x) if v.dim() == 4]
            up = captum.LayerAttribution.interpolate(cam, tuple(image.shape[2:]), interpolate_mode="bilinear")
            return F.structure_like(x, {key: up.expand_as(image)})
        if kind == "smoothgrad":
            samples, seed = o.get("n_samples", 16), o.get("seed", 0)
            z = torch.empty(n * samples * sum(sizes)).normal_(0.0, 1.0, generator=torch.Generator().manual_seed(seed))
            with captum_noise(z.view(n * samples, -1), sizes):
                maps = captum.NoiseTunnel(captum.Saliency(forward)).attribute(
                    floats, nt_type="smoothgrad", nt_samples=samples, stdevs=o.get("noise", 0.15), target=t, **extra
                )
            return _restructure(x, maps)
        if kind == "gradient_shap":
            from unittest import mock

            from lightning_xai.functional import perturbation as P

            samples, noise = o.get("n_samples", 16), float(o.get("noise", 0.0))
            eps, index, alpha = P._gradient_shap_draws(n * samples, (sum(sizes),), 1, noise, o.get("seed", 0), None,
                                                        floats[0].dtype)
            eps = torch.zeros(n * samples, sum(sizes)) if eps is None else eps
            with mock.patch("numpy.random.choice", lambda refs, size: index.numpy()), \
                 mock.patch("numpy.random.uniform", lambda low, high, size: alpha.double().numpy()), \
                 captum_noise(eps, sizes):
                maps = captum.GradientShap(forward).attribute(
                    floats, baselines=tuple(torch.zeros_like(v[:1]) for v in floats), target=t, n_samples=samples,
                    stdevs=1.0, **extra,  # the noise handed out is already in input units: times 1
                )
            return _restructure(x, maps)
        if kind in ("kernel_shap", "lime"):
            from lightning_xai.functional import perturbation as P

            g = torch.Generator().manual_seed(o.get("seed", 0))
            if kind == "kernel_shap":
                z = P._kernel_samples(sum(sizes), o.get("n_samples", 200), g)
                explainer = captum_fed_kernel_shap(forward, z)
            else:
                z = torch.rand(o.get("n_samples", 200), sum(sizes), generator=g) < 0.5
                explainer = captum_fed_lime(forward, z, o.get("alpha", 1.0), o.get("kernel_width", 0.25))
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "You are providing multiple inputs")
                maps = explainer.attribute(floats, target=t, n_samples=len(z), **extra)
            return _restructure(x, maps)
        if kind == "shapley_sampling":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(o.get("seed", 0))  # Captum: torch.randperm from the global RNG
                maps = captum.ShapleyValueSampling(forward).attribute(floats, target=t, n_samples=o.get("n_samples", 8), **extra)
            return _restructure(x, maps)
        if kind == "feature_ablation":
            return _restructure(x, captum.FeatureAblation(forward).attribute(floats, target=t, **extra))
        if kind == "saliency":
            maps = captum.Saliency(forward).attribute(floats, target=t, abs=True, **extra)
        elif kind == "input_x_gradient":
            maps = captum.InputXGradient(forward).attribute(floats, target=t, **extra)
        elif kind == "integrated_gradients":
            maps = captum.IntegratedGradients(forward).attribute(floats, target=t, n_steps=o.get("n_steps", 32), **extra)
        else:  # occlusion, default windows: whole channels x 1/8 of each spatial size; one feature of a vector
            shapes = tuple(_occlusion_shape(None, tuple(v.shape[1:])) for v in floats)
            maps = captum.Occlusion(forward).attribute(floats, sliding_window_shapes=shapes, strides=shapes, target=t, **extra)
        return _restructure(x, maps)

    return oracle


#: the model cases of several inputs (the token-id model has one input)
SEVERAL_INPUTS = ("tuple_inputs", "dict_inputs")
#: feature masks of the image (top and bottom halves: ids 0, 1) and the metadata (ids 2, 2, 3, and 0: its last
#: value and the image's top half are one feature spanning both inputs), as Captum's tuple ``feature_mask``
TUPLE_MASKS = (torch.tensor([[0] * 6] * 3 + [[1] * 6] * 3).view(1, 6, 6), torch.tensor([2, 2, 3, 0]))
DICT_MASKS = {"image": TUPLE_MASKS[0], "meta": TUPLE_MASKS[1]}


class StructuredTester(AttributionTester):
    """Models of several inputs (a tuple, a dict, with a riding integer mask) and of token ids."""

    MODELS = (
        ModelCase("tuple_inputs", build_tuple_inputs, has_conv=True),
        ModelCase("dict_inputs", build_dict_inputs, has_conv=True),
        ModelCase("token_ids", build_tokens),
    )
    METHODS = (
        MethodCase("saliency", oracle=structured_oracle("saliency")),
        MethodCase("input_x_gradient", oracle=structured_oracle("input_x_gradient")),
        MethodCase("integrated_gradients", {"n_steps": 8}, structured_oracle("integrated_gradients"), label="gl8"),
        MethodCase("occlusion", oracle=structured_oracle("occlusion"), ddp_rtol=OCCLUSION_DDP_RTOL),
        # several inputs only (tuple and dict): every other built-in method
        MethodCase("smoothgrad", {"n_samples": 3, "noise": 0.2, "seed": 7}, structured_oracle("smoothgrad"),
                   label="n3", models=SEVERAL_INPUTS),
        MethodCase("grad_cam", oracle=structured_oracle("grad_cam"), needs_conv=True, models=SEVERAL_INPUTS),
        MethodCase("grad_cam", {"upsample": False}, structured_oracle("grad_cam"), needs_conv=True, label="raw",
                   models=SEVERAL_INPUTS),
        # exact (2**4 coalitions of the masks' 4 features, one of them spanning both inputs): Captum's ShapleyValues.
        # Sampled, Captum's KernelShap fits its regression in float32 with the end points weighted 1e6, which
        # leaves ~1e-2 relative on 40 features and 64 coalitions (tests/test_structured_inputs.py)
        MethodCase("kernel_shap", {"n_samples": 16, "feature_mask": TUPLE_MASKS}, structured_oracle("shapley_values"),
                   label="exact-masks", models=("tuple_inputs",), ddp_rtol=OCCLUSION_DDP_RTOL),
        MethodCase("kernel_shap", {"n_samples": 16, "feature_mask": DICT_MASKS}, structured_oracle("shapley_values"),
                   label="exact-masks", models=("dict_inputs",), ddp_rtol=OCCLUSION_DDP_RTOL),
        MethodCase("lime", {"n_samples": 48, "seed": 5}, structured_oracle("lime"), label="n48",
                   models=SEVERAL_INPUTS, ddp_rtol=OCCLUSION_DDP_RTOL),
        MethodCase("shapley_sampling", {"n_samples": 2, "seed": 7}, structured_oracle("shapley_sampling"),
                   label="n2", models=SEVERAL_INPUTS, ddp_rtol=OCCLUSION_DDP_RTOL),
        MethodCase("gradient_shap", {"n_samples": 3, "seed": 11}, structured_oracle("gradient_shap"), label="n3",
                   models=SEVERAL_INPUTS),
        MethodCase("gradient_shap", {"n_samples": 3, "noise": 0.2, "seed": 11}, structured_oracle("gradient_shap"),
                   label="n3-noise0.2", models=SEVERAL_INPUTS),
        MethodCase("feature_ablation", oracle=structured_oracle("feature_ablation"), models=SEVERAL_INPUTS,
                   ddp_rtol=OCCLUSION_DDP_RTOL),
        MethodCase("feature_ablation", {"feature_mask": (TUPLE_MASKS[0], TUPLE_MASKS[1], None)},
                   structured_oracle("feature_ablation"), label="masks", models=("tuple_inputs",),
                   ddp_rtol=OCCLUSION_DDP_RTOL),
    )
