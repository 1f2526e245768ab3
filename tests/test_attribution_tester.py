"""The attribution engine over the tester's grid: models x methods x chunk sizes x targets, in one
process and in 2-process DDP, against Captum (see tests/testers.py)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("captum.attr")

from lightning_xai import functional as F  # noqa: E402
from lightning_xai import register_method  # noqa: E402

from .testers import AttributionTester, MethodCase, StructuredTester, captum_attr, run_ddp  # noqa: E402

TESTER = AttributionTester()


@pytest.mark.parametrize("model,method,chunk,target", AttributionTester.grid())
def test_engine_equals_oracle(model, method, chunk, target):
    TESTER.run_engine(model, method, chunk, target)


_MODEL_METHOD = [
    pytest.param(model, method, id=f"{model.name}-{method.id}")
    for model in AttributionTester.MODELS
    for method in TESTER.methods_for(model)
]


@pytest.mark.parametrize("model,method", _MODEL_METHOD)
def test_engine_computes_once(model, method):
    TESTER.run_cache(model, method)


@pytest.mark.parametrize("model,method", _MODEL_METHOD)
def test_engine_leaves_model_and_rng_alone(model, method):
    TESTER.run_hygiene(model, method)


# ----------------------------------------------------------------------------------------------
# extending the tester: a user method, registered by name, with its own oracle
# ----------------------------------------------------------------------------------------------
def gradient_squared(model, inputs, target=None, *, chunk_size=None):
    """A user method: the squared input gradient."""
    return F.saliency(model, inputs, target, chunk_size=chunk_size).pow(2)


def oracle_gradient_squared(model, x, t, options):
    return captum_attr().Saliency(model).attribute(x, target=t, abs=False).pow(2)


class GradientSquaredTester(AttributionTester):
    """Later issues extend the tester like this: longer tables, the same checks."""

    METHODS = (MethodCase("gradient_squared", oracle=oracle_gradient_squared),)

    def prepare(self):  # in each DDP rank: the method is registered there too
        register_method("gradient_squared", gradient_squared, overwrite=True)


@pytest.fixture
def gradient_squared_registered():
    GradientSquaredTester().prepare()
    yield
    F.unregister_method("gradient_squared")


@pytest.mark.parametrize("model", AttributionTester.MODELS, ids=lambda m: m.name)
def test_registered_method_over_the_grid(model, gradient_squared_registered):
    tester = GradientSquaredTester()
    (method,) = tester.methods_for(model)
    for chunk in tester.CHUNK_SIZES:
        for target in tester.TARGETS:
            tester.run_engine(model, method, chunk, target)
    tester.run_cache(model, method)
    tester.run_hygiene(model, method)


STRUCTURED = StructuredTester()


@pytest.mark.parametrize("model,method,chunk,target", StructuredTester.grid())
def test_engine_equals_oracle_on_several_inputs_and_token_ids(model, method, chunk, target):
    STRUCTURED.run_engine(model, method, chunk, target)


@pytest.mark.parametrize(
    "model,method",
    [pytest.param(m, k, id=f"{m.name}-{k.id}") for m in StructuredTester.MODELS for k in STRUCTURED.methods_for(m)],
)
def test_engine_caches_and_leaves_alone_several_inputs_and_token_ids(model, method):
    STRUCTURED.run_cache(model, method)
    STRUCTURED.run_hygiene(model, method)


#: every tester whose DDP grid runs in the one DDP job of this module (spawning costs seconds)
DDP_TESTERS = (TESTER, GradientSquaredTester(), STRUCTURED)


def test_ddp_gathers_the_single_process_maps(gradient_squared_registered):
    """Every tester's grid on every model, 2 gloo processes, one job."""
    assert run_ddp(DDP_TESTERS) == sum(len(t.ddp_grid(m)) for t in DDP_TESTERS for m in t.MODELS)


def test_registered_method_is_not_captum_saliency():
    """The oracle is not vacuous: squared gradients differ from saliency on the same model."""
    model, probe = AttributionTester.MODELS[0].build(7)
    t = torch.zeros(7, dtype=torch.long)
    assert not torch.allclose(gradient_squared(model.eval(), probe.inputs, t), F.saliency(model, probe.inputs, t))
