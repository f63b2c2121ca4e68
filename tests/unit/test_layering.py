"""The package layout is the pipeline, and stays so: each folder imports only from the
layers below it, the pure core imports no I/O library, and nothing imports the CLI.

Walks every module's imports with `ast` (function-local imports count: a lazy import is
still a dependency)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "sentinel"

# Lowest first. A unit may import from its own rank and below, never above.
LAYERS: list[set[str]] = [
    {
        "errors",
        "units",
        "timeparse",
        "redact",
        "jsonenc",
        "logs",
        "yamlsource",
        "config",
        "health",
        "slicing",
    },
    {"rules"},
    {"query"},
    {"sources"},
    {"evaluate"},
    {"selfmetrics"},
    {"alerting"},
    {"notify"},
    {"gate"},
    {"outputs"},
    {"daemon"},
    {"web"},
    {"offline"},
    {"cli", "__main__"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
IO_LIBRARIES = {"aiohttp", "sqlite3", "slack_sdk", "apscheduler"}
PURE = (
    "sentinel.rules",
    "sentinel.query",
    "sentinel.evaluate.slo",
    "sentinel.evaluate.budgets",
    "sentinel.evaluate.burn",
    "sentinel.evaluate.probe_check",
    "sentinel.evaluate.canary",
    "sentinel.sources.exchange",
    "sentinel.alerting.state",
)


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            if node.module == "sentinel":  # `from sentinel import jsonenc`
                out |= {f"sentinel.{alias.name}" for alias in node.names}
    return out


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "sentinel" and len(parts) > 1 else None


MODULES = dict(_modules())
IMPORTS = {name: _imports(path) for name, path in MODULES.items()}


def test_every_module_belongs_to_a_declared_layer() -> None:
    units = {_unit(name) for name in MODULES} - {None}
    assert units <= set(RANK), f"add to LAYERS: {sorted(units - set(RANK))}"


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = [
        f"{name} ({unit}) imports {target}"
        for name, targets in IMPORTS.items()
        if (unit := _unit(name)) is not None
        for target in targets
        if (other := _unit(target)) is not None and other in RANK and RANK[other] > RANK[unit]
    ]
    assert upward == []


@pytest.mark.parametrize("prefix", PURE)
def test_the_pure_core_imports_no_io_library(prefix: str) -> None:
    offenders = [
        f"{name} imports {target}"
        for name, targets in IMPORTS.items()
        if name == prefix or name.startswith(prefix + ".")
        for target in targets
        if target.split(".")[0] in IO_LIBRARIES
    ]
    assert offenders == []


def test_the_gate_imports_neither_the_daemon_nor_the_web_layer() -> None:
    offenders = [
        f"{name} imports {target}"
        for name, targets in IMPORTS.items()
        if name.startswith("sentinel.gate")
        for target in targets
        if target.startswith(("sentinel.daemon", "sentinel.web"))
    ]
    assert offenders == []


def test_nothing_outside_the_cli_imports_it() -> None:
    offenders = [
        f"{name} imports {target}"
        for name, targets in IMPORTS.items()
        if _unit(name) not in ("cli", "__main__")
        for target in targets
        if target == "sentinel.cli" or target.startswith("sentinel.cli.")
    ]
    assert offenders == []


def test_there_are_no_import_cycles_between_modules() -> None:
    graph = {
        name: {t for t in targets if t in MODULES and t != name}
        for name, targets in IMPORTS.items()
    }
    # Package __init__ files are implicitly imported with their modules: not edges.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []
