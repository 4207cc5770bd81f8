"""detectors/ keeps its examples and its independence (no project packages, no Kafka, no pickle)."""

from __future__ import annotations

import ast
import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import detectors

PACKAGE = Path(detectors.__file__).parent
PROJECT = {"stream", "inference", "feature_store", "driftline"}
FORBIDDEN = PROJECT | {"confluent_kafka", "faust", "aiokafka", "pickle"}
MODULES = sorted(m.name for m in pkgutil.walk_packages(detectors.__path__, "detectors."))


@pytest.mark.parametrize("module", MODULES)
def test_module_has_runnable_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0, f"{module} has no docstring examples"


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_imports_stay_inside_the_boundary(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path.name} imports {imported & FORBIDDEN}"
