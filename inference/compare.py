"""``pyro-vae compare RUN_DIR...``: runs side by side — one table and one figure.

Each run contributes a row read from its directory alone: model, guide, prior, objective,
epochs, the best validation epoch and its ELBO from ``config.json`` and ``metrics.jsonl``,
the number of parameters from the checkpoint (model and guide, each parameter once), and
from ``eval.json`` the test ELBO, the NLL with its estimator (IWAE with k, or exact) and
standard error, which checkpoint (and epoch) they come from, bits/dim where defined, the
KL and the active units, and a semi-supervised VAE's test accuracy; training seconds are the
sum of the epochs'. A conditional VAE's NLL is −log p(x | y) (the model says which) and is
flagged beside the others' −log p(x); the semi-supervised VAE's is −log p(x), its label summed
out, and compares with any VAE's. A run without ``eval.json`` (still training) shows no test
numbers; an ``eval.json`` of other weights than ``--checkpoint`` asks for is flagged, not
shown. Runs of pyro-vae ≤ 0.2, which monitored the test split and kept no best checkpoint,
are read as they are (their curve is labelled so).

Numbers of different data — another dataset, binarization, split, test-set size, image
size or folder contents — or of different estimators are not comparable: such runs are
flagged (a data label per row, a legend, and a warning line), never silently mixed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from matplotlib.ticker import MaxNLocator

from pyro_vae import plugins
from pyro_vae.errors import CheckpointError, ConfigError

from .config import RunConfig
from .io import atomic_write_text
from .plots import mark_best, readable_limits, save_figure, subplots
from .restore import load_run
from .rundir import best_of, held_out_curve, paths, read_config, read_metrics
from .settings import CompareOptions

#: (key, Markdown header, format) of the table's columns, in order.
COLUMNS: Tuple[Tuple[str, str, str], ...] = (
    ("run", "run", "{}"),
    ("data", "data", "{}"),
    ("model", "model", "{}"),
    ("guide", "guide", "{}"),
    ("prior", "prior", "{}"),
    ("objective", "objective", "{}"),
    ("epochs", "epochs", "{}"),
    ("best_epoch", "best epoch", "{}"),
    ("parameters", "parameters", "{:,}"),
    ("valid_elbo", "valid ELBO", "{:.2f}"),
    ("test_elbo", "test ELBO", "{:.2f}"),
    ("nll", "NLL", "{:.2f}"),
    ("k", "k", "{}"),
    ("nll_sem", "± s.e.", "{:.2f}"),
    ("weights", "from", "{}"),
    ("bits_per_dim", "bits/dim", "{:.3f}"),
    ("kl", "KL", "{:.2f}"),
    ("active_units", "active units", "{}"),
    ("accuracy", "accuracy", "{:.2%}"),
    ("train_seconds", "train s", "{:.1f}"),
)


def objective(config: RunConfig) -> str:
    """What the run maximised, in words: the ELBO (with L particles, β, KL warm-up, free bits,
    and the weight decay that regularised it;
    of p(x | y) for a conditional VAE, with the classification term for a semi-supervised
    one) or, for a density flow, the exact log-likelihood."""
    if config.kind == "flow":
        return "exact log-likelihood"
    train = config.train
    if getattr(train, "objective", "elbo") == "iwae":
        text = f"IWAE (K={train.particles})"
    else:
        text = "ELBO" if train.particles == 1 else f"ELBO (L={train.particles})"
    if config.data.labels_per_class is not None:  # a semi-supervised run (recorded for it alone)
        text += f" + α·classifier, {config.data.labels_per_class} labels/class"
    elif config.model.get("num_classes") is not None:  # a conditional VAE
        text += " of p(x|y)"
    if getattr(train, "beta", 1.0) != 1.0:
        text += f", β={train.beta:g}"
    if train.free_bits > 0:
        text += f", free bits {train.free_bits:g}"
    if train.kl_warmup > 0:
        text += f", KL warm-up {train.kl_warmup}"
    if train.weight_decay > 0:  # not a term of the objective, but what regularised it
        text += f", weight decay {train.weight_decay:g}"
    return text


def data_description(config: RunConfig, result: Optional[Dict[str, Any]]) -> str:
    """The data a run's numbers are about, the same whether or not it has been evaluated
    yet: dataset, binarization, split, the subset, and what else fixes the images (image
    size, channels, test fraction, a folder's fingerprint)."""
    data = config.data
    name, split = (result.get("dataset", data.name), result.get("split", "test")) if result else (data.name, "test")
    text = f"{name} ({data.binarize}, {split} split"
    if name == data.name:  # the run's own data: its settings describe them
        size = data.test_size if split == "test" else data.train_size
        if size:
            text += f", first {size} images"
        if data.image_size:
            text += f", {data.image_size[0]}×{data.image_size[1]}"
        if data.channels:
            text += f", {data.channels} channel{'s' if data.channels > 1 else ''}"
        if data.test_fraction:
            text += f", test fraction {data.test_fraction:g}"
        if data.fingerprint:
            text += f", files {data.fingerprint}"
        if data.dataset_set:
            text += ", " + ", ".join(data.dataset_set)
    return text + ")"


#: eval.json's numbers that the table formats.
NUMBERS = ("elbo", "nll", "nll_sem", "bits_per_dim", "kl", "active_units", "train_seconds", "epochs",
           "checkpoint_epoch", "accuracy")


def read_eval(run_dir: str) -> Optional[Dict[str, Any]]:
    path = paths(run_dir)["eval"]
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is unreadable: {err}") from None
    if not isinstance(result, dict):
        raise CheckpointError(f"{path} is not a pyro-vae evaluation")
    for key in NUMBERS:  # a hand-edited file: one line, not a format error in the table
        value = result.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise CheckpointError(f"{path} is not a pyro-vae evaluation: {key} is {value!r}, not a number")
    return result


def count_parameters(run_dir: str) -> Optional[int]:
    """Parameters of the run's model and guide, each counted once (``None`` before the
    first checkpoint)."""
    if not os.path.isfile(paths(run_dir)["checkpoint"]):
        return None
    # a model from outside pyro-vae: its code checked first
    model, guide, _, _ = load_run(run_dir, checkpoint="train")
    unique = {id(p): p for module in (model, guide) for p in module.parameters()}
    return sum(p.numel() for p in unique.values())


def run_row(run_dir: str, checkpoint: str = "best") -> Dict[str, Any]:
    """One row of the table (``None`` where a value is not defined or not measured yet); the
    test numbers only from an ``eval.json`` of the weights ``checkpoint`` names."""
    config = read_config(run_dir)
    metrics = read_metrics(run_dir)
    result = read_eval(run_dir)
    best = best_of(metrics)
    label, curve = held_out_curve(metrics)
    row: Dict[str, Any] = {
        "run": os.path.normpath(run_dir),
        "model": plugins.display_name(config.model["name"]),
        "guide": plugins.display_name(config.guide["name"]) if config.kind == "vae" else "—",
        "prior": (config.prior or {}).get("name", "—"),
        "objective": objective(config),
        "epochs": metrics[-1]["epoch"] if metrics else 0,
        "best_epoch": best[0] if best else None,
        "valid_elbo": best[1] if best else None,
        "parameters": None,
        "dataset": data_description(config, result),
        "estimator": None,
        "curve": curve,
        "curve_label": label,
        "best": best,
        "train_seconds": sum(m.get("seconds", 0.0) for m in metrics),
        "other_weights": None,
    }
    try:
        row["parameters"] = count_parameters(run_dir)
    except CheckpointError as err:
        if not config.sources:
            raise
        # the run's own code is missing or changed: its numbers still compare, its size is unknown
        row["code"] = str(err)
    # a run of pyro-vae ≤ 0.2 still training: its last epoch's test ELBO (it monitored the test split)
    row["test_elbo"] = metrics[-1].get("test_elbo") if metrics and not result else None
    if result:
        # what "best" means for this run: the best epoch's weights, or its last without a selection
        wanted = checkpoint if best else "last"
        held = result.get("checkpoint", "last")  # an eval.json of pyro-vae ≤ 0.2: the last weights
        if held != wanted:
            row["other_weights"] = held
            return row
        row.update(test_elbo=result["elbo"], nll=result.get("nll"), nll_sem=result.get("nll_sem"),
                   estimator=result.get("estimator"),
                   k="exact" if result.get("estimator") == "exact" else result.get("iwae_samples"),
                   weights=f"{held} (epoch {result.get('checkpoint_epoch', result.get('epochs'))})",
                   bits_per_dim=result.get("bits_per_dim"),
                   kl=result.get("kl") if config.kind == "vae" else None,
                   active_units=result.get("active_units"), accuracy=result.get("accuracy"),
                   likelihood=result.get("likelihood", "p(x)"))
    return row


def compare_runs(run_dirs: Sequence[str],
                 checkpoint: str = "best") -> Tuple[List[Dict[str, Any]], List[str], List[str]]:
    """Rows of ``run_dirs``, the legend of their data labels, and warnings (NLLs of the
    weights ``checkpoint`` names).

    Returns:
        ``(rows, legend, warnings)``: each row's ``data`` is a label ``D1``, ``D2``, … of
        its data, explained by ``legend``; ``warnings`` flags runs whose numbers cannot be
        compared (different data, different estimators, no evaluation yet).
    """
    if not run_dirs:
        raise ConfigError("compare needs at least one run directory")
    rows = [run_row(d, checkpoint) for d in run_dirs]
    datasets: List[str] = []
    for row in rows:
        if row["dataset"] not in datasets:
            datasets.append(row["dataset"])
        row["data"] = f"D{datasets.index(row['dataset']) + 1}"
    legend = [f"D{i + 1} = {d}" for i, d in enumerate(datasets)]
    warnings = []
    if len(datasets) > 1:
        labels = ", ".join(f"D{i + 1}" for i in range(len(datasets)))
        warnings.append(f"the runs use {len(datasets)} different data sets ({labels}): their numbers "
                        "are not comparable across data labels")
    estimators: Dict[str, List[str]] = {}
    for row in rows:
        if row["estimator"]:
            estimators.setdefault(row["estimator"], []).append(row["run"])
    if len(estimators) > 1:
        warnings.append("the NLLs come from different estimators (" + "; ".join(
            f"{e}: {', '.join(runs)}" for e, runs in estimators.items())
            + "): IWAE bounds tighten as k grows, an exact likelihood is no bound")
    warnings += [f"{row['run']}: {row['code']} (its parameters are not counted)" for row in rows if "code" in row]
    conditional = [row["run"] for row in rows if row.get("likelihood") == "p(x | y)"]
    if conditional and len(conditional) < len(rows):
        warnings.append(f"the NLL of a conditional VAE is −log p(x | y), not −log p(x) (lower by up to log C for "
                        f"C classes): {', '.join(conditional)}")
    other = [row for row in rows if row["other_weights"]]
    for row in other:
        warnings.append(f"the eval.json of {row['run']} is of its {row['other_weights']} checkpoint, not the "
                        f"{checkpoint} one asked for: no test numbers shown (pyro-vae evaluate {row['run']} "
                        f"--checkpoint {checkpoint})")
    pending = [row["run"] for row in rows if row["estimator"] is None and not row["other_weights"]]
    if pending:
        warnings.append(f"no eval.json yet (no test numbers): {', '.join(pending)}")
    return rows, legend, warnings


def _cell(row: Dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    return "—" if value is None else fmt.format(value)


def markdown(rows: List[Dict[str, Any]], legend: List[str], warnings: List[str]) -> str:
    """The table in Markdown, then the data legend and the warnings."""
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_cell(r, k, f) for k, _, f in COLUMNS) + " |" for r in rows]
    lines += [""] + legend + [f"warning: {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def table_text(rows: List[Dict[str, Any]], legend: List[str], warnings: List[str], fmt: str) -> str:
    """The table as ``.md``, ``.csv`` (one column per field, the data in words) or ``.json``
    (rows, legend and warnings)."""
    if fmt == ".md":
        return markdown(rows, legend, warnings)
    keys = [k for k, _, _ in COLUMNS] + ["dataset", "estimator"]
    if fmt == ".json":
        plain = [{k: r.get(k) for k in keys} for r in rows]
        return json.dumps({"runs": plain, "legend": legend, "warnings": warnings}, indent=2) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def curves_figure(rows: List[Dict[str, Any]], path: str) -> None:
    """The validation-ELBO curves of the runs over epochs, one line each (with a marker, so
    that a one-epoch run shows) and a star at its best epoch, one panel per data label —
    curves of different data are never drawn on one axis — on an axis where the late epochs
    are readable (:func:`~inference.plots.readable_limits`)."""
    labels = sorted({r["data"] for r in rows}, key=lambda d: int(d[1:]))
    fig, axes = subplots(1, len(labels), figsize=(6.5 * len(labels), 4.5), squeeze=False)
    for ax, label in zip(axes[0], labels):
        curves = []
        for row in rows:
            if row["data"] == label and row["curve"]:
                epochs, elbo = zip(*row["curve"])
                legacy = "" if row["curve_label"] == "validation ELBO" else " (test ELBO, pyro-vae ≤ 0.2)"
                line, = ax.plot(epochs, elbo, marker="o", markersize=3, label=row["run"] + legacy)
                mark_best(ax, row["best"], color=line.get_color(), label=False)
                curves.append(row["curve"])
        limits = readable_limits(curves)
        if limits is not None:
            ax.set_ylim(*limits)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (★ best)")
        ax.set_ylabel("validation ELBO (nats per example)")
        if len(labels) > 1:
            ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_lines():  # a panel of runs without a curve yet has nothing to label
            ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def compare(run_dirs: Sequence[str], out: Optional[str] = None, figure: Optional[str] = "compare.png",
            checkpoint: str = "best") -> str:
    """Compare runs: write the table to ``out`` (``.md``, ``.csv`` or ``.json``) if given and
    the curves to ``figure`` if given; return the Markdown table (NLLs of the weights
    ``checkpoint`` names)."""
    CompareOptions(run_dirs=tuple(run_dirs), out=out, figure=figure, checkpoint=checkpoint).check_paths()
    rows, legend, warnings = compare_runs(run_dirs, checkpoint)
    if out is not None:
        atomic_write_text(out, table_text(rows, legend, warnings, os.path.splitext(out)[1].lower()))
    if figure is not None:
        curves_figure(rows, figure)
    return markdown(rows, legend, warnings)


def main(opts: CompareOptions, _: None = None) -> int:
    """``pyro-vae compare``: the table on stdout (``compare runs/* > table.md`` is the table
    alone), what else was written on stderr."""
    print(compare(opts.run_dirs, out=opts.out, figure=opts.figure, checkpoint=opts.checkpoint), end="")
    for path in (opts.out, opts.figure):
        if path is not None:
            print(f"wrote {path}", file=sys.stderr)
    return 0
