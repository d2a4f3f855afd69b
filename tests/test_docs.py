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
