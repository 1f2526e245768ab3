"""The wheel as it is built: licence metadata, the licence file, the version, a quiet build.

The wheel is built from a copy of the files that go into it (so that the build's ``build/`` and
``*.egg-info`` land in a temporary directory, not in the checkout), without build isolation and
without an index: it needs only the setuptools of this environment and works offline.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import lightning_xai

ROOT = Path(__file__).resolve().parent.parent


def _setuptools_major() -> int:
    try:
        return int(metadata.version("setuptools").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return 0


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory):
    if _setuptools_major() < 77:
        pytest.skip("building the wheel needs setuptools>=77 (the test extra installs it)")
    tmp = tmp_path_factory.mktemp("wheel")
    src, out = tmp / "src", tmp / "dist"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "lightning_xai", src / "lightning_xai", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(out), str(src)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, log
    return wheels[0], log


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(z.read(name).decode("utf-8")), z.namelist()


def test_wheel_license_expression_and_file(built_wheel):
    wheel, _ = built_wheel
    meta, names = _metadata(wheel)
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    licence = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert licence, names
    with zipfile.ZipFile(wheel) as z:
        text = z.read(licence[0]).decode("utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_wheel_version_is_the_package_version(built_wheel):
    wheel, _ = built_wheel
    meta, names = _metadata(wheel)
    assert meta["Version"] == lightning_xai.__version__
    assert wheel.name.startswith(f"lightning_xai-{lightning_xai.__version__}-")
    assert "lightning_xai/_version.py" in names and "lightning_xai/py.typed" in names


def test_wheel_builds_without_deprecation_warnings(built_wheel):
    _, log = built_wheel
    assert "deprecat" not in log.lower(), log
