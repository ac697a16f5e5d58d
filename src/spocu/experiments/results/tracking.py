"""``spocu compare --track``: the finished comparison into MLflow or TensorBoard, beside its own files.

Tracking reads what the comparison wrote (``results.json``'s runs, the run files, the report and
plots) after they are complete, so it can never change a result, and a tracking failure (store
unreachable, disk full, a package missing) warns once and leaves the comparison's files as they are.

**MLflow** (``--track mlflow``, ``pip install "spocu[mlflow]"``): one parent run per comparison
(tag ``spocu.comparison``), holding the protocol as params and ``report.md``, ``results.json``,
``epochs.csv`` and the plots as artifacts, the grid as tags ``spocu.activations``, ``spocu.seeds``;
inside it one run per (activation, seed), as
``mlflow.pytorch.autolog`` would log it: the protocol and the run's own facts as params,
``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy``, ``epoch_seconds`` per epoch
(step = epoch), the final ``test_accuracy`` and ``test_loss``, and the run's JSON file. The store is
``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<parent of --out>/mlflow.db`` with artifacts in
``<parent of --out>/mlartifacts`` (so ``spocu-runs/`` collects every comparison:
``mlflow ui --backend-store-uri sqlite:///spocu-runs/mlflow.db``); the experiment is
``MLFLOW_EXPERIMENT_NAME`` or ``spocu compare``. A resumed comparison finds its parent and the
runs already logged (by tag) and logs only the others; a run whose logging was cut short is deleted
and logged again.

**TensorBoard** (``--track tensorboard``, ``pip install "spocu[tensorboard]"``): one event-file
directory per run, ``<out>/tensorboard/<activation>-seed<k>/``, with ``loss/train``, ``loss/val``,
``accuracy/train``, ``accuracy/val``, ``epoch_seconds`` per epoch and ``test/accuracy``,
``test/loss`` (``tensorboard --logdir <out>/tensorboard`` overlays them). Each directory is written
under a temporary name and renamed when complete; one that exists is not written again.

Examples:
    >>> check_trackers(("mlflow", "wandb"))
    Traceback (most recent call last):
    ...
    spocu.experiments.errors.OptionError: --track wandb: unknown tracker; choose mlflow or tensorboard
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spocu.experiments.errors import OptionError

if TYPE_CHECKING:
    from spocu.experiments.compare import CompareOutcome

__all__ = ["TRACKERS", "check_trackers", "track_comparison", "mlflow_location"]

TRACKERS = ("mlflow", "tensorboard")
#: the packages each tracker imports (MLflow's local default store is SQLite, through SQLAlchemy and Alembic)
_NEEDS = {"mlflow": ("mlflow",), "tensorboard": ("tensorboard", "torch")}
_EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
_PARAM_LIMIT = 6000  # MLflow's longest param value


def check_trackers(names: tuple[str, ...]) -> None:
    """Refuse an unknown tracker or one whose package is missing, before anything is trained."""
    for name in names:  # a misspelt name first: it is the error whatever is installed
        if name not in TRACKERS:
            raise OptionError(f"--track {name}: unknown tracker; choose {' or '.join(TRACKERS)}")
    for name in names:
        needs = list(_NEEDS[name])
        if name == "mlflow" and not os.environ.get("MLFLOW_TRACKING_URI"):
            needs += ["sqlalchemy", "alembic"]  # the default local store, sqlite:///
        missing = [m for m in needs if importlib.util.find_spec(m) is None]
        if missing:
            raise OptionError(f'--track {name} needs {", ".join(missing)}: pip install "spocu[{name}]"')


def track_comparison(names: tuple[str, ...], outcome: CompareOutcome, say: Callable[[str], None]) -> None:
    """Log the finished comparison ``outcome`` to each tracker in ``names``; a failure warns once per tracker."""
    for name in names:
        try:
            where = _LOGGERS[name](outcome)
        except Exception as error:  # noqa: BLE001 - tracking must never fail (or change) the comparison
            text = " ".join(f"{type(error).__name__}: {error}".split())
            if len(text) > 300:
                text = text[:297] + "..."
            say(
                f"warning: --track {name} failed ({text}); the comparison's own files in {outcome.out} are complete; "
                "run the same command with --out to log the missing runs"
            )
        else:
            say(f"tracked: {where}")


# ----------------------------------------------------------------------------- the runs


def _runs(outcome: CompareOutcome) -> list[tuple[str, dict, Path]]:
    """(key, run record, run file) per run in results.json; the key is the run file's name stem."""
    from spocu.experiments.run.store import OutputDir

    out = OutputDir(outcome.out)
    specs = {spec.canonical: spec for spec in outcome.config.activations}
    result = []
    for run in outcome.results["runs"]:
        path = out.run_path(specs[run["activation"]], run["seed"])
        result.append((path.stem, run, path))
    return result


def _flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested protocol dicts as MLflow params: dotted keys, JSON values for lists and None."""
    if isinstance(data, dict):
        flat: dict[str, str] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    text = data if isinstance(data, str) else json.dumps(data)
    return {prefix.rstrip("."): text[:_PARAM_LIMIT]}


def _epoch_values(run: dict) -> list[tuple[str, float, int]]:
    """(metric, value, step) per epoch; values that were not finite (None) are left out."""
    values = []
    for epoch in run["epochs"]:
        for metric in _EPOCH_METRICS:
            if epoch[metric] is not None:
                values.append((metric, float(epoch[metric]), int(epoch["epoch"])))
        values.append(("epoch_seconds", float(epoch["seconds"]), int(epoch["epoch"])))
    return values


def _final_values(run: dict) -> list[tuple[str, float]]:
    return [(m, float(run[m])) for m in ("test_accuracy", "test_loss") if run[m] is not None]


# ----------------------------------------------------------------------------- MLflow


def mlflow_location(out: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment): ``MLFLOW_TRACKING_URI``, else a SQLite store beside ``out``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None
    home = Path(out).expanduser().resolve().parent
    return f"sqlite:///{home / 'mlflow.db'}", (home / "mlartifacts").as_uri()


def _comparison_id(outcome: CompareOutcome) -> str:
    where = str(Path(outcome.out).expanduser().resolve())
    return hashlib.sha256(f"{where}\n{outcome.results['protocol_hash']}".encode()).hexdigest()[:32]


def _log_mlflow(outcome: CompareOutcome) -> str:
    import logging

    from mlflow.entities import Metric, Param, RunStatus
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its store set-up INFO lines would bury the progress
    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri, artifacts = mlflow_location(outcome.out)
    client = MlflowClient(tracking_uri=uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "spocu compare"
    experiment = client.get_experiment_by_name(name)
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(name, artifact_location=artifacts)
    )
    cid = _comparison_id(outcome)
    logged = client.search_runs([experiment_id], filter_string=f"tags.`spocu.comparison` = '{cid}'", max_results=50000)
    parents = [r for r in logged if r.data.tags.get("spocu.role") == "comparison"]
    # the protocol as params (immutable in MLflow); the grid (activations, seeds) may grow on resume: tags
    grid = {key: outcome.results["config"].get(key) for key in ("activations", "seeds")}
    protocol = _flatten({k: v for k, v in outcome.results["config"].items() if k not in grid})
    protocol["protocol_hash"] = outcome.results["protocol_hash"]

    def log_batch(run_id: str, params: dict[str, str] | None = None, metrics: list[Metric] | None = None) -> None:
        params_list = [Param(k, v) for k, v in (params or {}).items()]
        metrics = metrics or []
        for i in range(0, max(len(params_list), 1), 100):  # MLflow's batch limits: 100 params, 1000 metrics
            client.log_batch(run_id, params=params_list[i : i + 100])
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])

    if parents:
        parent = parents[0].info.run_id
    else:
        parent = client.create_run(
            experiment_id,
            run_name=Path(outcome.out).name,
            tags={
                "spocu.comparison": cid,
                "spocu.role": "comparison",
                "spocu.output_dir": str(Path(outcome.out).resolve()),
            },
        ).info.run_id
        log_batch(parent, protocol)
    children = {r.data.tags.get("spocu.run"): r for r in logged if r.data.tags.get("spocu.role") == "run"}
    now = int(time.time() * 1000)
    for key, run, path in _runs(outcome):
        previous = children.get(key)
        if previous is not None:
            if previous.info.status == RunStatus.to_string(RunStatus.FINISHED):
                continue  # logged by an earlier (resumed) compare
            client.delete_run(previous.info.run_id)  # its logging was cut short
        child = client.create_run(
            experiment_id,
            run_name=f"{run['activation']} seed {run['seed']}",
            tags={
                "mlflow.parentRunId": parent,
                "spocu.comparison": cid,
                "spocu.role": "run",
                "spocu.run": key,
                "spocu.activation": run["activation"],
                "spocu.seed": str(run["seed"]),
            },
        ).info.run_id
        facts = {
            k: json.dumps(run[k]) if not isinstance(run[k], str) else run[k]
            for k in (
                "activation",
                "seed",
                "init",
                "framework",
                "framework_version",
                "device",
                "threads",
                "num_parameters",
                "diverged_at",
            )
        }
        last = max((int(e["epoch"]) for e in run["epochs"]), default=0)
        metrics = [Metric(m, v, now, step) for m, v, step in _epoch_values(run)]
        metrics += [Metric(m, v, now, last) for m, v in _final_values(run)]
        log_batch(child, {**protocol, **facts}, metrics)
        client.log_artifact(child, str(path))
        client.set_terminated(child, "FINISHED")
    for key, value in grid.items():
        client.set_tag(parent, f"spocu.{key}", json.dumps(value))
    for artifact in (
        "report.md",
        "results.json",
        "epochs.csv",
        *sorted(p.name for p in Path(outcome.out).glob("*.png")),
    ):
        if (Path(outcome.out) / artifact).is_file():
            client.log_artifact(parent, str(Path(outcome.out) / artifact))
    client.set_terminated(parent, "FINISHED")
    return f"MLflow {uri}, experiment {name!r}, run {parent}"


# ----------------------------------------------------------------------------- TensorBoard

#: TensorBoard tag per epoch metric: train and val side by side in one chart
_TB_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_accuracy": "accuracy/train",
    "val_accuracy": "accuracy/val",
    "epoch_seconds": "epoch_seconds",
}


def _tensorboard_without_tensorflow() -> None:
    """Let TensorBoard write through its own TensorFlow stub when TensorFlow is not loaded yet.

    TensorBoard imports TensorFlow whenever it is installed (tensorboard.compat.tf), which costs
    tens of seconds, floods stderr and, after torch's Triton, risks the two LLVMs' clash; the
    ``tensorboard.compat.notf`` module is TensorBoard's own switch to its stub (its no-TensorFlow build).
    """
    if "tensorflow" not in sys.modules and "tensorboard.compat.notf" not in sys.modules:
        sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")


def _log_tensorboard(outcome: CompareOutcome) -> str:
    _tensorboard_without_tensorflow()
    from torch.utils.tensorboard import SummaryWriter

    root = Path(outcome.out) / "tensorboard"
    root.mkdir(exist_ok=True)
    for key, run, _ in _runs(outcome):
        final = root / key
        if final.is_dir():
            continue  # written by an earlier (resumed) compare
        partial = root / f".{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)  # left by a write that was cut short
        writer = SummaryWriter(log_dir=str(partial))
        try:
            for metric, value, step in _epoch_values(run):
                writer.add_scalar(_TB_TAGS[metric], value, step)
            last = max((int(e["epoch"]) for e in run["epochs"]), default=0)
            for metric, value in _final_values(run):
                writer.add_scalar(f"test/{metric.removeprefix('test_')}", value, last)
            writer.add_text("protocol", f"```\n{json.dumps(outcome.results['config'], indent=1)}\n```", 0)
        finally:
            writer.close()
        os.replace(partial, final)
    return f"TensorBoard event files in {root} (tensorboard --logdir {root})"


_LOGGERS: dict[str, Callable[[Any], str]] = {"mlflow": _log_mlflow, "tensorboard": _log_tensorboard}
