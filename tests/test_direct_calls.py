"""Each built-in method called directly (``F.saliency``, ``F.integrated_gradients``, ...) takes what
``F.attribute`` takes: token ids, several inputs; integer inputs without an embedding get advice that fits."""

from __future__ import annotations

import pytest
import torch

from lightning_xai import functional as F

from .test_sample_rows import Masked, Tokens, _inputs

OPTIONS = {
    "integrated_gradients": {"n_steps": 6},
    "smoothgrad": {"n_samples": 3, "seed": 1},
    "occlusion": {},
    "kernel_shap": {"n_samples": 24, "seed": 1},
    "lime": {"n_samples": 24, "seed": 1},
    "shapley_sampling": {"n_samples": 2, "seed": 1},
    "gradient_shap": {"n_samples": 3, "seed": 1},
    "feature_ablation": {},
    "grad_cam": {"layer": "conv"},
}


@pytest.mark.parametrize("method", F.METHODS)
def test_direct_calls_on_token_ids_and_several_inputs_equal_attribute(method):
    options = OPTIONS.get(method, {})
    direct = getattr(F, method)
    if method != "grad_cam":  # the token model has no layer with a map to upsample
        ids, y = torch.tensor([[3, 4, 5, 0], [1, 2, 0, 0], [8, 7, 6, 5]]), torch.tensor([0, 2, 1])
        got = direct(Tokens(), ids, y, **options)
        assert got.shape == ids.shape
        assert torch.allclose(got, F.attribute(Tokens(), ids, y, method, **options), atol=1e-6)
    inputs, t = _inputs(), torch.tensor([0, 1, 2, 1])
    got = direct(Masked(), inputs, t, **options)
    want = F.attribute(Masked(), inputs, t, method, **options)
    assert got[2] is None and want[2] is None
    assert all((g is None and w is None) or torch.allclose(g, w, atol=1e-6) for g, w in zip(got[:2], want[:2]))
    assert got[0] is not None


def test_integer_inputs_without_an_embedding_get_advice_that_fits():
    net = torch.nn.Linear(3, 2)
    with pytest.raises(TypeError, match="Token ids are attributed at the nn.Embedding.*this model has none: name it with embedding="):
        F.saliency(net, torch.ones(2, 3, dtype=torch.long), 0)


def test_the_convergence_delta_is_for_one_tensor():
    with pytest.raises(ValueError, match="return_convergence_delta is computed for one floating-point tensor"):
        F.integrated_gradients(Tokens(), torch.tensor([[3, 4, 0]]), 0, return_convergence_delta=True)
