"""Every example runs, with a tiny budget, as a user would run it."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name, *args):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_svi_script_trains():
    out = run_example("svi_script.py", "--epochs", "3", "--train-size", "512")
    elbos = [float(v) for v in re.findall(r"train ELBO (-?[\d.]+)", out)]
    assert len(elbos) == 3
    assert elbos[-1] > elbos[0] + 20  # three epochs from random init gain tens of nats
