"""Data-parallel training under ``torchrun``: every (activation, seed) run trained by all processes together.

``torchrun --nproc-per-node N -m spocu compare ...`` starts N copies of ``spocu compare``;
torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
in each (over several machines: ``--nnodes``, ``--node-rank`` or ``--rdzv-*`` as usual).
``spocu compare`` detects them (:func:`from_environment`) and

- joins the process group (:func:`initialize`): NCCL on CUDA, one GPU per process
  (``cuda:LOCAL_RANK``); Gloo on the CPU;
- trains each run across all processes with PyTorch's ``DistributedDataParallel``
  (:mod:`spocu.experiments.run.torch_engine`): each process takes its shard of every global batch
  (a ``DistributedSampler`` over the run's own batch order), gradients are averaged, and the
  epoch's metrics are summed over the processes;
- keeps the global batch at ``--batch-size`` (``batch_size / WORLD_SIZE`` per process), so the
  protocol -- and the seed's batch 100 -- do not change with the number of processes, and
  the global batches are the single-process ones;
- evaluates validation and test sets sharded, gathers the test predictions (for McNemar) on
  rank 0; only rank 0 shows progress and writes files; runs still go one after another.

Example:
    >>> from_environment({}) is None
    True
    >>> ctx = from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29500"})
    >>> ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main
    (1, 2, 1, False)
    >>> shard(10, rank=1, world_size=3)
    (3, 6)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["DistributedContext", "from_environment", "initialize", "shard", "per_process_batch", "TORCHRUN_VARIABLES"]

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the group; ``device`` and ``backend`` are set by :func:`initialize`."""

    rank: int
    world_size: int
    local_rank: int
    backend: str = ""
    device: str = ""

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes the output directory and reports progress."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """The group for ``results.json`` and the run files: world size, backend, launcher (``torchrun``)."""
        return {"world_size": self.world_size, "backend": self.backend, "launcher": "torchrun"}

    # -- collectives (every process must call them, in the same order) --------------------------

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all processes (float64)."""
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def all_agree(self, ok: bool) -> bool:
        """True if ``ok`` is true in every process."""
        return self.all_sum([0.0 if ok else 1.0])[0] == 0.0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object), in every process."""
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_ints(self, local: list[int]) -> list[int]:
        """The concatenation, in rank order, of every process's ``local`` list (lengths may differ)."""
        import torch
        import torch.distributed as dist

        count = torch.tensor([len(local)], dtype=torch.int64, device=self.device)
        counts = [torch.zeros_like(count) for _ in range(self.world_size)]
        dist.all_gather(counts, count)
        longest = max(int(c) for c in counts)
        padded = torch.zeros(longest, dtype=torch.int64, device=self.device)
        padded[: len(local)] = torch.tensor(local, dtype=torch.int64, device=self.device)
        parts = [torch.zeros_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return [v for part, c in zip(parts, counts) for v in part[: int(c)].tolist()]

    def barrier(self) -> None:
        """Wait until every process of the group gets here."""
        import torch.distributed as dist

        dist.barrier()

    def finish(self, success: bool) -> None:
        """Leave the group: wait for every process first if all went well."""
        import torch.distributed as dist

        if dist.is_initialized():
            if success:
                dist.barrier()
            dist.destroy_process_group()


def from_environment(environ: Mapping[str, str] | None = None) -> DistributedContext | None:
    """The context torchrun describes in the environment, or None when not launched by torchrun."""
    env = os.environ if environ is None else environ
    if not all(name in env for name in TORCHRUN_VARIABLES):
        return None
    try:
        rank, world, local = (int(env[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise ValueError(
            f"torchrun environment is malformed: RANK={env['RANK']!r}, WORLD_SIZE={env['WORLD_SIZE']!r}, LOCAL_RANK={env['LOCAL_RANK']!r}"
        ) from None
    if not (0 <= rank < world and local >= 0):
        raise ValueError(f"torchrun environment is inconsistent: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return DistributedContext(rank, world, local)


def initialize(context: DistributedContext, device: str) -> DistributedContext:
    """Choose this process's device (``cpu``, ``cuda`` or ``auto``), join the group; return the completed context.

    CUDA: ``cuda:LOCAL_RANK`` with NCCL; an explicit ``cuda:N`` is refused (torchrun assigns the
    GPUs). CPU: Gloo.
    """
    import torch
    import torch.distributed as dist

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(
            f"--device {device}: under torchrun each process uses the GPU of its LOCAL_RANK; pass --device cuda, cpu or auto"
        )
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available to PyTorch (use --device cpu)")
        if context.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {context.local_rank} but only {torch.cuda.device_count()} GPU(s) are visible: "
                "start at most that many processes per node (--nproc-per-node)"
            )
        torch.cuda.set_device(context.local_rank)
        resolved = replace(context, backend="nccl", device=f"cuda:{context.local_rank}")
        dist.init_process_group("nccl", device_id=torch.device(resolved.device))
    else:
        resolved = replace(context, backend="gloo", device="cpu")
        dist.init_process_group("gloo")
    if (dist.get_rank(), dist.get_world_size()) != (
        context.rank,
        context.world_size,
    ):  # pragma: no cover - torchrun's contract
        raise RuntimeError("the process group disagrees with RANK/WORLD_SIZE")
    return resolved


def shard(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous slice ``[start, stop)`` of ``n`` items evaluated by ``rank`` (sizes differ by at most 1)."""
    return n * rank // world_size, n * (rank + 1) // world_size


def per_process_batch(batch_size: int, world_size: int) -> int:
    """``batch_size / world_size``; raises ValueError naming both when it does not divide."""
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size
        raise ValueError(
            f"--batch-size {batch_size} is the global batch, shared by the {world_size} processes, so it must be a multiple "
            f"of {world_size} (e.g. {lower or world_size} or {lower + world_size}); or change --nproc-per-node"
        )
    return batch_size // world_size
