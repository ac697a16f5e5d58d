"""An experiment's output directory: whose it is, its protocol, its lock, and its run files.

Layout::

    .spocu-compare                  marker: this directory is a spocu compare output
    config.json                     the protocol (checked when the directory is reused)
    config.toml                     the options it was last started with (spocu compare --config reads it)
    runs/<activation>-seed<k>.json  one finished run each (RunResult), written as the run ends
    results.json, epochs.csv        assembled from runs/ (:mod:`spocu.experiments.results.summary`)
    report.md, curves.png, activations.png

**Ours or refused.** ``--out`` must be new, empty, or a spocu compare output (the marker, or
a ``config.json`` of ours from before the marker existed). Anything else -- a directory holding
the user's files, a file, a device -- is refused before a single file is written
(:meth:`OutputDir.claim`).

**Run files are validated** against the protocol before they are used (:func:`validate_run`):
types, ranges (accuracies in [0, 1], losses >= 0; non-finite values are stored as null), the
epoch count, predictions within the class range and as many as the test set has, a test accuracy
that agrees with them, and that the run belongs to this protocol, data and file name. A bad file
raises :class:`~spocu.experiments.errors.BadRunFile` naming it.

Every write is atomic (:mod:`spocu._atomic`): an interrupt never leaves a half-written file under
a final name.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp()) / "exp"
    >>> out = OutputDir(root)
    >>> out.claim()
    >>> sorted(p.name for p in root.iterdir())
    ['.spocu-compare']
    >>> (root / "notes.txt").write_text("mine")
    4
    >>> OutputDir(root / "notes.txt").claim()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    spocu.experiments.errors.OutputRefused: --out .../notes.txt is a file, not a directory; choose a new or empty directory
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spocu._atomic import atomic_write_text, temp_owner
from spocu.experiments.errors import BadRunFile, ConfigMismatch, OutputBusy, OutputRefused
from spocu.experiments.run.engine import SCHEMA_RUN, RunResult

if TYPE_CHECKING:
    from spocu.experiments.activations import ActivationSpec
    from spocu.experiments.config import ExperimentConfig
    from spocu.experiments.data.datasets import Dataset

__all__ = ["MARKER", "SCHEMA_CONFIG", "OutputDir", "validate_run", "dump_json", "BAD_RUN_HINT"]

MARKER = ".spocu-compare"
#: the options of the last invocation, as ``spocu compare --config`` reads them
OPTIONS_FILE = "config.toml"
SCHEMA_CONFIG = "spocu.compare-config/1"
#: what to do about a bad run file (appended to its message)
BAD_RUN_HINT = "delete it to train this run again, or pass --skip-bad-runs to leave it out of the report"


def dump_json(data: Any) -> str:
    """Strict JSON (NaN/inf refused), one key per line: the format of every JSON file written here."""
    return json.dumps(data, indent=1, allow_nan=False) + "\n"


def _strict_loads(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):  # another user's process: alive (or unknowable)
        return True
    return True


def _special_files(root: Path) -> list[str]:
    """Entries of ``root`` (and its runs/) that are FIFOs, sockets or devices: reading one could block forever."""
    found = []
    for directory in (root, root / "runs"):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                mode = os.stat(entry.path).st_mode  # through a link: what would be read
            except OSError:
                continue
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
                found.append(f"{os.path.relpath(entry.path, root)} ({kind})")
    return found


def _is_our_config(path: Path) -> bool:
    try:
        data = _strict_loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and data.get("schema") == SCHEMA_CONFIG


@dataclass
class OutputDir:
    """An experiment's output directory; see the module docstring."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def runs(self) -> Path:
        """The folder of the run files, ``runs/`` in the output directory."""
        return self.root / "runs"

    def run_path(self, activation: ActivationSpec, seed: int) -> Path:
        """The run file of ``activation`` with ``seed``: ``runs/<activation slug>-seed<seed>.json``."""
        return self.runs / f"{activation.slug}-seed{seed}.json"

    # -- ownership ------------------------------------------------------------------------------

    def inspect(self) -> None:
        """Raise :class:`OutputRefused` unless the directory is new, empty or ours. Writes nothing."""
        root = self.root
        if not root.exists():
            for parent in root.parents:  # mkdir would fail below a file: say so now
                if parent.exists():
                    if not parent.is_dir():
                        raise OutputRefused(f"--out {root}: {parent} is not a directory")
                    break
            return
        if root.is_file():
            raise OutputRefused(f"--out {root} is a file, not a directory; choose a new or empty directory")
        if not root.is_dir():
            raise OutputRefused(
                f"--out {root} is not a directory (a device or other special file); choose a new or empty directory"
            )
        try:
            entries = sorted(p.name for p in root.iterdir())
        except OSError as error:
            raise OutputRefused(f"--out {root} cannot be read: {error.strerror or error}") from None
        special = _special_files(root)
        if special:
            raise OutputRefused(
                f"--out {root} holds {', '.join(special[:3])}: not a file spocu compare writes; "
                "nothing was written: remove it or choose a new or empty directory"
            )
        if not entries or (root / MARKER).is_file() or _is_our_config(root / "config.json"):
            return
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
        raise OutputRefused(
            f"--out {root} holds files that are not a spocu compare output ({shown}); "
            "nothing was written: choose a new or empty directory"
        )

    def claim(self) -> None:
        """Check ownership (:meth:`inspect`), then create the directory and its marker."""
        self.inspect()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not (self.root / MARKER).is_file():
                atomic_write_text(self.root / MARKER, "spocu compare output directory\n")
        except OSError as error:
            raise OutputRefused(f"cannot write to --out {self.root}: {error.strerror or error}") from None

    def record_options(self, text: str) -> None:
        """Write the options the experiment was started with to ``config.toml`` (``spocu compare --config`` reads it)."""
        try:
            atomic_write_text(self.root / OPTIONS_FILE, text)
        except OSError as error:
            raise OutputRefused(f"cannot write to --out {self.root}: {error.strerror or error}") from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the directory (POSIX ``flock``; a no-op where unavailable)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        try:
            handle = open(self.root / ".lock", "w")
        except OSError as error:
            raise OutputRefused(f"cannot write to --out {self.root}: {error.strerror or error}") from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise OutputBusy(
                    f"another spocu compare is writing to {self.root}; wait for it or use another --out"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- protocol -------------------------------------------------------------------------------

    def prepare(self, config: ExperimentConfig) -> None:
        """Create ``runs/``, or check that the stored protocol is ``config``'s; remove stale temp files."""
        self.runs.mkdir(parents=True, exist_ok=True)
        for directory in (self.root, self.runs):  # our own temp files, left by this process or a dead one
            for stale in directory.glob(".*.tmp"):
                owner = temp_owner(stale.name)
                if owner is not None and (owner == os.getpid() or not _alive(owner)) and stale.is_file():
                    stale.unlink(missing_ok=True)
        path = self.root / "config.json"
        protocol = config.protocol()
        if path.exists():
            stored = self._stored_protocol(path)
            if stored != json.loads(json.dumps(protocol)):
                differences = [
                    f"{key}: {json.dumps(stored.get(key))} there, {json.dumps(protocol.get(key))} now"
                    for key in sorted(set(stored) | set(protocol))
                    if json.dumps(stored.get(key)) != json.dumps(protocol.get(key))
                ]
                raise ConfigMismatch(
                    f"{self.root} holds runs of a different experiment ({'; '.join(differences)}). "
                    "Use the same options to resume it, or another --out for a new experiment."
                )
        else:
            atomic_write_text(
                path,
                dump_json({"schema": SCHEMA_CONFIG, "protocol": protocol, "protocol_hash": config.protocol_hash()}),
            )

    @staticmethod
    def _stored_protocol(path: Path) -> dict:
        problem = None
        try:
            if path.is_dir():
                problem = "a directory"
            else:
                data = _strict_loads(path.read_text())
                if not isinstance(data, dict):
                    problem = f"JSON {type(data).__name__}, not an object"
                elif data.get("schema") != SCHEMA_CONFIG:
                    problem = f"schema {data.get('schema')!r}, not {SCHEMA_CONFIG!r}"
                elif not isinstance(data.get("protocol"), dict):
                    problem = f"protocol {json.dumps(data.get('protocol'))}, not an object"
                else:
                    return data["protocol"]
        except (OSError, ValueError, UnicodeDecodeError) as error:
            problem = f"unreadable ({error})"
        raise ConfigMismatch(f"{path} is not a spocu compare config ({problem}); restore it, or use another --out")

    # -- runs -----------------------------------------------------------------------------------

    def load_run(
        self, activation: ActivationSpec, seed: int, config: ExperimentConfig, dataset: Dataset
    ) -> RunResult | None:
        """The finished, validated run, or None if it is not there; raises :class:`BadRunFile`."""
        path = self.run_path(activation, seed)
        if not path.exists() and not path.is_symlink():
            return None
        if path.is_dir():
            raise BadRunFile(
                path, "is a directory, not a run file; remove it to train this run, or pass --skip-bad-runs"
            )
        try:
            data = _strict_loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise BadRunFile(path, f"is not a readable run record ({error}); {BAD_RUN_HINT}") from None
        try:
            return validate_run(data, activation, seed, config, dataset)
        except ValueError as error:
            raise BadRunFile(path, f"{error}; {BAD_RUN_HINT}") from None

    def save_run(self, activation: ActivationSpec, result: RunResult) -> Path:
        """Write ``result`` to its run file (atomically: a temporary file, then a rename); returns its path."""
        path = self.run_path(activation, result.seed)
        atomic_write_text(path, dump_json(result.to_json()))
        return path


# ----------------------------------------------------------------------------- validation


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _check_number(name: str, value: Any, low: float, high: float = math.inf, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not _is_number(value) or not (low <= value <= high):
        bound = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise ValueError(f"{name} = {json.dumps(value)} is not a number {bound}" + (" (or null)" if nullable else ""))


_STRINGS = (
    "activation",
    "init",
    "framework",
    "framework_version",
    "device",
    "started_at",
    "finished_at",
    "protocol_hash",
    "dataset_fingerprint",
    "split_fingerprint",
)


def validate_run(
    data: Any, activation: ActivationSpec, seed: int, config: ExperimentConfig, dataset: Dataset
) -> RunResult:
    """``data`` (a run file's JSON) as a RunResult, if it is a complete run of this experiment; else ValueError.

    Checks: the schema and every field's type; that it is ``activation`` with ``seed`` under this
    protocol on this data; ranges (accuracies in [0, 1], losses >= 0 or null for non-finite);
    the epochs (1, 2, ... up to ``config.epochs``, or to ``diverged_at``); the test predictions
    (one per test sample, each a class index) and that the test accuracy is theirs.
    """
    dataset = dataset.for_seed(seed)  # with --split per-seed, the seed's own split
    if not isinstance(data, dict):
        raise ValueError(f"holds JSON {type(data).__name__}, not a run record")
    if data.get("schema") != SCHEMA_RUN:
        raise ValueError(f"is not a {SCHEMA_RUN} record (schema {json.dumps(data.get('schema'))})")
    for name in _STRINGS:
        if name in data and not isinstance(data[name], str):
            raise ValueError(f"{name} = {json.dumps(data[name])} is not a string")
    if not isinstance(data.get("epochs"), list) or not all(isinstance(e, dict) for e in data["epochs"]):
        raise ValueError("epochs is not a list of epoch records")
    if not isinstance(data.get("test_predictions"), list):
        raise ValueError("test_predictions is not a list")
    if not isinstance(data.get("extra", {}), dict):
        raise ValueError("extra is not an object")
    for name in ("seed", "num_parameters"):
        if not _is_int(data.get(name)):
            raise ValueError(f"{name} = {json.dumps(data.get(name))} is not a whole number")
    if data.get("kernel_path") is not None and not isinstance(data["kernel_path"], str):
        raise ValueError(f"kernel_path = {json.dumps(data['kernel_path'])} is not a string or null")
    for name in ("threads", "diverged_at"):
        if data.get(name) is not None and not _is_int(data.get(name)):
            raise ValueError(f"{name} = {json.dumps(data.get(name))} is not a whole number or null")
    try:
        fields = {k: v for k, v in data.items() if k != "schema"}
        for record in fields["epochs"]:
            for key, value in record.items():
                if key != "epoch" and value is not None and not _is_number(value):
                    raise ValueError(
                        f"epoch {json.dumps(record.get('epoch'))}: {key} = {json.dumps(value)} is not a finite number or null"
                    )
        result = RunResult(**fields)
    except TypeError as error:  # missing or unknown fields
        raise ValueError(f"is not a complete run record ({error})") from None
    # whose run is it?
    if (result.activation, result.seed, result.init) != (activation.canonical, seed, activation.init):
        raise ValueError(
            f"holds {result.activation} seed {result.seed} ({result.init}), not {activation.canonical} seed {seed} ({activation.init}) as its name says"
        )
    if result.protocol_hash != config.protocol_hash():
        raise ValueError(
            f"was made with a different protocol (hash {result.protocol_hash}, now {config.protocol_hash()})"
        )
    if activation.is_user and result.activation_source_sha256 != activation.source_sha256:
        raise ValueError(
            f"was made with other code of the activation {activation.name} (source sha256 {result.activation_source_sha256} there, "
            f"{activation.source_sha256} now)"
        )
    trained_with = config.lr if result.lr is None else result.lr
    if not _is_number(trained_with) or trained_with != config.lr_for(activation):
        raise ValueError(
            f"was trained with lr {json.dumps(result.lr)}, but this experiment trains {activation.canonical} with lr "
            f"{config.lr_for(activation):g}" + (" (the rate --tune lr chose)" if config.learning_rates else "")
        )
    if result.dataset_fingerprint != dataset.fingerprint():
        raise ValueError(
            f"was trained on different data (fingerprint {result.dataset_fingerprint}, now {dataset.fingerprint()}): the dataset files changed"
        )
    if result.split_fingerprint and result.split_fingerprint != dataset.split_fingerprint():
        raise ValueError(
            f"was tested on other test samples (split fingerprint {result.split_fingerprint}, now {dataset.split_fingerprint()})"
        )
    # ranges
    _check_number("num_parameters", result.num_parameters, 1)
    if result.threads is not None:
        _check_number("threads", result.threads, 1)
    _check_number("seconds", result.seconds, 0)
    _check_number("test_accuracy", result.test_accuracy, 0, 1)
    _check_number("test_loss", result.test_loss, 0, nullable=True)
    _check_number("test_loss_median", result.test_loss_median, 0, nullable=True)
    _check_number("test_huge_logit_share", result.test_huge_logit_share, 0, 1, nullable=True)
    if result.diverged_at is None:
        expected = config.epochs
    else:
        _check_number("diverged_at", result.diverged_at, 1, config.epochs)
        expected = result.diverged_at
    if len(result.epochs) != expected:
        cause = (
            f"diverged at epoch {result.diverged_at}" if result.diverged_at else f"the protocol trains {config.epochs}"
        )
        raise ValueError(f"holds {len(result.epochs)} epoch(s), but {cause}: the run is incomplete")
    for index, e in enumerate(result.epochs, start=1):
        if not _is_int(e.epoch) or e.epoch != index:
            raise ValueError(f"epoch {index} is numbered {json.dumps(e.epoch)}")
        for name in ("train_accuracy", "val_accuracy"):
            _check_number(f"epoch {index}: {name}", getattr(e, name), 0, 1, nullable=True)
        for name in ("train_loss", "val_loss"):
            _check_number(f"epoch {index}: {name}", getattr(e, name), 0, nullable=True)
        _check_number(f"epoch {index}: seconds", e.seconds, 0)
        _check_number(f"epoch {index}: eval_seconds", e.eval_seconds, 0)
    predictions, labels = result.test_predictions, dataset.y_test
    if len(predictions) != len(labels):
        raise ValueError(f"holds {len(predictions)} test predictions for a test set of {len(labels)}")
    bad = next((p for p in predictions if not _is_int(p) or not 0 <= p < dataset.num_classes), None)
    if bad is not None:
        raise ValueError(
            f"predicts class {json.dumps(bad)}, outside the {dataset.num_classes} classes (0..{dataset.num_classes - 1})"
        )
    if len(labels):
        import numpy as np

        recomputed = float(np.mean(np.asarray(predictions) == labels))
        if abs(recomputed - result.test_accuracy) > 1e-9:
            raise ValueError(f"test_accuracy = {result.test_accuracy} but its test predictions score {recomputed:.6f}")
    return result
