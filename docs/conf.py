"""Sphinx configuration of pyro-vae's documentation site.

Built as Pyro, NumPyro and ArviZ build theirs: the API reference from the docstrings
(``autodoc`` with ``napoleon`` for the Google style), the Markdown pages and the notebook
tutorials read by MyST-NB, which executes the notebooks on every build (they are stored
without outputs), and the command-line reference generated from the parser
(``sphinx-argparse``)::

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the checkout's code, also for the notebooks' kernels
os.environ["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
os.environ.setdefault("OMP_NUM_THREADS", "1")

project = "pyro-vae"
author = "the pyro-vae developers"
copyright = "the pyro-vae developers"
release = version = "0.2.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "myst_nb",
    "sphinxarg.ext",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "figures/README.md"]
root_doc = "index"

# API reference: Google-style docstrings, members in source order, type hints in the text
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

# Markdown: anchors for the pages' own section links (docs/reliability.md#1-every-file-is-whole)
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

# the tutorials are executed at every build, on small budgets; a failing cell fails the build
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

html_theme = "furo"
html_title = "pyro-vae"
html_static_path: list = []
