"""The examples in the inference modules' docstrings run and say what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "inference.metadata",
    "inference.encoding",
    "inference.session",
    "inference.routing",
    "inference.registry",
    "inference.training",
]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{module} has no docstring example"
    assert result.failed == 0
