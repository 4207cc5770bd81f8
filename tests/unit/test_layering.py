"""The dependency rule, checked on the source: `driftline` is the composition root, `stream`
orchestrates, and `inference` and `feature_store` are libraries that import neither of them and
know no Kafka (`detectors` has its own, stricter check in `test_detectors_docs.py`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KAFKA = {"confluent_kafka", "faust", "aiokafka"}
RULES = {
    "inference": {"driftline", "stream"} | KAFKA,
    "feature_store": {"driftline", "stream", "inference"} | KAFKA,
    "stream": {"driftline"},
}
SOURCES = [(pkg, path) for pkg in RULES for path in sorted((ROOT / pkg).glob("*.py"))]


def imported_packages(path: Path) -> set[str]:
    """The top-level names `path` imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(("package", "path"), SOURCES, ids=lambda x: x if isinstance(x, str) else x.name)
def test_a_module_imports_nothing_its_layer_may_not(package: str, path: Path) -> None:
    forbidden = imported_packages(path) & RULES[package]
    assert not forbidden, f"{package}/{path.name} imports {sorted(forbidden)}"


def test_the_check_sees_imports() -> None:
    assert {"driftline", "feature_store"} <= imported_packages(ROOT / "driftline" / "wiring.py")
