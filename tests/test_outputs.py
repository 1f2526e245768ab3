"""``output=``: models that return tuples, dicts or objects, and callables that reduce structured outputs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_xai import ProbeSet
from lightning_xai import checks as C
from lightning_xai import functional as F
from lightning_xai.callbacks import AttributionMonitor, FeatureDriftMonitor, SanityGate
from lightning_xai.engine import AttributionEngine

from .fixtures import LitClassifier, SmallCNN, image_data, trainer


class Structured(nn.Module):
    """SmallCNN whose forward returns ``kind``: a tuple, a dict or an object holding the logits."""

    def __init__(self, kind: str, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = SmallCNN()
        self.kind = kind

    def forward(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
        logits = self.net(x)
        aux = x.flatten(1).mean(1)
        if self.kind == "tuple":
            return logits, aux
        if self.kind == "dict":
            return {"logits": logits, "aux": aux}
        return SimpleNamespace(logits=logits, aux=aux)


SELECT = {"tuple": 0, "dict": "logits", "object": "logits"}
METHODS = {
    "saliency": {},
    "input_x_gradient": {},
    "integrated_gradients": {"n_steps": 8},
    "smoothgrad": {"n_samples": 4},
    "grad_cam": {"layer": "net.conv2"},
    "occlusion": {"window": 4},
    "kernel_shap": {"n_samples": 16},
}


def _x(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", ["tuple", "dict", "object"])
def test_every_method_explains_the_selected_output(kind):
    model, x = Structured(kind), _x()
    plain = model.net
    for method, opts in METHODS.items():
        if method == "grad_cam":  # the layer's name is the structured model's own
            ref = F.attribute(plain, x, 2, method, layer="conv2")
        else:
            ref = F.attribute(plain, x, 2, method, **opts)
        for output in (SELECT[kind], lambda out, kind=kind: out[0] if kind == "tuple" else out["logits"] if kind == "dict" else out.logits):
            got = F.attribute(model, x, 2, method, output=output, **opts)
            assert torch.allclose(got, ref, atol=1e-6), (method, output)


def test_a_dict_output_without_output_is_a_clear_error():
    model = Structured("dict")
    with pytest.raises(ValueError, match=r"output='logits'") as err:
        F.saliency(model, _x(), 0)
    assert "dim" not in str(err.value) and "Tensor(3, 4)" in str(err.value)
    with pytest.raises(ValueError, match=r"output=0"):
        F.integrated_gradients(Structured("tuple"), _x(), 0, n_steps=4)
    with pytest.raises(ValueError, match="not a key"):
        F.saliency(model, _x(), 0, output="probs")
    with pytest.raises(TypeError, match="output must be"):
        F.saliency(model, _x(), 0, output=1.5)


def test_grad_cam_layer_names_are_unchanged_by_the_output_wrapper():
    model = Structured("tuple")
    wrapped = F.OutputSelected(model, 0)
    assert F.conv_layer_names(wrapped) == ["net.conv1", "net.conv2"]
    assert F.resolve_layer(wrapped, "net.conv1")[1] is model.net.conv1
    cam = F.grad_cam(model, _x(), 1, layer="net.conv1", output=0, upsample=False)
    assert torch.allclose(cam, F.grad_cam(model.net, _x(), 1, layer="conv1", upsample=False))


def test_a_callable_reduces_a_segmentation_map_to_one_score():
    torch.manual_seed(0)
    seg = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 1))  # (N, 2, H, W)
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[2:5, 2:5] = True

    def region_mean(out: torch.Tensor) -> torch.Tensor:
        return out[:, :, region].mean(-1)  # (N, classes): each class's mean logit in the region

    captum = pytest.importorskip("captum.attr")
    x = _x()
    ref = captum.Saliency(lambda v: region_mean(seg(v))).attribute(x, target=1, abs=True)
    assert torch.allclose(F.saliency(seg, x, 1, output=region_mean), ref, atol=1e-6)


def test_the_engine_caches_per_output():
    model, probe = Structured("dict"), ProbeSet(_x(4), targets=torch.tensor([0, 1, 2, 3]))
    engine = AttributionEngine()
    calls = F.resolve_methods(["saliency", "integrated_gradients"])
    maps = engine.attributions(model, probe, calls, output="logits")
    ref = AttributionEngine().attributions(model.net, probe, calls)
    for m in calls:
        assert torch.allclose(maps[m], ref[m], atol=1e-6)
    engine.attributions(model, probe, calls, output="logits")
    assert engine.computed["saliency"] == 1
    aux = engine.attributions(model, probe, F.resolve_methods("saliency"), output="aux")
    assert engine.computed["saliency"] == 2 and not torch.allclose(aux["saliency"], maps["saliency"])
    with pytest.raises(ValueError, match="output="):
        engine.attributions(model, probe, calls)


def test_checks_run_on_the_selected_output():
    model, probe = Structured("tuple"), ProbeSet(_x(4), targets=torch.tensor([0, 1, 2, 3]))
    results = C.run([C.Completeness(n_steps=8), C.ParameterRandomization(), C.RandomLogit()], model, probe, output=0)
    assert len(results) == 3 and all(r.value == r.value for r in results)
    with pytest.raises(ValueError, match="output=0"):
        C.run([C.ParameterRandomization()], model, probe)


class LitStructured(LitClassifier):
    def forward(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
        return {"logits": self.net(x), "aux": x.mean()}

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        return nn.functional.cross_entropy(self(x)["logits"], y)

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        self.log("val/loss", nn.functional.cross_entropy(self(x)["logits"], y))


def test_a_callback_without_output_fails_at_setup_naming_it(tmp_path):
    ds = image_data(16)
    monitor = AttributionMonitor(ProbeSet.from_dataset(ds, n=4), methods=["saliency"])
    with pytest.raises(ValueError, match=r"AttributionMonitor: the model returns dict\(logits: Tensor\(2, 4\).*output='logits'"):
        trainer(tmp_path, [monitor], max_epochs=1, logger=False).fit(
            LitStructured(SmallCNN()), DataLoader(ds, batch_size=8), DataLoader(ds, batch_size=8)
        )


def test_callbacks_explain_the_selected_output(tmp_path):
    ds = image_data(16)
    probe = ProbeSet.from_dataset(ds, n=4)
    monitor = AttributionMonitor(probe, methods=["saliency", "grad_cam"], target="true", output="logits")
    drift = FeatureDriftMonitor(probe, method="saliency", target="true", output="logits")
    gate = SanityGate(probe, checks=[C.ParameterRandomization()], target="true", output="logits", action="warn")
    assert monitor.state_key != AttributionMonitor(probe, methods=["saliency", "grad_cam"], target="true").state_key
    model = LitStructured(SmallCNN())
    trainer(tmp_path, [monitor, drift, gate], max_epochs=1, logger=False).fit(
        model, DataLoader(ds, batch_size=8), DataLoader(ds, batch_size=8)
    )
    ref = F.saliency(model.net.eval(), probe.inputs, probe.targets)
    assert torch.allclose(monitor.last_attributions["saliency"], ref, atol=1e-6)
