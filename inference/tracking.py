"""MLflow beside TensorBoard: ``pyro-vae train --tracker mlflow`` logs a run to an MLflow
tracking store through MLflow's own client (:class:`mlflow.tracking.MlflowClient`).

The store is ``MLFLOW_TRACKING_URI`` (default: a local file store ``./mlruns``, which
``mlflow ui`` reads), the experiment ``MLFLOW_EXPERIMENT_NAME`` (default ``pyro-vae``), the
MLflow run named after the run directory. Logged: the run's configuration as parameters
(``model.name``, ``train.lr``, … — flattened ``config.json``; the settings a resume may
change, ``train.epochs``, as tags, which may change), every metrics line as metrics at the
epoch's step, and at the end the final evaluation (``eval.nll``, …), the figures,
``config.json`` and ``eval.json`` as artifacts; the run ends FINISHED, KILLED (Ctrl-C,
SIGTERM) or FAILED.

The run directory records the MLflow run in ``mlflow.json`` (tracking URI, experiment and
run ids), so that ``train --resume`` continues the same MLflow run (a resume keeps the
run's tracker unless told ``--tracker none``). An epoch is logged after its checkpoint: a
run stopped between the two logs that epoch again when resumed (MLflow shows the latest
value of a step). A store that cannot be written is one :class:`~pyro_vae.errors.OutputError`
line. Only rank 0 logs. MLflow is optional (the extra ``[mlflow]``; ``mlflow-skinny`` is
enough): without it ``--tracker mlflow`` is refused before any work, in one line that says
how to install it (:class:`inference.settings.TrainRun`).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import time
from dataclasses import fields
from typing import Any, Dict, Iterator, List, Optional

from pyro_vae import plugins
from pyro_vae.errors import CheckpointError, OutputError
from pyro_vae.infer.config import TrainConfig

from .config import RunConfig
from .io import atomic_write_json
from .rundir import MLFLOW

#: The experiment of runs whose environment names none (MLflow's MLFLOW_EXPERIMENT_NAME).
EXPERIMENT = "pyro-vae"
#: MLflow's limit on a parameter's value (characters; 6000 since MLflow 2.x, 500 before).
MAX_PARAM = 500


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, or the local file store ``./mlruns`` as an absolute URI (a run
    resumed from another directory finds it)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or pathlib.Path(os.path.abspath("mlruns")).as_uri()


def flat_params(config: RunConfig) -> Dict[str, str]:
    """``config.json`` as MLflow parameters: dotted keys, values as text (JSON for lists and
    objects), without what a resume may change (:func:`mutable_tags`) or when it was made."""
    out: Dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[prefix] = text if len(text) <= MAX_PARAM else text[: MAX_PARAM - 1] + "…"

    data = config.to_dict()
    data.pop("created", None)
    walk("", data)
    for key in mutable_tags(config):
        out.pop(key, None)
    return out


def mutable_tags(config: RunConfig) -> Dict[str, str]:
    """The settings a resumed run may change (``train.epochs``), logged as tags (an MLflow
    parameter cannot change)."""
    train = config.train.to_dict()
    return {f"train.{f.name}": str(train[f.name]) for f in fields(TrainConfig) if f.metadata.get("on_resume")}


class MLflowTracker:
    """The MLflow run of one run directory (a no-op when ``enabled`` is false).

    Args:
        run_dir: the run directory (``mlflow.json`` is kept there).
        config: the run's configuration.
        enabled: whether this process logs (``--tracker mlflow``, or a resumed run's record;
            rank 0 only).
    """

    def __init__(self, run_dir: str, config: RunConfig, enabled: bool) -> None:
        self.client, self.run_id, self.uri = None, None, None
        if not enabled:
            return
        # optional (the extra [mlflow]) and 1.2 s to import: only for a run that logs to it
        from mlflow import entities, tracking

        self.entities = entities

        record = read_record(run_dir)
        self.uri = record["tracking_uri"] if record else tracking_uri()
        if "://" not in self.uri or self.uri.startswith("file:"):
            # MLflow 3 keeps its file store only on request; ./mlruns is what `mlflow ui` reads
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        with self._talking():
            self.client = tracking.MlflowClient(tracking_uri=self.uri)
            if record:
                self.run_id = record["run_id"]
                self.client.get_run(self.run_id)  # still there?
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                self.run_id = self._create(run_dir, config)
            for key, value in mutable_tags(config).items():
                self.client.set_tag(self.run_id, key, value)

    def _create(self, run_dir: str, config: RunConfig) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run = self.client.create_run(experiment_id, run_name=os.path.basename(os.path.abspath(run_dir)),
                                     tags={"pyro_vae.run_dir": os.path.abspath(run_dir),
                                           "pyro_vae.model": plugins.display_name(config.model["name"])})
        params = [self.entities.Param(k, v) for k, v in flat_params(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes 100 parameters per batch
            self.client.log_batch(run.info.run_id, params=params[start : start + 100])
        atomic_write_json(os.path.join(run_dir, MLFLOW), {"tracking_uri": self.uri, "experiment_id": experiment_id,
                                                          "run_id": run.info.run_id})
        return run.info.run_id

    @contextlib.contextmanager
    def _talking(self) -> Iterator[None]:
        """MLflow's failures (a store that cannot be reached or written) as one OutputError."""
        try:
            yield
        except (OutputError, CheckpointError):
            raise
        except Exception as err:  # noqa: BLE001 - MlflowException, OSError, a server's HTTP errors
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise OutputError(f"MLflow ({self.uri}): {first}") from None

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def log_epoch(self, metrics: Dict[str, Any]) -> None:
        """Every number of one metrics line, at the epoch's step."""
        if self.client is None:
            return
        step, now = int(metrics["epoch"]), int(time.time() * 1000)
        batch = [self.entities.Metric(k, float(v), now, step) for k, v in metrics.items()
                 if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)]
        with self._talking():
            self.client.log_batch(self.run_id, metrics=batch)

    def log_final(self, result: Dict[str, Any], files: List[str]) -> None:
        """The final evaluation as metrics ``eval.*`` at the last step, and ``files`` (the
        figures, ``config.json``, ``eval.json``) as artifacts."""
        if self.client is None:
            return
        step, now = int(result.get("epochs", 0)), int(time.time() * 1000)
        batch = [self.entities.Metric(f"eval.{k}", float(v), now, step) for k, v in result.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        with self._talking():
            self.client.log_batch(self.run_id, metrics=batch)
            for path in files:
                if os.path.isfile(path):
                    self.client.log_artifact(self.run_id, path)

    def close(self, status: str = "FINISHED") -> None:
        """End the MLflow run with ``status`` (FINISHED, KILLED, FAILED)."""
        if self.client is not None:
            client, self.client = self.client, None
            with self._talking():
                client.set_terminated(self.run_id, status)


def logs_to_mlflow(run_dir: str, tracker: Optional[str]) -> bool:
    """Whether a run logs to MLflow: asked to (``tracker="mlflow"``), or — ``tracker`` not
    given — a run that did before (its ``mlflow.json``: a resume keeps its tracker)."""
    return tracker == "mlflow" or (tracker is None and read_record(run_dir) is not None)


def read_record(run_dir: str) -> Optional[Dict[str, str]]:
    """The MLflow run a run directory logs to (its ``mlflow.json``), or ``None``."""
    path = os.path.join(run_dir, MLFLOW)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is unreadable: {err}") from None
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("tracking_uri", "run_id")):
        raise CheckpointError(f"{path} is not a pyro-vae record of an MLflow run")
    return record
