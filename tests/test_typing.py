"""The public API type-checks in user code under ``mypy --strict``, and mypy catches a misuse.

A user's script is written to a temporary directory and checked the way a user's project checks it:
lightning_xai is followed for its types (``py.typed``) with its own errors silenced, as mypy treats an
installed package. One mypy run checks a correct script (no error) and a wrong one (the error mypy
must report), so the check is shown able to fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mypy")

ROOT = Path(__file__).resolve().parents[1]

GOOD = '''
from typing import Dict, Tuple

import torch
from torch import Tensor, nn

import lightning_xai
from lightning_xai import ProbeSet, ProbeSpec, checks, functional as F
from lightning_xai.callbacks import AttributionMonitor, SanityGate


def doubled_saliency(model: nn.Module, inputs: Tensor, target: object = None) -> Tensor:
    return 2 * F.saliency(model, inputs, None)


model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
x = torch.randn(5, 3)

ig: Tensor = F.integrated_gradients(model, x, 0).abs()
attr, delta = F.integrated_gradients(model, x, 0, return_convergence_delta=True)
pair: Tuple[Tensor, Tensor] = (attr.abs(), delta.abs())
one: Tensor = F.attribute(model, x, 0, "integrated_gradients", n_steps=8).sum(0)
maps: Dict[str, Tensor] = F.attribute_many(model, x, "predicted", ["saliency"])
maps2, outputs = F.attribute_many(model, x, 0, ["saliency"], return_outputs=True)
biggest: Tensor = maps2["saliency"].amax() + outputs.sum()

probe = ProbeSet(x, targets=torch.tensor([0, 1, 0, 1, 0]), feature_names=["a", "b", "c"])
n: int = len(probe)
inputs: Tensor = probe.inputs
names = probe.names
spec = ProbeSpec(n=8, stratify=True, seed=0)

method = lightning_xai.register_method("doubled_saliency_typing", doubled_saliency, overwrite=True)
monitor = AttributionMonitor(probe, methods=["saliency", "doubled_saliency_typing"], every_n_epochs=2)
gate = SanityGate(spec, checks=[checks.Completeness(max_error=0.05), checks.RandomLogit("saliency")])
'''

BAD = '''
import torch
from torch import nn

from lightning_xai import functional as F

model = nn.Linear(3, 2)
# with return_convergence_delta=True the result is a pair, not a tensor
F.integrated_gradients(model, torch.randn(2, 3), 0, return_convergence_delta=True).abs()
'''

CONFIG = '''
[mypy]
python_version = 3.10
cache_dir = {cache}

# lightning_xai as an installed package: followed for its types, its own errors not reported
[mypy-lightning_xai.*]
follow_imports = silent

[mypy-captum.*,tensorboard.*]
ignore_missing_imports = True
'''


def test_user_code_type_checks_under_strict_and_a_misuse_fails(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(textwrap.dedent(GOOD))
    (tmp_path / "bad.py").write_text(textwrap.dedent(BAD))
    config = tmp_path / "mypy.ini"
    config.write_text(CONFIG.format(cache=tmp_path / "cache"))
    env = dict(os.environ, MYPYPATH=str(ROOT))
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(config), "good.py", "bad.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    out = run.stdout + run.stderr
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert [e for e in errors if e.startswith("good.py")] == [], out
    assert len(errors) == 1 and errors[0].startswith("bad.py:"), out
    assert '"tuple[Tensor, Tensor]" has no attribute "abs"' in out, out
    assert run.returncode == 1, out
