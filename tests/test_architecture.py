"""The layers hold: the library never imports the application, no import circle, no module
over 450 lines, every component module registered without a list, and the command line
checks its arguments before torch is imported."""

import ast
import importlib
import os
import pkgutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("pyro_vae", "inference")


def _modules():
    mods = {}
    for package in PACKAGES:
        for directory, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    mod = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    mods[mod[: -len(".__init__")] if mod.endswith(".__init__") else mod] = path
    return mods


def _imports(mods):
    """Module → the project modules it imports (top-level and function-local alike)."""
    graph = {}
    for mod, path in mods.items():
        is_package = path.endswith("__init__.py")
        deps = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = mod if is_package else mod.rsplit(".", 1)[0]
                if node.level:
                    parts = base.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1])
                    module = f"{base}.{node.module}" if node.module else base
                else:
                    module = node.module or ""
                targets = [module] + [f"{module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if target and target != mod and not mod.startswith(target + "."):
                    deps.add(target)
        graph[mod] = deps
    return graph


def test_the_library_never_imports_the_application():
    graph = _imports(_modules())
    offenders = {m: sorted(d for d in deps if d.split(".")[0] == "inference")
                 for m, deps in graph.items() if m.split(".")[0] == "pyro_vae"}
    assert not {m: d for m, d in offenders.items() if d}


def test_there_is_no_import_circle():
    graph = _imports(_modules())
    state, stack = {}, []

    def visit(v):
        state[v] = "open"
        stack.append(v)
        for w in graph[v]:
            if state.get(w) == "open":
                cycle = stack[stack.index(w):] + [w]
                pytest.fail("import circle: " + " → ".join(cycle))
            if w not in state:
                visit(w)
        stack.pop()
        state[v] = "done"

    for v in sorted(graph):
        if v not in state:
            visit(v)


def test_no_module_is_over_450_lines():
    long = {m: n for m, path in _modules().items()
            if (n := sum(1 for _ in open(path, encoding="utf-8"))) > 450}
    assert not long


@pytest.mark.parametrize("package", ["pyro_vae.models", "pyro_vae.guides", "pyro_vae.flows",
                                     "pyro_vae.datasets"])
def test_each_component_package_imports_all_its_modules(package):
    """A new model, guide, flow or dataset is one new file: importing the package imports
    it (and so registers it) — no list elsewhere can forget it."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            assert f"{package}.{info.name}" in sys.modules, info.name


def test_the_command_line_checks_arguments_before_importing_torch():
    code = ("import sys\n"
            "from inference.cli import main\n"
            "code = main(['train', '--epochs', 'many'])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "invalid int value: 'many'" in proc.stderr
