"""The example trainers of issue 15: a planted shortcut token stopped by the gate; signals explained."""

from __future__ import annotations

import doctest
import importlib.util
import os
import sys
import warnings

import pytest
import torch

from tests.fixtures import read_events

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"{name}_example", os.path.join(ROOT, "example_trainers", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_text_shortcut_token_is_stopped_and_clean_run_passes(tmp_path):
    text = _load("text")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shortcut = text.main(["--logdir", str(tmp_path / "logs")])
        clean = text.main(["--clean", "--epochs", "3", "--logdir", str(tmp_path / "logs")])
    assert shortcut["stopped"] and shortcut["stopped_epoch"] == 2
    assert all(e["checks"][0]["value"] > 0.5 for e in shortcut["report"])  # the model reads zzz
    assert not clean["stopped"] and clean["epochs_run"] == 3
    assert all(e["checks"][0]["value"] < 0.2 for e in clean["report"])
    assert clean["val_acc"] > shortcut["val_acc"] + 0.15

    # in every probe sentence that holds zzz, zzz has the largest |attribution| of the shortcut model's
    # tokens, and of none of the clean model's
    ids = shortcut["probe"].inputs
    holds = (ids == text.SHORTCUT).any(1)
    assert int(holds.sum()) >= 8 and torch.equal(clean["probe"].inputs, ids)

    def top_token(attributions: torch.Tensor) -> torch.Tensor:
        return ids.gather(1, attributions.abs().masked_fill(ids == 0, -1.0).argmax(1, keepdim=True))[:, 0]

    assert bool((top_token(shortcut["attributions"])[holds] == text.SHORTCUT).all())
    assert not bool((top_token(clean["attributions"])[holds] == text.SHORTCUT).any())

    # the maps are Captum's integrated gradients at the embedding (same model, ids, targets and steps)
    from captum.attr import LayerIntegratedGradients

    model = shortcut["model"].eval()
    targets = model(ids).argmax(1)
    reference = LayerIntegratedGradients(model, model.tok_emb).attribute(
        ids, baselines=torch.zeros_like(ids), target=targets, n_steps=16
    ).sum(-1)
    torch.testing.assert_close(shortcut["attributions"], reference, rtol=1e-4, atol=1e-5)

    # the TensorBoard pictures were logged for the probe sentences
    assert read_events(shortcut["log_dir"]).Images("xai/attr/integrated_gradients")


def test_text_model_ignores_padding():
    """The GRU classifier's docstring example: packed padding changes nothing."""
    result = doctest.testmod(_load("text"), optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0


def test_sequence_example_explains_the_bumps(tmp_path):
    sequence = _load("sequence")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = sequence.main(["--epochs", "2", "--logdir", str(tmp_path / "logs")])
    assert result["val_acc"] > 0.9
    assert all(v > 0.4 for v in result["bump_mass"])  # the bumps are 14% of the steps
    # drift over the saliency of each channel per time bin (16 bins of 4 steps), epoch 1 against epoch 0
    assert [tuple(v.shape) for v in result["importance"]] == [(2 * 16,), (2 * 16,)]
    assert result["drift"]["xai/drift/saliency/spearman/prev"] > 0.8  # the maps settle once the bumps are found
    assert 0.0 <= result["drift"]["xai/drift/saliency/js_divergence/prev"] < 0.05
    events = read_events(result["log_dir"])
    assert events.Images("xai/drift/saliency/trajectory") and events.Images("xai/attr/grad_cam")


def test_screenshot_checks_tell_a_drawn_page_from_a_loading_one():
    """scripts/modality_screenshots.py keeps a page only once its pane and maps are drawn; the committed
    pictures pass its check, the same page with the maps greyed out (as while loading) does not."""
    import io

    import numpy as np
    from PIL import Image

    path = os.path.join(ROOT, "scripts", "modality_screenshots.py")
    spec = importlib.util.spec_from_file_location("modality_screenshots", path)
    shots = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    saved = list(sys.path)
    try:
        spec.loader.exec_module(shots)  # type: ignore[union-attr]
    finally:
        sys.path[:] = saved  # the script puts the repository's folders first
    for name, page in shots.PAGES.items():
        with open(os.path.join(ROOT, "docs", "images", name), "rb") as f:
            png = f.read()
        top, bottom = shots.first_pane(png)
        assert 0 < top < bottom < Image.open(io.BytesIO(png)).size[1] - 1
        assert shots.drawn(png, page.min_colour), name
        rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).copy()
        rgb[top:bottom] = rgb[top:bottom].mean(axis=-1, keepdims=True).astype(np.uint8)  # no colour in the pane
        grey = io.BytesIO()
        Image.fromarray(rgb).save(grey, format="PNG")
        assert not shots.drawn(grey.getvalue(), page.min_colour), name
        cut = io.BytesIO()
        Image.fromarray(rgb[: (top + bottom) // 2]).save(cut, format="PNG")  # the pane runs past the window
        assert shots.first_pane(cut.getvalue()) is None, name
