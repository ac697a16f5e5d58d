"""The experiment layer's imports run one way: base < data, models < config < run < results < compare.

Every ``spocu.experiments`` import in the source counts, function-level ones included (they can
hide a circle); imports under ``if TYPE_CHECKING:`` are annotations only and do not.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

import spocu.experiments

ROOT = Path(spocu.experiments.__file__).parent
PACKAGE = "spocu.experiments"

#: the level of each room or base module; a module may import its own level or below
LEVELS = {"errors": 0, "activations": 0, "seeding": 0, "environment": 0, "user_code": 0,
          "data": 1, "models": 1, "config": 2, "run": 3, "results": 4, "compare": 5}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> set[str]:
    """The spocu.experiments modules a source tree imports at run time."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(PACKAGE))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            found.add(node.module)
            # ``from spocu.experiments.run import torch_engine`` imports the submodule
            # ``from spocu.experiments.run import torch_engine`` imports a submodule; an 0.1 name
            # (``from spocu.experiments import stats``) goes through the deprecation alias: refused below
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                if name.split(".")[-1] in spocu.experiments.MOVED_MODULES and node.module == PACKAGE:
                    found.add(name)
                elif ROOT.joinpath(*name.split(".")[2:]).with_suffix(".py").exists():
                    found.add(name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(ROOT.rglob("*.py")):
        graph[_module_name(path)] = _imports(ast.parse(path.read_text(), str(path)))
    return graph


def _level(module: str) -> int | None:
    parts = module.split(".")
    return LEVELS.get(parts[2]) if len(parts) > 2 else None


def test_no_module_imports_an_old_path():
    old = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if target.split(".")[-1] in spocu.experiments.MOVED_MODULES and target.count(".") == 2
    ]
    assert not old, "imports through a deprecated 0.1 path:\n" + "\n".join(old)


def test_every_module_has_a_level():
    unplaced = [m for m in _graph() if m != PACKAGE and _level(m) is None]
    assert not unplaced, f"place these modules in LEVELS: {unplaced}"


def test_imports_run_one_way():
    upward = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if target != PACKAGE
        and _level(module) is not None
        and _level(target) is not None
        and _level(target) > _level(module)
    ]
    assert not upward, "imports from a higher level:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph = _graph()
    # a package's modules import through the package, so a module depends on its parents too
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph or target == node:
                continue
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_layer_test_sees_a_cycle_and_an_upward_import(tmp_path):
    # the checker itself: a function-level import that closes a circle, and one that goes up a level
    tree = ast.parse("def f():\n    from spocu.experiments.run.runner import run_experiment\n")
    assert _imports(tree) == {"spocu.experiments.run.runner"}
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from spocu.experiments.config import X\n"
    )
    assert _imports(tree) == set()
    tree = ast.parse("def f():\n    from spocu.experiments import models_torch, activations\n")
    assert _imports(tree) == {"spocu.experiments", "spocu.experiments.models_torch", "spocu.experiments.activations"}
    assert _level("spocu.experiments.data.datasets") < _level("spocu.experiments.run.runner")


@pytest.mark.parametrize("old, new", sorted(spocu.experiments.MOVED_MODULES.items()))
def test_old_module_paths_import_the_new_module_with_a_warning(old, new):
    import importlib
    import sys

    sys.modules.pop(f"{PACKAGE}.{old}", None)
    try:
        importlib.import_module(f"{PACKAGE}.{new}")
    except ImportError as error:  # an optional framework (keras, ray) is missing here
        pytest.skip(f"{new} needs {error.name}")
    with pytest.warns(DeprecationWarning, match=f"{PACKAGE}.{new}"):
        moved = importlib.import_module(f"{PACKAGE}.{old}")
    assert moved is sys.modules[f"{PACKAGE}.{new}"]


def test_old_results_names_still_resolve():
    from spocu.experiments.results import summary

    with pytest.warns(DeprecationWarning, match="results.summary"):
        from spocu.experiments.results import assemble_results
    assert assemble_results is summary.assemble_results
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImportError):
            from spocu.experiments.results import not_a_name  # noqa: F401
