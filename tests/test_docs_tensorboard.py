"""The examples in README.md, docs/tensorboard.md, docs/tour.md and docs/extending.md run and give the output they show."""

from __future__ import annotations

import doctest
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


@pytest.mark.parametrize("name", ["tensorboard.md", "tour.md", "extending.md", "../README.md"])
def test_markdown_examples_run(name):
    path = os.path.join(DOCS, name)
    result = doctest.testfile(
        path, module_relative=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.attempted > 5, f"{name}: no examples found"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (see output above)"


@pytest.mark.parametrize("name", ["tensorboard.md", "tour.md", "extending.md", "../README.md"])
def test_markdown_images_exist_and_are_small(name):
    import re

    with open(os.path.join(DOCS, name)) as f:
        text = f.read()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images, f"{name} shows no screenshots"
    for rel in images:
        path = os.path.normpath(os.path.join(os.path.dirname(os.path.join(DOCS, name)), rel))
        assert os.path.exists(path), f"{name} links {rel}, which is missing: run python scripts/screenshots.py"
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", rel
        assert os.path.getsize(path) < 300_000, f"{rel} is {os.path.getsize(path)} bytes: keep it under 300 KB"
