"""The engine interface and the framework-independent record of one run.

An engine (:class:`Engine`, a ``typing.Protocol`` that an engine *module* satisfies) trains one
(activation, seed) run of an experiment::

    engine.train_run(config, dataset, activation, seed, device=..., threads=..., on_epoch=...) -> RunResult

and reports ``engine.NAME`` and ``engine.framework_version()``; it also provides
``resolve_device(name)`` and ``choose_threads(config, input_shape, num_classes, device)``, and may
provide ``worker_device(device, worker_index)`` (the device of a ``--jobs`` worker) and
``check_config(config)`` (raises ValueError for a protocol it cannot run). Every engine builds its
result with :func:`make_run_result`, the one constructor that fills in what all engines record the
same way (canonical activation name, init, timings, data fingerprint). Engines:
:mod:`spocu.experiments.run.torch_engine` (also takes ``dist=``: data-parallel under ``torchrun``) and
:mod:`spocu.experiments.run.keras_engine` (``--framework keras``, Keras's own ``fit``). Both return the
same :class:`RunResult`, so the runner, the statistics and the report need no change. Each run is
stored as its own JSON file (``runs/<activation>-seed<k>.json``, :meth:`RunResult.to_json`), from
which ``results.json`` is assembled -- so runs can come from parallel processes or other machines.

Contract of ``train_run`` (what makes runs comparable):

- the same ``seed`` gives the same batch order for every activation (:func:`batch_order`) and,
  where shapes agree, the same initial draws, scaled by each activation's init scheme;
- after each epoch: mean training loss and accuracy over that epoch's minibatches (as Keras
  reports them), then loss and accuracy on the validation split; ``seconds`` times the training
  part of the epoch only, ``eval_seconds`` the validation pass;
- the test split is evaluated once, after the last epoch (no selection on the test set);
- a non-finite training loss stops the run (``diverged_at``); its test metrics are still recorded;
- SPOCU's kernels are chosen before the first step and never change during the run
  (:mod:`spocu.experiments.run.kernels`), recorded as ``kernel_path``: a run's numbers depend on its
  configuration and seed, not on whether a kernel build was still in progress.
- with ``--split per-seed`` the run trains and tests on ``dataset.for_seed(seed)``, its seed's own split
  (the engine calls it, so every executor gets the same split); ``split_fingerprint`` names its test samples.

Example:
    >>> order = batch_order(seed=3, epoch=0, n=5)
    >>> sorted(order.tolist()), bool((order == batch_order(3, 0, 5)).all())
    ([0, 1, 2, 3, 4], True)
"""

from __future__ import annotations

import datetime as _dt
import importlib
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from spocu.experiments.seeding import batch_order, derive_seed

if TYPE_CHECKING:  # annotations only: importing them here would make engines depend on config and datasets
    from spocu.experiments.activations import ActivationSpec
    from spocu.experiments.config import ExperimentConfig
    from spocu.experiments.data.datasets import Dataset

__all__ = [
    "SCHEMA_RUN",
    "TIMING_FIELDS",
    "EPOCH_TIMING_FIELDS",
    "Engine",
    "EpochRecord",
    "RunResult",
    "make_run_result",
    "utc_now",
    "HUGE_LOGIT",
    "robust_test_loss",
    "batch_order",
    "derive_seed",
    "get_engine",
    "ENGINES",
]

SCHEMA_RUN = "spocu.run/1"

#: the fields of a run file that measure time (they differ between two runs of the same configuration
#: and seed; every other field is the same, bit for bit, on the same machine)
TIMING_FIELDS = ("seconds", "started_at", "finished_at")
#: the timing fields of each epoch record
EPOCH_TIMING_FIELDS = ("seconds", "eval_seconds")

#: framework name -> module implementing the engine interface
ENGINES = {"torch": "spocu.experiments.run.torch_engine", "keras": "spocu.experiments.run.keras_engine"}


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass
class EpochRecord:
    """Metrics after one epoch (None where the value was not finite)."""

    epoch: int
    train_loss: float | None
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    eval_seconds: float

    def __post_init__(self) -> None:
        for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            setattr(self, name, _finite_or_none(getattr(self, name)))


@dataclass
class RunResult:
    """Everything one run produced, independent of the framework that trained it."""

    activation: str
    seed: int
    init: str
    framework: str
    framework_version: str
    device: str
    threads: int | None
    num_parameters: int
    epochs: list[EpochRecord]
    test_loss: float | None
    test_accuracy: float
    test_predictions: list[int]
    diverged_at: int | None
    seconds: float
    started_at: str
    finished_at: str
    protocol_hash: str = ""
    dataset_fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: the kernels that computed SPOCU, fixed before the first step (:mod:`spocu.experiments.run.kernels`);
    #: None where the network holds no SPOCU (and in run files written before this field existed)
    kernel_path: str | None = None
    #: the learning rate the run trained with (``--tune lr``: its activation's chosen rate); None in older files
    lr: float | None = None
    #: the user's activation (``MODULE:NAME``): sha256 of its source file when the run trained; None otherwise
    activation_source_sha256: str | None = None
    #: sha256 (16 hex digits) of the test samples' indices (``Dataset.split_fingerprint``); "" in runs made before it existed
    split_fingerprint: str = ""
    #: the median of the test samples' losses (one exploding sample cannot move it); None if not finite or not recorded
    test_loss_median: float | None = None
    #: the share of test samples whose largest |logit| exceeds :data:`HUGE_LOGIT` (or is not finite); None if not recorded
    test_huge_logit_share: float | None = None

    def __post_init__(self) -> None:
        self.test_loss = _finite_or_none(self.test_loss)
        self.test_loss_median = _finite_or_none(self.test_loss_median)
        self.epochs = [e if isinstance(e, EpochRecord) else EpochRecord(**e) for e in self.epochs]

    def to_json(self) -> dict[str, Any]:
        """The run as a JSON-ready dict, tagged with the run file's ``schema``."""
        return {"schema": SCHEMA_RUN, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        """The run read back from :meth:`to_json`'s dict; a ValueError if its ``schema`` is not this version's."""
        if data.get("schema") != SCHEMA_RUN:
            raise ValueError(f"not a {SCHEMA_RUN} record (schema {data.get('schema')!r})")
        fields = {k: v for k, v in data.items() if k != "schema"}
        return cls(**fields)


EpochCallback = Callable[[EpochRecord], None]


#: a test sample whose largest |logit| exceeds this counts as exploding (``test_huge_logit_share``)
HUGE_LOGIT = 1e6


def robust_test_loss(per_sample_loss: np.ndarray, max_abs_logit: np.ndarray) -> dict[str, float | None]:
    """The test loss robustly: the median per-sample loss, and the share of samples with exploding logits.

    ``max_abs_logit``: each sample's largest |logit| (NaN counts as exploding).

    Example:
        >>> robust_test_loss(np.array([0.1, 0.2, 1e9]), np.array([3.0, 2.0, 2e9]))
        {'test_loss_median': 0.2, 'test_huge_logit_share': 0.3333333333333333}
    """
    losses = np.asarray(per_sample_loss, dtype=np.float64)
    logits = np.asarray(max_abs_logit, dtype=np.float64)
    if len(losses) == 0:
        return {"test_loss_median": None, "test_huge_logit_share": None}
    with np.errstate(invalid="ignore"):
        huge = ~(logits <= HUGE_LOGIT)  # NaN and inf count
    return {
        "test_loss_median": _finite_or_none(float(np.median(losses))),
        "test_huge_logit_share": float(np.mean(huge)),
    }


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (``started_at`` / ``finished_at`` of a run)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def make_run_result(
    *,
    activation: ActivationSpec,
    seed: int,
    framework: str,
    framework_version: str,
    device: str,
    threads: int | None,
    num_parameters: int,
    epochs: list[EpochRecord],
    test_loss: float | None,
    test_accuracy: float,
    test_predictions: Sequence[int],
    diverged_at: int | None,
    started_at: str,
    start_clock: float,
    protocol_hash: str,
    dataset: Dataset,
    extra: dict[str, Any] | None = None,
    test_loss_median: float | None = None,
    test_huge_logit_share: float | None = None,
    kernel_path: str | None = None,
    lr: float | None = None,
) -> RunResult:
    """The :class:`RunResult` of a run that has just ended; every engine builds its result here.

    Fills in the activation's canonical name and init, ``seconds`` (``time.perf_counter() -
    start_clock``), ``finished_at`` (now) and the data fingerprint, so that every engine records
    them the same way.
    """
    return RunResult(
        activation=activation.canonical,
        seed=int(seed),
        init=activation.init,
        framework=framework,
        framework_version=framework_version,
        device=device,
        threads=threads,
        num_parameters=int(num_parameters),
        epochs=list(epochs),
        test_loss=test_loss,
        test_accuracy=float(test_accuracy),
        test_predictions=[int(p) for p in test_predictions],
        diverged_at=diverged_at,
        seconds=time.perf_counter() - start_clock,
        started_at=started_at,
        finished_at=utc_now(),
        protocol_hash=protocol_hash,
        dataset_fingerprint=dataset.fingerprint(),
        extra=dict(extra or {}),
        kernel_path=kernel_path,
        lr=lr,
        activation_source_sha256=activation.source_sha256 if activation.is_user else None,
        split_fingerprint=dataset.split_fingerprint(),
        test_loss_median=test_loss_median,
        test_huge_logit_share=test_huge_logit_share,
    )


class Engine(Protocol):
    """What the runner needs from an engine (a module such as :mod:`~spocu.experiments.run.torch_engine`).

    Optional, looked up with ``getattr``: ``worker_device(device, worker_index) -> str`` and
    ``check_config(config)`` (raises ValueError for a protocol the engine cannot run).
    """

    NAME: str

    def framework_version(self) -> str:
        """The version of the framework that trains (e.g. ``torch.__version__``), for the run files."""

    def resolve_device(self, device: str) -> Any:
        """The framework's device for ``device`` (``cpu``, ``cuda[:N]`` or ``auto``); a ValueError if unavailable."""

    def choose_threads(
        self, config: ExperimentConfig, input_shape: tuple[int, ...], num_classes: int, device: Any
    ) -> int | None:
        """The CPU threads to train with for this model and data (None: the framework's default)."""

    def train_run(
        self,
        config: ExperimentConfig,
        dataset: Dataset,
        activation: ActivationSpec,
        seed: int,
        *,
        device: Any = ...,
        threads: int | None = ...,
        on_epoch: EpochCallback | None = ...,
        protocol_hash: str = ...,
    ) -> RunResult:
        """Train one run of ``activation`` with ``seed``; its :class:`RunResult` (see the engines' modules)."""


def get_engine(framework: str) -> Engine:
    """The engine module for ``framework`` (imported on demand)."""
    if framework not in ENGINES:
        raise ValueError(f"unknown framework {framework!r}; available: {', '.join(ENGINES)}")
    if framework == "keras":
        with _tensorflow_info_lines_dropped():
            return importlib.import_module(ENGINES[framework])
    return importlib.import_module(ENGINES[framework])


#: absl's INFO lines ("I1204 12:00:00.000000 123 port.cc:153] ...") and the preamble absl writes before its first line
_ABSL_INFO = re.compile(r"^(I\d{4} |WARNING: All log messages before absl::InitializeLog\(\) is called)")


@contextmanager
def _tensorflow_info_lines_dropped() -> Iterator[None]:
    """While the block runs (importing Keras, hence TensorFlow), hold file descriptor 2 in a temporary file, then
    write every line back except absl's INFO lines, when ``TF_CPP_MIN_LOG_LEVEL`` >= 1 asks for no INFO.

    TensorFlow 2.21 on CPUs with AVX-512 prints its oneDNN note at import through absl, before it reads
    ``TF_CPP_MIN_LOG_LEVEL``, so the variable (which ``spocu compare`` sets to 3 unless the user set it)
    cannot stop it; its C++ code writes to the descriptor, not to ``sys.stderr``.
    """
    try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        level = 0
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced sys.stderr (pytest's capture, a notebook)
        stderr_fd = -1
    if level < 1 or stderr_fd != 2:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [
                line
                for line in held.read().decode(errors="replace").splitlines(keepends=True)
                if not _ABSL_INFO.match(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
