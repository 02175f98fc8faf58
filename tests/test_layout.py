"""The house rules of chargen's code, checked: the layout shows the layers and stays readable.

Lower layers never import higher ones, there are no import cycles, no module imports another's
private (underscore) names, nothing below ``ui/`` imports rich or prompt-toolkit, modules and
functions stay short, and code carries reasons, not lab notes (dates, machines).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "chargen"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 60
# Each module's layer, lowest first: a module may import its own layer and those below.
LAYERS = [
    {"version", "errors", "limits", "compat", "fileio", "devices", "tomlio"},
    {"text", "model", "pretrained"},
    {"checkpoint", "evaluation", "dynamic", "generation"},
    {"training"},
    {"api", "__init__"},
    {"ui", "__main__"},
]
UI_LIBRARIES = ("rich", "prompt_toolkit")


@cache
def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in ``path``."""
    found = []
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")
                target = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            names = [alias.name for alias in node.names]
            if target.startswith("chargen"):
                # "from . import x" may name a submodule
                submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules()]
                found += [(s, [], node.lineno) for s in submodules]
                found.append((target, [n for n in names if f"{target}.{n}" not in modules()], node.lineno))
            else:
                found.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
    return found


def resolve(target: str) -> str | None:
    known = modules()
    if target in known:
        return target
    if f"{target}.__init__" in known:
        return f"{target}.__init__"
    return None


def test_lower_layers_never_import_higher_ones():
    wrong = []
    for module, path in modules().items():
        for target, _, line in imports(module, path):
            resolved = resolve(target)
            if resolved and layer_of(resolved) > layer_of(module):
                wrong.append(f"{path.name}:{line} {module} imports {resolved}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = {m: {resolve(t) for t, _, _ in imports(m, p) if resolve(t) and resolve(t) != m}
             for m, p in modules().items()}
    # A package's __init__ re-exporting its submodules is not a cycle of the submodules.
    for m in graph:
        graph[m] = {t for t in graph[m] if not (t.endswith(".__init__") and m.startswith(t[:-len(".__init__")]))}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


def test_no_private_names_imported_from_another_module():
    wrong = [f"{path}:{line} imports {name} from {target}"
             for module, path in modules().items() for target, names, line in imports(module, path)
             if target.startswith("chargen") for name in names if name.startswith("_") and name != "__version__"]
    assert not wrong, "\n".join(wrong)


def test_nothing_below_the_ui_imports_a_terminal_library():
    wrong = [f"{path}:{line} imports {target}" for module, path in modules().items() if not module.startswith("chargen.ui")
             for target, _, line in imports(module, path) if target.split(".")[0] in UI_LIBRARIES]
    assert not wrong, "\n".join(wrong)


def test_modules_and_functions_stay_short():
    long = []
    for module, path in modules().items():
        lines = path.read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            long.append(f"{path.name}: {lines} lines")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {length} lines")
    assert not long, "\n".join(long)


LAB_NOTES = re.compile(r"20\d\d-\d\d-\d\d|this session|AMD EPYC|Intel Xeon|\bZen ?4\b|\bH200\b|\bA100\b|"
                       r"this project's|\b2-core\b", re.IGNORECASE)


def test_code_carries_reasons_not_lab_notes():
    found = [f"{path.name}:{n}: {line.strip()}" for path in modules().values()
             for n, line in enumerate(path.read_text().splitlines(), 1) if LAB_NOTES.search(line)]
    assert not found, "\n".join(found)


def test_the_checker_sees_the_imports():
    """Guards the guards: the checks above must see chargen's own imports, relative ones included."""
    ui_cli = imports("chargen.ui.cli", modules()["chargen.ui.cli"])
    assert any(resolve(target) == "chargen.ui.commands" for target, _, _ in ui_cli)
    assert layer_of("chargen.ui.cli") > layer_of("chargen.training.trainer") > layer_of("chargen.model.lm")
