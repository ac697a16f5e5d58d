"""The PyTorch engine: trains one (activation, seed) run and returns a :class:`RunResult`.

See :mod:`spocu.experiments.run.engine` for the contract. Loss: cross-entropy on logits
(``nn.functional.cross_entropy``, the seed's softmax + categorical cross-entropy). Timing:
``time.perf_counter`` around the training part of each epoch (after ``torch.cuda.synchronize``
on a GPU); the validation pass is timed separately.

Data-parallel (``torchrun``, see :mod:`spocu.experiments.run.distributed`): pass ``dist``; the model is
wrapped in ``DistributedDataParallel``, each process trains on its shard of every global batch
(:class:`SeededDistributedSampler`), the epoch's loss and accuracy are summed over the processes,
and validation and test sets are evaluated sharded.

Threads: :func:`choose_threads` picks 1 thread for small models (under 5 M multiply-accumulates
per batch, where more threads mostly add synchronization: the WDBC MLP with SPOCU ran 3.7x slower
with 2 threads than with 1 on a shared 2-core VM) and PyTorch's default otherwise; the number
used is recorded in the run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import TypedDict, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from spocu.experiments.activations import ActivationSpec
from spocu.experiments.config import ExperimentConfig
from spocu.experiments.data.datasets import Dataset
from spocu.experiments.models.torch_models import build_model, count_parameters, initialize, macs_per_sample
from spocu.experiments.run.distributed import DistributedContext, per_process_batch, shard
from spocu.experiments.run.engine import (
    EpochRecord,
    RunResult,
    batch_order,
    derive_seed,
    make_run_result,
    robust_test_loss,
    utc_now,
)
from spocu.experiments.run.kernels import check_kernel_path, fix_kernel_path, uses_spocu
from spocu.experiments.seeding import STREAM_INIT, batch_bounds, merges_last_batch

__all__ = [
    "NAME",
    "framework_version",
    "resolve_device",
    "worker_device",
    "choose_threads",
    "train_run",
    "time_steps",
    "SeededDistributedSampler",
]

NAME = "torch"
#: below this many multiply-accumulates per training batch, one CPU thread is fastest
SMALL_BATCH_MACS = 5_000_000
_EVAL_BATCH = 1000


def framework_version() -> str:
    """The PyTorch version, for the run files."""
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


def worker_device(device: str, worker: int) -> str:
    """The device of parallel worker ``worker`` (``--jobs``): ``cuda`` without an index spreads workers over the GPUs."""
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None and torch.cuda.device_count() > 1:
        return f"cuda:{worker % torch.cuda.device_count()}"
    return device


class SeededDistributedSampler(DistributedSampler):
    """``torch.utils.data.DistributedSampler`` whose shuffle is the run's own batch order.

    The permutation of epoch ``e`` is :func:`~spocu.experiments.run.engine.batch_order` ``(seed, e, n)``,
    padded to a multiple of ``num_replicas`` by repeating its start and strided over the ranks,
    as ``DistributedSampler`` does. So with a per-process batch of ``B / num_replicas``, the k-th
    batches of all processes together are exactly the k-th batch of size ``B`` of a single-process
    run with the same seed (the last one may hold up to ``num_replicas - 1`` repeated samples).

    Example:
        >>> ranks = [SeededDistributedSampler(10, seed=0, num_replicas=2, rank=r) for r in (0, 1)]
        >>> sorted(list(ranks[0])[:2] + list(ranks[1])[:2]) == sorted(batch_order(0, 0, 10)[:4].tolist())
        True
    """

    def __init__(self, n: int, *, seed: int, num_replicas: int, rank: int) -> None:
        # range(n): DistributedSampler reads only the length of its dataset; torch's hint asks for a Dataset
        super().__init__(range(n), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        n = len(cast(range, self.dataset))
        indices = batch_order(self.seed, self.epoch, n).tolist()
        padding = self.total_size - n
        if padding:
            indices += (indices * math.ceil(padding / n))[:padding]
        return iter(indices[self.rank : self.total_size : self.num_replicas])


def choose_threads(
    config: ExperimentConfig, input_shape: tuple[int, ...], num_classes: int, device: torch.device
) -> int | None:
    """CPU threads for this experiment: 1 for small models, else PyTorch's default; None on a GPU."""
    if device.type != "cpu":
        return None
    probe = build_model(config.model, input_shape, num_classes, config.activations[0])
    if macs_per_sample(probe, input_shape) * config.batch_size < SMALL_BATCH_MACS:
        return 1
    return torch.get_num_threads()


def _optimizer(config: ExperimentConfig, params, lr: float | None = None) -> torch.optim.Optimizer:
    lr = config.lr if lr is None else lr
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.RMSprop(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)


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
def _evaluate(model: nn.Module, split: _Split, keep_predictions: bool = False, dist: DistributedContext | None = None):
    """Mean loss, accuracy (and predictions) on ``split``; with ``dist``, each process takes its shard."""
    model.eval()
    correct: float  # a count, as a float once summed over processes
    loss_sum, correct, predictions, losses, largest = 0.0, 0, [], [], []
    first, stop = (0, len(split)) if dist is None else shard(len(split), dist.rank, dist.world_size)
    for start in range(first, stop, _EVAL_BATCH):
        x, y = split.batch(slice(start, min(start + _EVAL_BATCH, stop)))
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        predicted = logits.argmax(dim=1)
        correct += int((predicted == y).sum())
        if keep_predictions:
            predictions.append(predicted.cpu())
            losses.append(nn.functional.cross_entropy(logits.double(), y, reduction="none").cpu())
            largest.append(logits.detach().double().abs().amax(dim=1).cpu())
    model.train()
    n = max(len(split), 1)
    preds = torch.cat(predictions).tolist() if keep_predictions and predictions else []
    per_sample = torch.cat(losses).numpy() if losses else np.zeros(0)
    biggest = torch.cat(largest).numpy() if largest else np.zeros(0)
    if dist is not None:
        loss_sum, correct = dist.all_sum([loss_sum, float(correct)])
        if keep_predictions:
            preds = dist.all_gather_ints(preds)
            # float64 bits travel as int64: the gathered values are exact
            per_sample = np.array(dist.all_gather_ints(per_sample.view(np.int64).tolist()), dtype=np.int64).view(
                np.float64
            )
            biggest = np.array(dist.all_gather_ints(biggest.view(np.int64).tolist()), dtype=np.int64).view(np.float64)
    if not keep_predictions:
        return loss_sum / n, correct / n, preds
    return loss_sum / n, correct / n, preds, robust_test_loss(per_sample, biggest)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    dist: DistributedContext | None = None,
) -> RunResult:
    """Train ``activation`` with ``seed`` under ``config`` on ``dataset``; see the module docstring.

    ``dist``: train data-parallel with the other processes of a ``torchrun`` group (every process
    calls this with the same arguments; ``device`` is this process's device).
    """
    device = resolve_device(device) if isinstance(device, str) else device
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    dataset = dataset.for_seed(seed)  # --split per-seed: this seed's own split, the same in every process
    # SPOCU's kernels are fixed before the first step (a build in progress is waited for): no mid-run switch
    spocu_path = fix_kernel_path(device) if uses_spocu(activation, config.model) else None
    started, start_clock = utc_now(), time.perf_counter()
    try:
        torch.manual_seed(derive_seed(seed, STREAM_INIT, 1))  # anything else random (none in these models)
        model = build_model(config.model, dataset.input_shape, dataset.num_classes, activation, seed)
        initialize(model, activation.init, derive_seed(seed, STREAM_INIT))
        model.to(device).train()
        train = _Split(dataset.x_train, dataset.y_train, dataset.pixel_scale, device)
        val = _Split(dataset.x_val, dataset.y_val, dataset.pixel_scale, device)
        test = _Split(dataset.x_test, dataset.y_test, dataset.pixel_scale, device)
        network: nn.Module = model
        step, sampler, extra = config.batch_size, None, {}
        if dist is not None:
            from torch.nn.parallel import DistributedDataParallel

            step = per_process_batch(config.batch_size, dist.world_size)
            network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
            sampler = SeededDistributedSampler(len(train), seed=seed, num_replicas=dist.world_size, rank=dist.rank)
            extra = {"distributed": {**dist.describe(), "per_process_batch": step, "global_batch": config.batch_size}}
        lr = config.lr_for(activation)  # --tune lr: this activation's chosen rate
        optimizer = _optimizer(config, network.parameters(), lr)
        # lr x 0.1 at each milestone epoch (He et al. 2016's step schedule); stepped once per epoch
        schedule = (
            torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.lr_milestones), 0.1)
            if config.lr_milestones
            else None
        )
        history: list[EpochRecord] = []
        diverged_at = None
        # the single-process plan decides (the protocol's last_batch): a last global batch of one sample is merged,
        # on every rank at once under torchrun (each rank's shard of it is then its one sample)
        merge = merges_last_batch(len(train), config.batch_size)

        def bounds(n: int, size: int) -> list[tuple[int, int]]:
            return batch_bounds(n, size) if merge else [(start, min(start + size, n)) for start in range(0, n, size)]

        for epoch in range(1, config.epochs + 1):
            if sampler is None:
                order = torch.from_numpy(batch_order(seed, epoch - 1, len(train))).to(device)
            else:
                sampler.set_epoch(epoch - 1)
                order = torch.tensor(list(sampler), dtype=torch.int64, device=device)
            _sync(device)
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            for start, stop in bounds(len(order), step):
                x, y = train.batch(order[start:stop])
                logits = network(x)
                loss = nn.functional.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach().double() * len(y)  # accumulated on the device: no sync per step
                correct += (logits.detach().argmax(dim=1) == y).sum()
            seen: float  # a count, as a float once summed over processes
            if dist is None:
                total_loss, total_correct, seen = float(loss_sum), float(correct), len(train)
            else:  # every process gets the sums over all processes (and so takes the same divergence decision)
                total_loss, total_correct, seen = dist.all_sum([float(loss_sum), float(correct), float(len(order))])
            _sync(device)
            seconds = time.perf_counter() - t0
            train_loss = total_loss / seen
            t1 = time.perf_counter()
            val_loss, val_accuracy, _ = _evaluate(model, val, dist=dist)
            _sync(device)
            record = EpochRecord(
                epoch, train_loss, total_correct / seen, val_loss, val_accuracy, seconds, time.perf_counter() - t1
            )
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            if not np.isfinite(train_loss):
                diverged_at = epoch
                break
            if schedule is not None:
                schedule.step()
        test_loss, test_accuracy, predictions, robust = _evaluate(model, test, keep_predictions=True, dist=dist)
        check_kernel_path(spocu_path, device)
        return make_run_result(
            activation=activation,
            seed=seed,
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
            started_at=started,
            start_clock=start_clock,
            protocol_hash=protocol_hash,
            dataset=dataset,
            extra=extra,
            **robust,
            kernel_path=spocu_path,
            lr=lr,
        )
    finally:
        torch.set_num_threads(previous_threads)


class StepTimes(TypedDict):
    """What :func:`time_steps` measured."""

    step_seconds: float
    eval_seconds_per_sample: float
    threads: int | None  # torch's threads on CPU, None elsewhere


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
) -> StepTimes:
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
