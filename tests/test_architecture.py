"""The architecture as a test (docs/architecture.md says the same in prose).

Every module of miniclip is parsed with `ast` (nothing is imported or run) and
each import it makes, at the top or inside a function, is checked against the
rules below. A failure names the module, the line, what it imports and the
rule it breaks.

Layers only look down:
    autograd knows no nn, model, data, training, CLI, distributed or file-format code
    nn knows no model (nor training, CLI, distributed, file formats)
    the model (model.py + config.py) knows no training, CLI, distributed or file-format code
    data knows no model, nn or autograd
    the plain tier (miniclip/autograd) knows nothing of the fast tier (miniclip/fast)
And across the whole package:
    no import cycles (the classic Tensor <-> ops one inside miniclip/autograd excepted)
    no private (_name) import from another module
    no function-local import of a module the file already imports at the top
    no module over 700 lines
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "miniclip"
MAX_LINES = 700

# group name -> the module prefixes it covers ("miniclip.x" covers miniclip.x and miniclip.x.*)
GROUPS = {
    "autograd": ("miniclip.autograd",),
    "nn": ("miniclip.nn",),
    "model": ("miniclip.model", "miniclip.config"),
    "data": ("miniclip.data",),
    "training": ("miniclip.train", "miniclip.runfolder", "miniclip.optim", "miniclip.loss", "miniclip.tasks"),
    "CLI": ("miniclip.cli", "miniclip.__main__"),
    "distributed": ("miniclip.distributed",),
    "file-format": ("miniclip.formats", "miniclip.pretrained", "miniclip.checkpoint", "miniclip.download",
                    "miniclip.fileio"),
    "fast-tier": ("miniclip.fast",),
}
# importer group -> the groups it must not import
FORBIDDEN = {
    "autograd": ("nn", "model", "data", "training", "CLI", "distributed", "file-format", "fast-tier"),
    "nn": ("model", "training", "CLI", "distributed", "file-format"),
    "model": ("training", "CLI", "distributed", "file-format"),
    "data": ("model", "nn", "autograd"),
}
# The one cycle allowed: Tensor's operators call the ops, the ops make Tensors (through Function).
ALLOWED_CYCLE = {"miniclip.autograd.tensor", "miniclip.autograd.ops", "miniclip.autograd.function"}


def module_files():
    """{dotted module name: path} of every .py file of the package (a package is its __init__)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def group_of(module):
    for group, prefixes in GROUPS.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return group
    return None


def owning_module(name):
    """The module a dotted name lives in: miniclip.model.CLIP -> miniclip.model."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


class Import:
    """One import of a miniclip module: where it is, what module it reaches, which names."""

    def __init__(self, importer, line, target, names, local):
        self.importer, self.line, self.target, self.names, self.local = importer, line, target, names, local

    def __str__(self):
        names = f" ({', '.join(self.names)})" if self.names else ""
        where = "inside a function" if self.local else "at the top"
        return f"{MODULES[self.importer].relative_to(PACKAGE.parent)}:{self.line} imports {self.target}{names} {where}"


def imports_of(module):
    """Every import of a miniclip module that `module` makes, top-level and function-local."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    in_functions = {id(node) for function in ast.walk(tree)
                    if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for node in ast.walk(function)}
    found = []
    for node in ast.walk(tree):
        local = id(node) in in_functions
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "miniclip":
                    found.append(Import(module, node.lineno, owning_module(alias.name), (), local))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                               # from . import x, from ..nn import y
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.split(".")[0] != "miniclip":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:                      # from miniclip import backend: a module
                    found.append(Import(module, node.lineno, full, (), local))
                else:                                    # from miniclip.model import CLIP: a name
                    found.append(Import(module, node.lineno, owning_module(base), (alias.name,), local))
    return [imp for imp in found if imp.target != module]


IMPORTS = {module: imports_of(module) for module in MODULES}


def test_the_package_is_found():
    assert {"miniclip.model", "miniclip.config", "miniclip.autograd.tensor", "miniclip.pretrained"} <= set(MODULES)


def test_layers_only_look_down():
    broken = []
    for module, imports in IMPORTS.items():
        group = group_of(module)
        for imp in imports:
            target_group = group_of(imp.target)
            if target_group in FORBIDDEN.get(group, ()):
                broken.append(f"{imp}: the {group} layer must not import {target_group} code")
    assert not broken, "layer rules broken:\n  " + "\n  ".join(broken)


def find_cycles(edges):
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def test_find_cycles_finds_a_cycle_and_only_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    edges = {module: {imp.target for imp in imports} for module, imports in IMPORTS.items()}
    cycles = [c for c in find_cycles(edges) if not set(c) <= ALLOWED_CYCLE]
    lines = []
    for cycle in cycles:
        members = set(cycle)
        lines.append(" <-> ".join(cycle) + ":\n    " + "\n    ".join(
            str(imp) for module in cycle for imp in IMPORTS[module] if imp.target in members))
    assert not cycles, "import cycles among miniclip modules:\n  " + "\n  ".join(lines)


def test_no_private_names_imported_across_modules():
    broken = [f"{imp}: '{name}' is private to {imp.target}; make it public or move it"
              for imports in IMPORTS.values() for imp in imports
              for name in imp.names if name.startswith("_") and not name.startswith("__")]
    assert not broken, "private names imported:\n  " + "\n  ".join(broken)


def test_no_function_local_import_of_a_module_imported_at_the_top():
    broken = []
    for module, imports in IMPORTS.items():
        at_top = {imp.target for imp in imports if not imp.local}
        broken += [f"{imp}: {imp.target} is already imported at the top of the file"
                   for imp in imports if imp.local and imp.target in at_top]
    assert not broken, "needless function-local imports:\n  " + "\n  ".join(broken)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_over_the_line_budget(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(PACKAGE.parent)} has {lines} lines (budget {MAX_LINES}): split it by concept"


def test_the_checks_catch_a_broken_rule(monkeypatch):
    """The rules can fail: an autograd module importing the model, and a cycle, are reported."""
    fake = Import("miniclip.autograd.tensor", 1, "miniclip.model", ("CLIP",), False)
    assert group_of(fake.target) in FORBIDDEN[group_of(fake.importer)]
    assert "miniclip/autograd/tensor.py:1 imports miniclip.model (CLIP) at the top" == str(fake)
    monkeypatch.setitem(IMPORTS, "miniclip.config", IMPORTS["miniclip.config"] + [
        Import("miniclip.config", 1, "miniclip.model", (), False)])
    with pytest.raises(AssertionError, match="miniclip.config <-> miniclip.model"):
        test_no_import_cycles()
    with pytest.raises(AssertionError, match="model layer must not import CLI"):
        monkeypatch.setitem(IMPORTS, "miniclip.model", [Import("miniclip.model", 3, "miniclip.cli", (), True)])
        test_layers_only_look_down()
