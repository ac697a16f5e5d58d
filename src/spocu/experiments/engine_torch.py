"""The PyTorch engine: trains one (activation, seed) run and returns a :class:`RunResult`.

See :mod:`spocu.experiments.engines` for the contract. Loss: cross-entropy on logits
(``nn.functional.cross_entropy``, the seed's softmax + categorical cross-entropy). Timing:
``time.perf_counter`` around the training part of each epoch (after ``torch.cuda.synchronize``
on a GPU); the validation pass is timed separately.

Threads: :func:`choose_threads` picks 1 thread for small models (under 5 M multiply-accumulates
per batch, where more threads mostly add synchronization: the WDBC MLP with SPOCU ran 3.7x slower
with 2 threads than with 1 on a shared 2-core VM) and PyTorch's default otherwise; the number
used is recorded in the run.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from spocu.experiments.activations import ActivationSpec
from spocu.experiments.config import ExperimentConfig
from spocu.experiments.datasets import Dataset
from spocu.experiments.engines import STREAM_INIT, EpochRecord, RunResult, batch_order, derive_seed
from spocu.experiments.models_torch import build_model, count_parameters, initialize, macs_per_sample

__all__ = ["NAME", "framework_version", "resolve_device", "choose_threads", "train_run", "time_steps"]

NAME = "torch"
#: below this many multiply-accumulates per training batch, one CPU thread is fastest
SMALL_BATCH_MACS = 5_000_000
_EVAL_BATCH = 1000


def framework_version() -> str:
    return torch.__version__


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` (``cuda:N``) or ``auto`` (CUDA if available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available to PyTorch (use --device cpu or auto)")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use cpu, cuda or auto")
    return resolved


def choose_threads(config: ExperimentConfig, input_shape: tuple[int, ...], num_classes: int, device: torch.device) -> int | None:
    """CPU threads for this experiment: 1 for small models, else PyTorch's default; None on a GPU."""
    if device.type != "cpu":
        return None
    probe = build_model(config.model, input_shape, num_classes, config.activation_specs()[0])
    if macs_per_sample(probe, input_shape) * config.batch_size < SMALL_BATCH_MACS:
        return 1
    return torch.get_num_threads()


def _optimizer(config: ExperimentConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.RMSprop(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


class _Split:
    """One split's tensors on the device; ``batch(idx)`` returns float inputs (pixels scaled) and labels."""

    def __init__(self, x: np.ndarray, y: np.ndarray, scale: float | None, device: torch.device) -> None:
        self.x = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        self.y = torch.from_numpy(np.ascontiguousarray(y)).to(device)
        self.scale = scale

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[index]
        x = x.float().mul_(self.scale) if self.scale is not None else x.float()
        return x, self.y[index]


@torch.no_grad()
def _evaluate(model: nn.Module, split: _Split, keep_predictions: bool = False):
    model.eval()
    loss_sum, correct, predictions = 0.0, 0, []
    for start in range(0, len(split), _EVAL_BATCH):
        x, y = split.batch(slice(start, start + _EVAL_BATCH))
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        predicted = logits.argmax(dim=1)
        correct += int((predicted == y).sum())
        if keep_predictions:
            predictions.append(predicted.cpu())
    model.train()
    n = max(len(split), 1)
    preds = torch.cat(predictions).tolist() if keep_predictions and predictions else []
    return loss_sum / n, correct / n, preds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def train_run(
    config: ExperimentConfig,
    dataset: Dataset,
    activation: ActivationSpec,
    seed: int,
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    protocol_hash: str = "",
) -> RunResult:
    """Train ``activation`` with ``seed`` under ``config`` on ``dataset``; see the module docstring."""
    device = resolve_device(device) if isinstance(device, str) else device
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    started, start_clock = _now(), time.perf_counter()
    try:
        torch.manual_seed(derive_seed(seed, STREAM_INIT, 1))  # anything else random (none in these models)
        model = build_model(config.model, dataset.input_shape, dataset.num_classes, activation)
        initialize(model, activation.init, derive_seed(seed, STREAM_INIT))
        model.to(device).train()
        optimizer = _optimizer(config, model.parameters())
        train = _Split(dataset.x_train, dataset.y_train, dataset.pixel_scale, device)
        val = _Split(dataset.x_val, dataset.y_val, dataset.pixel_scale, device)
        test = _Split(dataset.x_test, dataset.y_test, dataset.pixel_scale, device)
        history: list[EpochRecord] = []
        diverged_at = None
        for epoch in range(1, config.epochs + 1):
            order = torch.from_numpy(batch_order(seed, epoch - 1, len(train))).to(device)
            _sync(device)
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            for start in range(0, len(train), config.batch_size):
                x, y = train.batch(order[start : start + config.batch_size])
                logits = model(x)
                loss = nn.functional.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach().double() * len(y)  # accumulated on the device: no sync per step
                correct += (logits.detach().argmax(dim=1) == y).sum()
            _sync(device)
            seconds = time.perf_counter() - t0
            train_loss = float(loss_sum) / len(train)
            t1 = time.perf_counter()
            val_loss, val_accuracy, _ = _evaluate(model, val)
            _sync(device)
            record = EpochRecord(epoch, train_loss, int(correct) / len(train), val_loss, val_accuracy, seconds, time.perf_counter() - t1)
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            if not np.isfinite(train_loss):
                diverged_at = epoch
                break
        test_loss, test_accuracy, predictions = _evaluate(model, test, keep_predictions=True)
        return RunResult(
            activation=activation.canonical,
            seed=seed,
            init=activation.init,
            framework=NAME,
            framework_version=framework_version(),
            device=str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
            threads=torch.get_num_threads() if device.type == "cpu" else None,
            num_parameters=count_parameters(model),
            epochs=history,
            test_loss=test_loss,
            test_accuracy=test_accuracy,
            test_predictions=predictions,
            diverged_at=diverged_at,
            seconds=time.perf_counter() - start_clock,
            started_at=started,
            finished_at=_now(),
            protocol_hash=protocol_hash,
            dataset_fingerprint=dataset.fingerprint(),
        )
    finally:
        torch.set_num_threads(previous_threads)


def time_steps(
    config: ExperimentConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    activation: ActivationSpec,
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    steps: int = 20,
    warmup: int = 3,
) -> dict[str, float]:
    """Seconds per training step and per evaluated sample on synthetic data of ``input_shape``.

    For cost estimates (``spocu compare --estimate``): random inputs, the real model,
    optimizer and batch size; ``warmup`` steps are not timed; the median over ``steps``
    single-step timings is returned.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        model = build_model(config.model, input_shape, num_classes, activation).to(device)
        initialize(model, activation.init, 0)
        optimizer = _optimizer(config, model.parameters())
        x = torch.randn((config.batch_size, *input_shape), generator=generator).to(device)
        y = torch.randint(0, num_classes, (config.batch_size,), generator=generator).to(device)
        timings = []
        for step in range(warmup + steps):
            _sync(device)
            t0 = time.perf_counter()
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            _sync(device)
            if step >= warmup:
                timings.append(time.perf_counter() - t0)
        xe = torch.randn((_EVAL_BATCH, *input_shape), generator=generator).to(device)
        eval_timings = []
        with torch.no_grad():
            model.eval()
            for step in range(warmup + max(steps // 4, 3)):
                _sync(device)
                t0 = time.perf_counter()
                model(xe)
                _sync(device)
                if step >= warmup:
                    eval_timings.append((time.perf_counter() - t0) / _EVAL_BATCH)
        return {
            "step_seconds": float(np.median(timings)),
            "eval_seconds_per_sample": float(np.median(eval_timings)),
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
        }
    finally:
        torch.set_num_threads(previous_threads)
