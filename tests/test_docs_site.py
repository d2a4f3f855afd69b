"""The documentation site: it builds with warnings as errors and the tutorials executed (the
command the README gives, `sphinx-build -W --keep-going -b html docs …`), every module of the
library is in the API reference, every page and tutorial is in a table of contents, and the
notebooks are stored without outputs."""

import glob
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


def test_every_library_module_is_in_the_api_reference():
    documented = set()
    for page in glob.glob(os.path.join(DOCS, "api", "*.md")):
        documented |= set(re.findall(r"^\.\. automodule:: ([\w.]+)", open(page, encoding="utf-8").read(), re.M))
    modules = set()
    for path in glob.glob(os.path.join(ROOT, "pyro_vae", "**", "*.py"), recursive=True):
        module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        modules.add(module[: -len(".__init__")] if module.endswith(".__init__") else module)
    assert modules - documented == set()
    assert documented - modules == set()


def test_every_page_and_tutorial_is_in_a_table_of_contents():
    pages = {os.path.relpath(p, DOCS)[:-3] for p in glob.glob(os.path.join(DOCS, "*.md"))}
    pages |= {os.path.relpath(p, DOCS)[:-6] for p in glob.glob(os.path.join(DOCS, "tutorials", "*.ipynb"))}
    pages |= {os.path.relpath(p, DOCS)[:-3] for p in glob.glob(os.path.join(DOCS, "api", "*.md"))}
    listed = {"index"}
    for page in glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True):
        text = open(page, encoding="utf-8").read()
        folder = os.path.relpath(os.path.dirname(page), DOCS)
        for block in re.findall(r"```\{toctree\}\n(.*?)```", text, re.S):
            for line in block.splitlines():
                if line.strip() and not line.startswith(":"):
                    listed.add(os.path.normpath(os.path.join(folder, line.strip())))
    assert pages - listed == set()


def test_the_tutorials_are_stored_without_outputs():
    notebooks = glob.glob(os.path.join(DOCS, "tutorials", "*.ipynb"))
    assert len(notebooks) >= 3
    for path in notebooks:
        cells = json.load(open(path, encoding="utf-8"))["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert code and all(not c["outputs"] and c["execution_count"] is None for c in code), path


def test_the_site_builds_with_warnings_as_errors_and_the_tutorials_executed(tmp_path):
    """The README's documentation command, into a scratch folder: a warning, a broken
    reference or a failing tutorial cell fails it."""
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    command = 'sphinx-build -W --keep-going -b html docs docs/_build/html'
    assert command in readme
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
                           "-d", str(tmp_path / "doctrees"), DOCS, str(tmp_path / "html")],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for page in ("index", "cli", "own_model", "tutorials/first_vae", "tutorials/swapping_guides",
                 "tutorials/posterior_analysis", "api/index"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
    # the tutorials ran: their pages hold the outputs the stored notebooks do not
    first = (tmp_path / "html" / "tutorials" / "first_vae.html").read_text(encoding="utf-8")
    assert "cell_output" in first
