"""Every docstring example in the project runs and shows what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ["driftline", "stream", "inference", "detectors", "feature_store"]
# Modules whose examples are part of their contract: they must keep having some.
MUST_HAVE_EXAMPLES = {
    "inference.metadata",
    "inference.encoding",
    "inference.session",
    "inference.routing",
    "inference.registry",
    "inference.training",
    "inference.rollout",
    "inference.performance",
    "stream.events",
    "stream.synthetic",
    "stream.topics",
    "driftline.settings",
    "driftline.redis_cluster",
}


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, f"{package}.")]
    return sorted(names)


@pytest.mark.parametrize("module", _modules())
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    if module in MUST_HAVE_EXAMPLES:
        assert result.attempted > 0, f"{module} lost its docstring examples"
