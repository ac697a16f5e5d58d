"""The shape of spocu.torch: no import cycles between its modules, and private torch API only in _compat."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import spocu.torch

PACKAGE = Path(spocu.torch.__file__).parent


def _imports(path: Path) -> set[str]:
    """The spocu.torch modules ``path`` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("spocu.torch."):
                module = name.removeprefix("spocu.torch.").split(".")[0]
                if (PACKAGE / f"{module}.py").exists():
                    found.add(module)
    return found


def import_graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) - {p.stem} for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a list of modules, first repeated last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_function_level_cycle(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from spocu.torch import _b\n")
    graph = {"_a": {"_b"}, "_b": {"_c"}, "_c": {"_a"}}
    assert find_cycle(graph) == ["_a", "_b", "_c", "_a"]
    assert find_cycle({"_a": {"_b"}, "_b": set()}) is None


def test_no_import_cycles_inside_spocu_torch():
    graph = import_graph()
    assert "_dispatch" in graph["functional"] and "_cpp" in graph["_dispatch"]  # the graph is read
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_functional_and_modules_decide_nothing():
    """The router decides; the public functional and module only reach it."""
    assert import_graph()["functional"] == {"_dispatch"}
    assert import_graph()["modules"] <= {"_dispatch", "_compat"}


#: a private torch name: torch._x, torch.<pkg>._x (a module or attribute whose name starts with _),
#: or getattr(..., "_x") on a torch object
PRIVATE = re.compile(
    r"(?<![\w.])torch(\.[A-Za-z]\w*)*\._[A-Za-z]\w*|from torch[\w.]* import [^#]*\b_[A-Za-z]|getattr\([^)]*\"_[a-z]\w*\"|\._dynamo_marked_constant"
)


def test_private_torch_names_live_only_in_compat():
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem == "_compat":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if PRIVATE.search(code) and not code.lstrip().startswith(('"', "'", ">>>", ":")):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "private torch API outside _compat.py:\n" + "\n".join(offenders)


def test_the_private_name_pattern_catches_the_usual_forms():
    for code in ("torch._C._functorch.peek_interpreter_stack()", "torch.onnx._internal.exporter",
                 "from torch._functorch.utils import x", 'getattr(overload, "_op", overload)',
                 "fn._dynamo_marked_constant = True", "torch.compiler._is_exporting_flag",
                 "from torch.autograd.forward_ad import _set_fwd_grad_enabled"):  # fmt: skip
        assert PRIVATE.search(code), code
    for code in ("torch.compiler.is_compiling()", "torch.fx.Proxy", "torch.library.Library"):
        assert not PRIVATE.search(code), code
