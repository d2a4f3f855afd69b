"""What the benchmarks made of ``pyro-vae train`` rows share (``deep_vae.py``,
``generalization.py``): train the rows whose run directory holds no ``eval.json`` yet, one
after another (so that a benchmark can be run in several sittings), and print the Markdown
table of the rows that have one."""

from __future__ import annotations

import os
import subprocess
from typing import Callable, List, Sequence


def train_missing(names: Sequence[str], runs: str, command: Callable[[str], List[str]]) -> None:
    """Run ``command(name)`` for every row whose ``runs/name`` holds no ``eval.json``."""
    for name in names:
        if not os.path.exists(os.path.join(runs, name, "eval.json")):
            print(" ".join(command(name)), flush=True)
            subprocess.run(command(name), check=True)


def print_table(header: Sequence[str], names: Sequence[str], runs: str, row: Callable[[str, str], str]) -> None:
    """The table's header, then ``row(name, runs)`` of every evaluated row."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in names:
        if os.path.exists(os.path.join(runs, name, "eval.json")):
            print(row(name, runs))
