"""Every Python block of the documentation runs, so the docs cannot drift from the code."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", "docs/theory.md"]


def python_blocks(path):
    text = open(os.path.join(ROOT, path), encoding="utf-8").read()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


CASES = [(path, i, code) for path in DOCS for i, code in enumerate(python_blocks(path))]


def test_docs_have_code():
    assert sum(1 for case in CASES if case[0] == "docs/theory.md") >= 5


@pytest.mark.parametrize("path, index, code", CASES, ids=[f"{p}#{i}" for p, i, _ in CASES])
def test_python_block_runs(path, index, code, monkeypatch):
    monkeypatch.chdir(ROOT)
    exec(compile(code, f"{path}[block {index}]", "exec"), {"__name__": f"doc_{index}"})


def test_the_chinese_version_runs_the_same_code():
    """docs/theory.zh.md translates the prose only: its Python blocks are the English ones
    (which run above), so they cannot drift either."""
    assert python_blocks("docs/theory.zh.md") == python_blocks("docs/theory.md")


#: `path.py`, `path.py:Name` or `path.py:Class.method`, and `dir/` in backticks
CODE_REF = re.compile(r"`((?:pyro_vae|inference|examples|benchmarks|tests)/[\w/]*?(?:\.py)?)(?::([\w.]+))?`")


@pytest.mark.parametrize("path", ["docs/theory.md", "README.md"])
def test_every_code_reference_exists(path):
    """Each file, folder and `file.py:name` the text points to exists, and the name is
    defined in that file (a class, function or method of that name)."""
    text = open(os.path.join(ROOT, path), encoding="utf-8").read()
    refs = CODE_REF.findall(text)
    assert len(refs) >= (15 if path == "docs/theory.md" else 5)
    for file, name in refs:
        full = os.path.join(ROOT, file)
        assert os.path.exists(full), f"{path} points to {file}, which does not exist"
        if name:
            source = open(full, encoding="utf-8").read()
            for part in name.split("."):
                assert re.search(rf"^\s*(?:class|def)\s+{part}\b|^\s*{part}\s*[:=]", source, re.M), (
                    f"{path} points to {file}:{name}, but {part} is not defined there"
                )


def _project_classes():
    """Every class defined in the pyro_vae and inference packages, by name."""
    import importlib
    import inspect
    import pkgutil

    classes = {}
    for package in ("pyro_vae", "inference"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                if inspect.isclass(obj) and obj.__module__ == module.__name__:
                    classes[name] = obj
    return classes


def test_every_class_and_method_named_in_the_theory_exists():
    """`Class.attribute` in the text (e.g. `Encoder.loc_scale`) names a real attribute."""
    text = open(os.path.join(ROOT, "docs/theory.md"), encoding="utf-8").read()
    refs = set(re.findall(r"`([A-Z]\w+)\.(\w+)(?:\(\))?`", text))
    classes = _project_classes()
    named = [(c, a) for c, a in refs if c in classes]
    assert len(named) >= 5, refs
    for cls, attr in named:
        assert hasattr(classes[cls], attr), f"docs/theory.md names {cls}.{attr}, which does not exist"
