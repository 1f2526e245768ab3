"""The fast paths keep the numbers: Captum agreement through every new code path, and the savings are real.

Covers the fused ``target="predicted"`` pass, the one-check-per-call target validation, the slice fast
paths of integrated gradients and occlusion (and the gather path next to them), Grad-CAM without the
activation copy (and with it, when a later op changes the layer's output in place), the in-place
SmoothGrad noise, the cached probe fingerprint and device copies, the automatic chunk size, and the
one-encode TensorBoard image path.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

captum_attr = pytest.importorskip("captum.attr")

import pytorch_lightning as pl  # noqa: E402

from lightning_xai import ProbeSet  # noqa: E402
from lightning_xai import functional as F  # noqa: E402
from lightning_xai.callbacks import AttributionMonitor  # noqa: E402
from lightning_xai.callbacks._cache import cache_for  # noqa: E402

from .fixtures import Classifier, trainer  # noqa: E402

TOL = dict(rtol=1e-4, atol=1e-6)


def cnn(inplace: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=inplace),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=inplace),  # "2" is the Grad-CAM layer
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5),
    )
    return net.eval()


@pytest.fixture(scope="module")
def data():
    x = torch.randn(7, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    ref = cnn(inplace=False)
    with torch.no_grad():
        pred = ref(x).argmax(1)
    return x, pred


def captum_maps(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> dict:
    ca = captum_attr
    out = {
        "saliency": ca.Saliency(model).attribute(x.clone(), target=t, abs=True),
        "input_x_gradient": ca.InputXGradient(model).attribute(x.clone(), target=t),
        "integrated_gradients": ca.IntegratedGradients(model).attribute(
            x.clone(), target=t, n_steps=6, method="gausslegendre"
        ),
        "grad_cam": ca.LayerGradCam(model, model[2]).attribute(x.clone(), target=t, relu_attributions=True),
        "occlusion": ca.Occlusion(model).attribute(
            x.clone(), sliding_window_shapes=(3, 3, 3), strides=(3, 2, 2), baselines=0.0, target=t
        ),
    }
    torch.manual_seed(0)  # Captum draws SmoothGrad noise from the global generator, ours from a private one
    out["smoothgrad"] = ca.NoiseTunnel(ca.Saliency(model)).attribute(
        x.clone(), nt_type="smoothgrad", nt_samples=4, stdevs=0.15, target=t
    )
    return {k: v.detach() for k, v in out.items()}


def ours(model: nn.Module, x: torch.Tensor, target, chunk) -> dict:
    return {
        "saliency": F.saliency(model, x, target, chunk_size=chunk),
        "input_x_gradient": F.input_x_gradient(model, x, target, chunk_size=chunk),
        "integrated_gradients": F.integrated_gradients(model, x, target, n_steps=6, chunk_size=chunk),
        "grad_cam": F.grad_cam(model, x, target, layer="2", upsample=False, chunk_size=chunk),
        "occlusion": F.occlusion(model, x, target, window=3, stride=(2, 2), chunk_size=chunk),
        "smoothgrad": F.smoothgrad(model, x, target, n_samples=4, noise=0.15, seed=0, chunk_size=chunk),
    }


@pytest.mark.parametrize("inplace", [False, True], ids=["plain", "inplace-relu"])
@pytest.mark.parametrize("chunk", [None, 3, 10], ids=["chunk-all", "chunk-3", "chunk-10"])
@pytest.mark.parametrize("target_kind", ["tensor", "predicted"])
def test_every_method_matches_captum_through_the_fast_paths(data, inplace, chunk, target_kind):
    x, pred = data
    reference = captum_maps(cnn(inplace=False), x, pred)
    model = cnn(inplace=inplace)
    got = ours(model, x, pred if target_kind == "tensor" else "predicted", chunk)
    for method, expected in reference.items():
        torch.testing.assert_close(got[method], expected, **TOL, msg=lambda m: f"{method}: {m}")


def test_predicted_target_is_read_off_the_one_pass(data):
    x, pred = data
    model = cnn(inplace=False)
    with F.count_passes() as c:
        maps, outputs = F.attribute_many(model, x, "predicted", ["saliency", "grad_cam"], layer="2", return_outputs=True)
    assert (c.forward_calls, c.backward_calls) == (1, 1)
    with torch.no_grad():
        torch.testing.assert_close(outputs, model(x), rtol=0, atol=0)
    explicit = F.attribute_many(model, x, pred, ["saliency", "grad_cam"], layer="2")
    for k in explicit:
        assert torch.equal(maps[k], explicit[k])
    # the path methods resolve it with one forward of the inputs, then run their passes as usual
    with F.count_passes() as c:
        F.integrated_gradients(model, x, "predicted", n_steps=4)
    assert (c.forward_calls, c.backward_calls, c.forward_rows) == (5, 4, 5 * len(x))
    with F.count_passes() as c:
        F.occlusion(model, x, "predicted", window=4)
    assert c.forward_calls == 1 + 4  # the unoccluded forward gives the target; 2 x 2 window positions


def test_target_errors_are_unchanged_and_checked_once(data):
    x, _ = data
    model = cnn(inplace=False)
    with pytest.raises(ValueError, match=r"target class 9 is out of range: the model returns 5 classes"):
        F.integrated_gradients(model, x, torch.tensor([0, 1, 2, 3, 4, 0, 9]), n_steps=3, chunk_size=2)
    with pytest.raises(ValueError, match=r"target class -1 is out of range"):
        F.saliency(model, x, torch.tensor([0, 1, 2, 3, 4, 0, -1]), chunk_size=3)
    with pytest.raises(ValueError, match=r"target 'argmax' is not understood: pass 'predicted'"):
        F.saliency(model, x, "argmax")


def test_grad_cam_copies_the_activation_only_when_a_later_op_changes_it_in_place(data):
    x, pred = data
    from lightning_xai.functional.attribution import _CLONE_LAYERS

    plain, inplace = cnn(inplace=False), cnn(inplace=True)
    F.grad_cam(plain, x, pred, layer="2")
    assert plain[2] not in _CLONE_LAYERS
    with F.count_passes() as c:
        first = F.grad_cam(inplace, x, pred, layer="2")
    assert inplace[2] in _CLONE_LAYERS and c.forward_calls == 2  # noticed, pass made again with a copy
    with F.count_passes() as c:
        again = F.grad_cam(inplace, x, pred, layer="2")
    assert c.forward_calls == 1 and torch.equal(first, again)
    torch.testing.assert_close(first, F.grad_cam(plain, x, pred, layer="2"), rtol=0, atol=0)
    assert not inplace[2]._forward_hooks and not plain[2]._forward_hooks


def test_inference_tensors_are_copied_normal_tensors_are_not(data):
    x, pred = data
    model = cnn(inplace=False)
    expected = F.input_x_gradient(model, x, pred)
    with torch.inference_mode():
        xi = x.clone()
        got = F.input_x_gradient(model, xi, pred)
        ig = F.integrated_gradients(model, xi, pred, n_steps=3)
    assert torch.equal(got, expected)
    assert torch.equal(ig, F.integrated_gradients(model, x, pred, n_steps=3))
    assert not x.requires_grad and x.grad is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_smoothgrad_noise_is_the_documented_draw_in_every_dtype(dtype):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)
    x = torch.randn(5, 6).to(dtype)
    got = F.smoothgrad(net, x, 1, n_samples=4, noise=0.3, seed=7, chunk_size=20)  # one pass, as below
    g = torch.Generator().manual_seed(7)
    noisy = x.repeat_interleave(4, 0) + torch.normal(0.0, torch.full((20, 6), 0.3, dtype=dtype), generator=g)
    noisy.requires_grad_(True)
    (grad,) = torch.autograd.grad(net(noisy)[:, 1].sum(), noisy)
    expected = torch.zeros_like(x).index_add_(0, torch.arange(20) // 4, grad.abs()) / 4
    assert torch.equal(got, expected)


def test_probe_is_fixed_and_its_fingerprint_and_device_copies_are_cached(monkeypatch):
    probe = ProbeSet(torch.randn(4, 3), targets=torch.tensor([0, 1, 2, 0]))
    fp = probe.fingerprint()
    import lightning_xai.probe as probe_module

    calls = []
    real_sha1 = probe_module.hashlib.sha1
    monkeypatch.setattr(probe_module.hashlib, "sha1", lambda *a: calls.append(1) or real_sha1(*a))
    assert probe.fingerprint() == fp and not calls  # cached: nothing hashed again
    with pytest.raises(AttributeError):
        probe.inputs = torch.zeros(4, 3)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        probe.targets = None  # type: ignore[misc]
    probe.inputs.mul_(2)  # changed in place anyway: noticed, never a stale fingerprint
    assert probe.fingerprint() != fp and len(calls) == 1
    module64 = nn.Linear(3, 2).double()
    a = probe.inputs_for(module64)
    assert a.dtype == torch.float64 and probe.inputs_for(module64) is a
    torch.testing.assert_close(a, probe.inputs.double())
    probe.inputs.add_(1)
    b = probe.inputs_for(module64)
    assert b is not a and torch.equal(b, probe.inputs.double())
    assert probe.inputs_for(nn.Linear(3, 2)) is probe.inputs  # same device and dtype: no copy at all
    # a bfloat16 probe can be fingerprinted (numpy has no bfloat16)
    assert len(ProbeSet(torch.randn(2, 3).bfloat16()).fingerprint()) == 16


class _CountForwards(pl.Callback):
    """Counts the model's forward calls (and their rows) made by the callbacks listed after it."""

    def __init__(self) -> None:
        self.rows: list = []
        self.active = False

    def setup(self, trainer, pl_module, stage):  # type: ignore[no-untyped-def]
        pl_module.register_forward_pre_hook(lambda m, args: self.rows.append(args[0].shape[0]) if self.active else None)

    def on_validation_epoch_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        self.active = True


class _Stop(pl.Callback):
    def __init__(self, counter: _CountForwards) -> None:
        self.counter = counter
        self.epochs: list = []

    def on_validation_epoch_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        self.counter.active = False
        self.epochs.append(list(self.counter.rows))
        self.counter.rows.clear()


def _fit(callbacks, tmp_path, batch_size=8, logger=False, epochs=1):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 3, 8, 8, generator=g), torch.randint(0, 5, (48,), generator=g)
    ds = TensorDataset(x, y)
    tr = trainer(tmp_path, callbacks, epochs, logger=logger, deterministic=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr.fit(Classifier(cnn(inplace=False)), DataLoader(ds, batch_size=batch_size), DataLoader(ds, batch_size=48))
    return tr, ds


def test_monitor_predicted_target_costs_one_forward_and_automatic_chunk_follows_the_batch(tmp_path):
    g = torch.Generator().manual_seed(1)
    probe = ProbeSet(torch.randn(12, 3, 8, 8, generator=g), targets=torch.arange(12) % 5)
    counter = _CountForwards()
    stop = _Stop(counter)
    trio = AttributionMonitor(probe, methods={"saliency": {}, "input_x_gradient": {}, "grad_cam": {"layer": "net.2"}}, log_images=False)
    # training batches of 8 < probe of 12: the automatic chunk size is 8 rows
    trainer, _ = _fit([counter, trio, stop], tmp_path, batch_size=8, epochs=2)
    assert trio.chunking.batch_rows == 8
    assert stop.epochs == [[8, 4], [8, 4]]  # one pass over the probe per epoch, in chunks of 8; no extra forward
    # the outputs kept for the epoch are the pass's own and equal a plain forward of the probe
    model = trainer.lightning_module
    with torch.no_grad():
        plain = model.eval()(probe.inputs)
    key = cache_for(trainer).outputs_key(probe, trio.dtype, trainer.global_step)
    torch.testing.assert_close(cache_for(trainer).get(key), plain)
    # and the maps are those of the functional API with the predicted class
    expected = F.attribute_many(model, probe.inputs, plain.argmax(1), ["saliency", "input_x_gradient", "grad_cam"], layer="net.2")
    for k, v in expected.items():
        torch.testing.assert_close(trio.last_attributions[k], v, rtol=1e-5, atol=1e-7)


def test_images_reach_tensorboard_pixel_for_pixel(tmp_path):
    from PIL import Image
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    probe = ProbeSet(torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2)), targets=torch.arange(4))
    seen = {}

    class Keep(AttributionMonitor):
        def _render(self, trainer, pl_module, method, attr):  # type: ignore[no-untyped-def]
            img = super()._render(trainer, pl_module, method, attr)
            seen[method] = img
            return img

    logger = TensorBoardLogger(tmp_path, name="tb")
    _fit([Keep(probe, methods=["saliency"])], tmp_path, logger=logger)
    logger.experiment.flush()
    acc = EventAccumulator(logger.log_dir, size_guidance={"images": 0}).Reload()
    (event,) = acc.Images("xai/attr/saliency")
    decoded = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    assert (event.height, event.width) == seen["saliency"].shape[:2]
    assert np.array_equal(decoded, seen["saliency"])


@pytest.mark.parametrize("baseline", [None, 0.5, "tensor"])
@pytest.mark.parametrize("chunk", [None, 4])
def test_integrated_gradients_baselines_match_captum(data, baseline, chunk):
    x, pred = data
    model = cnn(inplace=False)
    if baseline == "tensor":
        baseline = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    expected, expected_delta = captum_attr.IntegratedGradients(model).attribute(
        x.clone(), baselines=0.0 if baseline is None else baseline, target=pred, n_steps=5,
        method="gausslegendre", return_convergence_delta=True,
    )
    got, delta = F.integrated_gradients(
        model, x, pred, baseline=baseline, n_steps=5, chunk_size=chunk, return_convergence_delta=True
    )
    torch.testing.assert_close(got, expected.detach(), **TOL)
    torch.testing.assert_close(delta, expected_delta.detach().to(delta.dtype), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_noise_stream_hands_out_exactly_one_big_draw(dtype):
    from lightning_xai.functional.attribution import _NoiseStream

    for total, pieces, skip in [
        (7 * 4 * 3 * 8 * 8, [3 * 192] * 9 + [7 * 4 * 192 - 27 * 192], 0),  # image rows, chunk of 3 rows
        (5 * 4 * 6, [6, 6, 18, 90], 0),  # tabular rows: pieces not multiples of 16
        (100, [5, 11, 80, 4], 0),  # the last piece is shorter than 16
        (100, [1] * 60, 40),  # a shard after a skip that is not a multiple of 16
        (10, [3, 7], 0),  # fewer than 16 numbers in all
    ]:
        whole = torch.empty(total, dtype=dtype).normal_(0.0, 1.0, generator=torch.Generator().manual_seed(5))
        stream = _NoiseStream(total, torch.Generator().manual_seed(5), dtype, torch.device("cpu"))
        stream.skip(skip)
        got = torch.cat([stream.take(k) for k in pieces])
        assert torch.equal(got, whole[skip : skip + sum(pieces)]), (total, pieces, skip)


def test_smoothgrad_holds_one_chunk_of_noise_and_gives_the_same_map_for_every_chunk_size():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 3)).double().eval()
    x = torch.randn(9, 30, dtype=torch.float64)
    whole = F.smoothgrad(net, x, "predicted", n_samples=5, noise=0.4, seed=2)
    for chunk in (1, 3, 7, 16, 45):
        torch.testing.assert_close(
            F.smoothgrad(net, x, "predicted", n_samples=5, noise=0.4, seed=2, chunk_size=chunk), whole, rtol=1e-12, atol=0
        )
    # a share of the probe (DDP) gets the rows of the whole-probe draw
    part = F.smoothgrad(net, x[4:7], "predicted", n_samples=5, noise=0.4, seed=2, chunk_size=4, shard=(4, 9))
    torch.testing.assert_close(part, whole[4:7], rtol=1e-12, atol=0)
    # the biggest noise tensor alive is one chunk's, not the probe's n_samples copies
    sizes = []
    real_empty = torch.empty

    def spy(*args, **kw):
        out = real_empty(*args, **kw)
        sizes.append(out.numel())
        return out

    import lightning_xai.functional.attribution as attribution_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attribution_module.torch, "empty", spy)
        F.smoothgrad(net, x, "predicted", n_samples=5, noise=0.4, seed=2, chunk_size=5)
    assert sizes and max(sizes) <= 5 * 30 + 16


def test_numpy_sorting_path_equals_torch_sort():
    from lightning_xai.functional import _sort

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 500, generator=g, dtype=torch.float64).round(decimals=1)  # many ties
    x[2, 7] = float("nan")
    torch.testing.assert_close(_sort.sort_values(x), torch.sort(x, dim=-1).values, equal_nan=True, rtol=0, atol=0)
    order = _sort.argsort(x)
    torch.testing.assert_close(x.gather(-1, order), torch.sort(x, dim=-1).values, equal_nan=True, rtol=0, atol=0)
    flat = x[0].float()
    assert _sort.quantile(flat, 0.995) == pytest.approx(float(torch.quantile(flat, 0.995)), rel=1e-6)
    # the torch path (bfloat16 has no NumPy dtype) gives the same sorted values
    b = x[0].to(torch.bfloat16)
    assert torch.equal(_sort.sort_values(b), torch.sort(b).values)


def test_smoothgrad_leaves_a_passed_generator_where_a_whole_probe_draw_does():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2)).eval()
    x = torch.randn(5, 6)
    ends = []
    for share in (None, (1, 3)):
        g = torch.Generator().manual_seed(3)
        if share is None:
            F.smoothgrad(net, x, 1, n_samples=4, generator=g, chunk_size=3)
        else:
            F.smoothgrad(net, x[share[0] : share[1]], 1, n_samples=4, generator=g, chunk_size=3, shard=(share[0], 5))
        ends.append(torch.randn(3, generator=g))
    assert torch.equal(ends[0], ends[1])
    # zero-width inputs give a zero-width map
    assert F.smoothgrad(nn.Sequential(nn.Flatten(), nn.Linear(0, 2)), torch.zeros(3, 0), 0, n_samples=2).shape == (3, 0)
