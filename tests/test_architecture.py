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


def _function_local_imports():
    """``(module path, line, the line's text and the one before)`` of every import inside a
    function of the two packages."""
    found = []
    for mod, path in _modules().items():
        lines = open(path, encoding="utf-8").read().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        found.append((os.path.relpath(path, ROOT), inner.lineno,
                                      lines[inner.lineno - 1] + "\n" + lines[inner.lineno - 2]))
    return found


def test_imports_are_at_the_top_but_for_a_few_with_their_reason():
    """Imports show the dependency graph: a function-local import is the exception, and
    says why on its line or the line above."""
    found = _function_local_imports()
    assert len(found) <= 15, [f"{p}:{n}" for p, n, _ in found]
    unexplained = [f"{p}:{n}" for p, n, text in found if "#" not in text]
    assert not unexplained


def test_library_errors_name_parameters_not_flags():
    """The library speaks its own language: a message it raises never names a command-line
    flag (the command line says which flag a parameter was: inference.cli.error_line)."""
    import re

    flag = re.compile(r"(^|[\s(`'\"])--[a-z]")
    offenders = []
    for mod, path in _modules().items():
        if not mod.startswith("pyro_vae"):
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                for inner in ast.walk(node.exc):
                    if isinstance(inner, ast.Constant) and isinstance(inner.value, str) and flag.search(inner.value):
                        offenders.append(f"{mod}:{node.lineno}")
    assert not offenders


def test_every_flag_is_a_field_and_the_shared_ones_come_from_one_parent():
    """Each command's options are typed dataclasses: every argument of every sub-parser is
    a field of one of them (its dest says which), and the options that the commands share
    are declared once, by the parent parser."""
    import dataclasses

    from inference.args import COMMANDS, build_parser
    from inference.settings import Common

    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    common = {f"Common.{f.name}" for f in dataclasses.fields(Common)}
    for name, (_, classes, shared) in COMMANDS.items():
        fields = {f"{cls.__name__}.{f.name}" for cls in classes for f in dataclasses.fields(cls)}
        dests = {a.dest for a in subs[name]._actions if a.dest != "help"}
        assert dests <= fields | common, (name, dests - fields - common)
        assert (common <= dests) == shared, name


def test_the_architecture_page_names_only_what_exists():
    """docs/architecture.md is the map of the code: every function, class, method or
    attribute it names in backticks is defined somewhere in the two packages."""
    import re

    text = open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8").read()
    source = "\n".join(open(p, encoding="utf-8").read() for p in _modules().values())
    defined = set(re.findall(r"(?:def|class)\s+(\w+)", source)) | set(re.findall(r"^\s*(\w+)\s*[:=]", source, re.M))
    defined |= set(re.findall(r"self\.(\w+)\s*[:=]", source))
    modules = {m.rsplit(".", 1)[-1] for m in _modules()}
    missing = []
    for span in re.findall(r"`([^`\n]+)`", text):
        m = re.fullmatch(r"(?:[\w/]+\.py:)?([A-Za-z_][\w.]*)(\(.*\))?", span.strip())
        if not m or (m.group(2) is None and "." not in m.group(1)) or \
                m.group(1).split(".")[0] in ("nn", "torch", "pyro", "poutine", "dist"):
            continue  # a flag, a path, a literal, torch's or Pyro's — not a name of this code
        name = m.group(1).rsplit(".", 1)[-1]
        if name not in defined and name not in modules and name not in ("py", "md", "json", "pt", "jsonl"):
            missing.append(span)
    assert not missing
