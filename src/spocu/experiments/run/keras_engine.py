"""The Keras 3 engine (``--framework keras``): one (activation, seed) run with Keras's own ``model.fit``.

The same contract as the PyTorch engine (:mod:`spocu.experiments.run.engine`), the same data (the
datasets layer is framework-independent; images go channels-last) and the same
:class:`~spocu.experiments.run.engine.RunResult`, with ``framework: "keras"`` and the backend in
``extra`` (``keras_backend``, ``backend_version``):

- model: :mod:`spocu.experiments.models.keras_models` (the seed's layers, SPOCU as :class:`spocu.keras.SPOCU`);
- ``model.fit(train, epochs=E, validation_data=val)``, one call: the per-epoch training loss and
  accuracy are Keras's own (mean over the epoch's minibatches, weighted by batch size, as the
  PyTorch engine computes them), the history is Keras's ``History``; a callback times each epoch
  (training part and validation separately) and stops after an epoch whose training loss is
  not finite (``diverged_at``), as the PyTorch engine does;
- batches: the run's batch order (:func:`~spocu.experiments.run.engine.batch_order`), served by a
  ``keras.utils.PyDataset`` -- so Keras trains on exactly the PyTorch engine's batches; pixels
  are scaled by 1/255 as the batches are served;
- loss ``SparseCategoricalCrossentropy(from_logits=True)``, metric ``SparseCategoricalAccuracy``;
- optimizers with PyTorch's defaults where Keras's differ: Adam/AdamW ``epsilon=1e-8`` (Keras: 1e-7),
  RMSprop ``rho=0.99, epsilon=1e-8``. Weight decay: Keras 3 decays weights directly (decoupled),
  PyTorch's adam/sgd/rmsprop add it to the gradient; they agree for ``adamw`` and for ``sgd``
  without momentum, and the other combinations are refused;
- seeding: ``keras.utils.set_random_seed`` with a seed derived from the run's seed, and seeded
  initializers (:func:`~spocu.experiments.models.keras_models.initializer`);
- test set: ``model.predict`` once after training; test loss from those logits (float64 log-softmax).

The backend is Keras's (``KERAS_BACKEND``, else ``~/.keras/keras.json``, else TensorFlow);
``spocu compare --keras-backend`` sets ``KERAS_BACKEND`` before Keras is imported. Threads:
the backend's default unless ``threads`` is given (TensorFlow: intra-op threads, settable only
before TensorFlow starts; torch: ``torch.set_num_threads``; JAX: XLA's own).
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable

from spocu._llvm import preload_triton_before_tensorflow  # noqa: E402

# before Keras imports TensorFlow: spocu.torch (Keras torch backend) may need Triton later
preload_triton_before_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from spocu.experiments.activations import ActivationSpec  # noqa: E402
from spocu.experiments.config import ExperimentConfig  # noqa: E402
from spocu.experiments.data.datasets import Dataset  # noqa: E402
from spocu.experiments.models.keras_models import build_model, count_parameters  # noqa: E402
from spocu.experiments.run.engine import (  # noqa: E402
    EpochRecord,
    RunResult,
    batch_order,
    derive_seed,
    make_run_result,
    robust_test_loss,
    utc_now,
)
from spocu.experiments.seeding import STREAM_INIT, batch_bounds  # noqa: E402

__all__ = [
    "NAME",
    "BACKENDS",
    "framework_version",
    "backend",
    "backend_version",
    "resolve_device",
    "worker_device",
    "choose_threads",
    "check_config",
    "train_run",
    "SeededBatches",
]

NAME = "keras"
BACKENDS = ("tensorflow", "jax", "torch")
_EVAL_BATCH = 1000


def framework_version() -> str:
    """The Keras version, for the run files."""
    return keras.__version__


def backend() -> str:
    """The Keras backend in this process: ``tensorflow``, ``jax`` or ``torch``."""
    return keras.backend.backend()


def backend_version() -> str:
    """The version of the Keras backend's framework (``unknown`` for another backend)."""
    name = backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(name)
    if module is None:
        return "unknown"
    return __import__(module).__version__


def _gpu_count() -> int:
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if name == "jax":
        import jax

        return sum(1 for d in jax.devices() if d.platform == "gpu")
    if name == "torch":
        import torch

        return torch.cuda.device_count()
    return 0


def resolve_device(device: str) -> str:
    """``cpu``; ``cuda``/``gpu`` (``:N``); ``auto``: a GPU if the backend sees one. Returns ``cpu``, ``gpu`` or ``gpu:N``."""
    name = device.strip().lower()
    if name == "cpu":
        return "cpu"
    if name == "auto":
        return "gpu" if _gpu_count() else "cpu"
    match = re.fullmatch(r"(?:cuda|gpu)(?::(\d+))?", name)
    if not match:
        raise ValueError(f"unsupported device {device!r}; use cpu, cuda (or gpu), cuda:N or auto")
    count = _gpu_count()
    if count == 0:
        raise ValueError(f"--device {device}: Keras's {backend()} backend sees no GPU (use --device cpu or auto)")
    if match.group(1) is not None and int(match.group(1)) >= count:
        raise ValueError(f"--device {device}: Keras's {backend()} backend sees {count} GPU(s)")
    return "gpu" if match.group(1) is None else f"gpu:{match.group(1)}"


def worker_device(device: str, worker: int) -> str:
    """The device of parallel worker ``worker``: ``gpu`` without an index spreads workers over the GPUs."""
    if device == "gpu":
        return f"gpu:{worker % max(1, _gpu_count())}"
    return device


def choose_threads(config: ExperimentConfig, input_shape: tuple[int, ...], num_classes: int, device: str) -> int | None:
    """None: the backend's default (Keras backends size their own thread pools)."""
    return None


def _apply_threads(threads: int | None) -> int | None:
    """Ask the backend for ``threads`` CPU threads where it allows; return the number in effect (None: its default)."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        if threads is not None and tf.config.threading.get_intra_op_parallelism_threads() != threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
            except RuntimeError:  # TensorFlow has started: its pools are fixed for this process
                pass
        return tf.config.threading.get_intra_op_parallelism_threads() or None
    if name == "torch":
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        return torch.get_num_threads()
    return None


class SeededBatches(keras.utils.PyDataset):
    """A split's batches for Keras, in a fixed order.

    Training (``seed`` given): an unbounded sequence -- batch ``i`` is step ``i mod steps`` of epoch
    ``i // steps`` in :func:`~spocu.experiments.run.engine.batch_order` ``(seed, epoch, n)`` (the
    steps of :func:`~spocu.experiments.seeding.batch_bounds`: a last batch of one sample is merged), so it
    depends on ``i`` alone, whatever Keras prefetches (``fit`` gets ``steps_per_epoch``).
    Evaluation (no ``seed``): the split in order, ``ceil(n / batch_size)`` batches.
    Images (N, C, H, W) are served channels-last; uint8 pixels are multiplied by ``scale``.

    Example:
        >>> x, y = np.arange(10, dtype=np.float32).reshape(5, 2), np.arange(5)
        >>> batches = SeededBatches(x, y, 2, None, seed=7)
        >>> epoch0 = np.concatenate([batches[i][1] for i in range(2)])  # 2 + 3: the last single sample merged
        >>> epoch0.tolist() == batch_order(7, 0, 5).tolist(), batches.steps
        (True, 2)
    """

    def __init__(
        self, x: np.ndarray, y: np.ndarray, batch_size: int, scale: float | None, *, seed: int | None = None
    ) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.scale, self.seed = x, y, batch_size, scale, seed
        # training: a last batch of one sample joins the one before it (batch_bounds), as in the PyTorch engine
        self._bounds = batch_bounds(len(y), batch_size) if seed is not None else None
        self.steps = max(1, len(self._bounds) if self._bounds is not None else math.ceil(len(y) / batch_size))
        self._orders: dict[int, np.ndarray] = {}

    @property
    def num_batches(self) -> int | None:
        """Keras' ``PyDataset.num_batches``: None for training (an unbounded sequence; ``fit`` is given
        ``steps_per_epoch``), the number of batches for evaluation.
        """
        return None if self.seed is not None else self.steps

    def _order(self, epoch: int) -> np.ndarray:
        assert self.seed is not None  # training batches only: __getitem__ calls it when seeded
        if epoch not in self._orders:
            for old in [e for e in self._orders if e < epoch - 1]:  # prefetching may straddle two epochs
                del self._orders[old]
            self._orders[epoch] = batch_order(self.seed, epoch, len(self.y))
        return self._orders[epoch]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows: np.ndarray | slice
        if self.seed is not None:
            epoch, step = divmod(index, self.steps)
            start, stop = self._bounds[step] if self._bounds else (0, 0)
            rows = self._order(epoch)[start:stop]
        else:
            if not 0 <= index < self.steps:
                raise IndexError(index)
            rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        x = self.x[rows]
        if x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        x = (
            x.astype(np.float32) * np.float32(self.scale)
            if self.scale is not None
            else np.ascontiguousarray(x, dtype=np.float32)
        )
        return x, self.y[rows]


def check_config(config: ExperimentConfig) -> None:
    """Raise ValueError for a protocol this engine cannot run as the PyTorch engine would (before any training)."""
    _optimizer(config)


def lr_at_epoch(config: ExperimentConfig, epoch: int, lr: float | None = None) -> float:
    """The learning rate of epoch ``epoch`` (0, 1, ...): ``lr`` x 0.1 per milestone reached.

    Example:
        >>> from spocu.experiments.config import resolve_config
        >>> config = resolve_config({"lr": 0.1, "lr_milestones": (2, 3)})
        >>> [round(lr_at_epoch(config, e), 6) for e in range(4)]
        [0.1, 0.1, 0.01, 0.001]
    """
    return (config.lr if lr is None else lr) * 0.1 ** sum(epoch >= milestone for milestone in config.lr_milestones)


def _optimizer(config: ExperimentConfig, lr: float | None = None) -> keras.optimizers.Optimizer:
    decay, momentum = config.weight_decay, config.momentum
    lr = config.lr if lr is None else lr
    if decay and not (config.optimizer == "adamw" or (config.optimizer == "sgd" and momentum == 0)):
        raise ValueError(
            f"--weight-decay with --optimizer {config.optimizer}: PyTorch adds weight decay to the gradient (an L2 penalty), "
            "Keras 3 decays the weights directly; the two agree only for adamw and for sgd without momentum. "
            "Use one of those with --framework keras, or --weight-decay 0, or the PyTorch engine (--framework torch), which runs this recipe as given"
        )
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr, epsilon=1e-8)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=decay, epsilon=1e-8)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=momentum, weight_decay=decay or None)
    return keras.optimizers.RMSprop(learning_rate=lr, rho=0.99, momentum=momentum, epsilon=1e-8)


class _EpochTimer(keras.callbacks.Callback):
    """Times each epoch's training part and its validation pass; reports epochs as they end; stops on divergence."""

    def __init__(self, on_epoch: Callable[[EpochRecord], None] | None) -> None:
        super().__init__()
        self.on_epoch = on_epoch
        self.seconds: list[tuple[float, float]] = []
        self.diverged_at: int | None = None

    # set by on_epoch_begin; the start of the validation pass by on_test_begin, which Keras calls before on_test_end
    _start: float
    _train_seconds: float | None
    _eval_start: float | None
    _eval_seconds: float

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._start, self._train_seconds, self._eval_start, self._eval_seconds = time.perf_counter(), None, None, 0.0

    def on_test_begin(self, logs=None) -> None:
        if self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start
        self._eval_start = time.perf_counter()

    def on_test_end(self, logs=None) -> None:
        assert self._eval_start is not None
        self._eval_seconds = time.perf_counter() - self._eval_start

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        train = self._train_seconds if self._train_seconds is not None else time.perf_counter() - self._start
        self.seconds.append((train, self._eval_seconds))
        if self.on_epoch is not None:
            self.on_epoch(
                EpochRecord(
                    epoch + 1,
                    logs.get("loss"),
                    logs.get("accuracy"),
                    logs.get("val_loss"),
                    logs.get("val_accuracy"),
                    train,
                    self._eval_seconds,
                )
            )
        loss = logs.get("loss")
        if loss is None or not math.isfinite(loss):
            self.diverged_at = epoch + 1
            self.model.stop_training = True


def _device_scope(device: str):
    """``keras.device`` only where the backend's default placement is not already ``device``.

    (Keras 3.15's torch backend loses the gradients of variables created under ``keras.device("cpu:0")``,
    which it moves off ``cpu``; the default placement avoids such copies.)
    """
    if device == "gpu" or (device == "cpu" and _gpu_count() == 0):
        return contextlib.nullcontext()
    return keras.device(device)


def train_run(
    config: ExperimentConfig,
    dataset: Dataset,
    activation: ActivationSpec,
    seed: int,
    *,
    device: str = "cpu",
    threads: int | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    protocol_hash: str = "",
) -> RunResult:
    """Train ``activation`` with ``seed`` under ``config`` on ``dataset`` with ``model.fit``; see the module docstring."""
    from scipy.special import log_softmax

    if config.keras_backend is not None and config.keras_backend != backend():
        raise ValueError(
            f"this experiment uses Keras's {config.keras_backend} backend, but Keras runs on {backend()} here (set KERAS_BACKEND)"
        )
    lr = config.lr_for(activation)  # --tune lr: this activation's chosen rate
    optimizer = _optimizer(config, lr)  # refuses unsupported combinations before anything is built
    dataset = dataset.for_seed(seed)  # --split per-seed: this seed's own split, the same in every process
    path = _kernel_path(activation, config, device)
    started, start_clock = utc_now(), time.perf_counter()
    keras.backend.clear_session()  # a fresh graph and name scope for each run in a long-lived process
    keras.utils.set_random_seed(
        derive_seed(seed, STREAM_INIT, 1) % 2**32
    )  # anything else random (none in these models)
    threads_in_effect = _apply_threads(threads) if device == "cpu" else None
    with _device_scope(device):
        model = build_model(config.model, dataset.input_shape, dataset.num_classes, activation, seed)
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        train = SeededBatches(dataset.x_train, dataset.y_train, config.batch_size, dataset.pixel_scale, seed=seed)
        val = SeededBatches(dataset.x_val, dataset.y_val, _EVAL_BATCH, dataset.pixel_scale)
        test = SeededBatches(dataset.x_test, dataset.y_test, _EVAL_BATCH, dataset.pixel_scale)
        timer = _EpochTimer(on_epoch)
        callbacks: list = [timer]
        if config.lr_milestones:  # lr x 0.1 at each milestone epoch, as the PyTorch engine's MultiStepLR
            callbacks.append(keras.callbacks.LearningRateScheduler(lambda epoch, _: lr_at_epoch(config, epoch, lr)))
        history = model.fit(
            train,
            epochs=config.epochs,
            steps_per_epoch=train.steps,
            validation_data=val,
            callbacks=callbacks,
            shuffle=False,
            verbose=0,
        ).history
        # tuning runs (--tune) get no test set at all
        logits = (
            np.asarray(model.predict(test, verbose=0), dtype=np.float64)
            if len(dataset.y_test)
            else np.zeros((0, dataset.num_classes))
        )
    epochs = [
        EpochRecord(
            k + 1,
            history["loss"][k],
            history["accuracy"][k],
            history.get("val_loss", [None] * (k + 1))[k],
            history.get("val_accuracy", [None] * (k + 1))[k],
            *timer.seconds[k],
        )
        for k in range(len(history["loss"]))
    ]
    y_test = dataset.y_test
    with np.errstate(all="ignore"):
        per_sample = -log_softmax(logits, axis=1)[np.arange(len(y_test)), y_test]
        test_loss = float(np.mean(per_sample)) if len(y_test) else None
        robust = robust_test_loss(per_sample, np.abs(logits).max(axis=1) if len(y_test) else np.zeros(0))
    predictions = logits.argmax(axis=1)
    return make_run_result(
        activation=activation,
        seed=seed,
        framework=NAME,
        framework_version=framework_version(),
        device=device,
        threads=threads_in_effect,
        num_parameters=count_parameters(model),
        epochs=epochs,
        test_loss=test_loss,
        test_accuracy=float(np.mean(predictions == y_test)) if len(y_test) else 0.0,
        test_predictions=predictions.tolist(),
        diverged_at=timer.diverged_at,
        started_at=started,
        start_clock=start_clock,
        protocol_hash=protocol_hash,
        dataset=dataset,
        extra={"keras_backend": backend(), "backend_version": backend_version()},
        **robust,
        kernel_path=path,
        lr=lr,
    )


def _kernel_path(activation: ActivationSpec, config: ExperimentConfig, device: str) -> str | None:
    """SPOCU's kernels in this run: the backend's own (XLA for tensorflow and jax), on the torch backend
    :func:`spocu.torch.spocu`'s, fixed before the first step (:mod:`spocu.experiments.run.kernels`)."""
    from spocu.experiments.run.kernels import fix_kernel_path, uses_spocu

    if not uses_spocu(activation, config.model):
        return None
    if backend() == "torch":
        return "keras-torch/" + fix_kernel_path("cuda" if device == "gpu" or device.startswith("gpu") else "cpu")
    return f"keras-{backend()}"
