"""Arguments, run directories and outputs are checked before torch and Pyro are imported
(seconds), before data are loaded and before a model is built: a mistake costs a new user
a fraction of a second, not a training run."""

import json
import os
import subprocess
import sys

from reliability_helpers import ROOT


def test_refusals_come_before_torch_is_imported(trained_run, tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "debris").mkdir()
    (tmp_path / "debris" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (tmp_path / "started").mkdir()
    with open(os.path.join(trained_run, "config.json")) as f:
        (tmp_path / "started" / "config.json").write_text(f.read())
    run, t = trained_run, str(tmp_path)
    cases = [
        ["train", "--epochs", "many"],
        ["train", "--valid-fraction", "0.0001"],
        ["train", "--patience", "0"],
        ["train", "--ema", "1.5"],
        ["train", "--weight-decay", "-1"],
        ["train", "--skip-threshold", "inf"],
        ["train", "--patience", "2", "--valid-fraction", "0"],
        ["evaluate", run, "--checkpoint", "worst"],
        ["sample", run, "--checkpoint", "first"],
        ["train", "--out", f"{t}/file/run"],
        ["train", "--out", "/proc/run"],
        ["train", "--out", run],
        ["train", "--out", f"{t}/debris"],
        ["train", "--resume"],
        ["train", "--resume", "--out", f"{t}/missing"],
        ["evaluate", f"{t}/missing"],
        ["evaluate", f"{t}/started"],
        ["evaluate", run, "--iwae-samples", "0"],
        ["evaluate", run, "--seed", "-1"],
        ["evaluate", run, "--split", "validation"],
        ["sample", run, "--out", os.path.join(run, "checkpoint.pt")],
        ["sample", run, "--out", os.path.join(run, "loss.png")],
        ["sample", run, "--out", t],
        ["sample", run, "--n", "0"],
        ["sample", run, "--temperature", "nan"],
        ["sample", run, "--label", "3"],  # a run without labels
        ["sample", run, "--label", "three"],
        ["sample", run, "--label", "all", "--interpolate", "0", "1"],
        ["posterior", run, "--out", run],
        ["posterior", run, "--seed", "-1"],
        # the resource bounds and the options of issue 24
        ["posterior", run, "--draws", "10000000"],
        ["posterior", run, "--max-tree-depth", "64"],
        ["sample", run, "--temperature", "1e300"],
        ["train", "--tracker", "wandb"],
        ["train", "--dataset-set", "size"],
        ["train", "--epochs", "1000000"],
    ]
    script = (
        "import json, sys\n"
        "from inference.cli import main\n"
        "results = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        code = main(argv)\n"
        "    except SystemExit as e:\n"
        "        code = e.code\n"
        "    results.append([code, 'torch' in sys.modules])\n"
        "print(json.dumps(results))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], capture_output=True, text=True,
                          cwd=t, env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == len(cases) and "Traceback" not in proc.stderr, proc.stderr
    for argv, (code, torch_imported), line in zip(cases, results, errors):
        assert code == 2, (argv, line)
        assert not torch_imported, (argv, line)


def test_help_does_not_import_torch():
    script = ("import sys\nfrom inference.cli import main\n"
              "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
              "assert 'torch' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and "--resume" in proc.stdout, proc.stderr
