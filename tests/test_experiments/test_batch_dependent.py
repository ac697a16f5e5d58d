"""Models whose layers depend on the batch (BatchNorm, Dropout, LayerNorm) under ``spocu compare``.

The sizing and checking probes run side-effect free (:func:`probe_forward`), and a training set
that would end on a batch of one sample trains that sample with the batch before it (recorded in
the protocol as ``last_batch: "merged"``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from spocu import cli
from spocu.experiments.models.torch_models import macs_per_sample, probe_forward
from spocu.experiments.seeding import batch_bounds, merges_last_batch

FAST = ("--epochs", "1", "--seeds", "1", "--no-progress", "--activations", "relu")

#: a user's model with every batch-dependent layer: BatchNorm1d and 2d, Dropout, LayerNorm
BATCH_NORM_NET = """
from torch import nn


class Net(nn.Module):
    def __init__(self, activation, features, num_classes):
        super().__init__()
        self.side = 5  # wdbc's 30 features as a 1 x 5 x 6 image, for the 2-d batch norm
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), activation())
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * features, 16), nn.BatchNorm1d(16), activation(), nn.Dropout(0.2),
            nn.LayerNorm(16), nn.Linear(16, num_classes),
        )

    def forward(self, x):
        return self.head(self.conv(x.reshape(len(x), 1, self.side, -1)))


def build(activation, input_shape, num_classes):
    return Net(activation, input_shape[0], num_classes)
"""


def _net() -> nn.Module:
    namespace: dict = {}
    exec(BATCH_NORM_NET, namespace)
    return namespace["build"](nn.ReLU, (30,), 2)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_sizing_probe_leaves_mode_buffers_and_rng_bit_for_bit():
    model = _net()
    model.train()
    model.head[4].eval()  # a mixed mode (one Dropout in eval) must come back as it was, not all-train
    with torch.no_grad():  # running statistics that are not the defaults, so a reset would show
        for bn in (model.conv[1], model.head[2]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.num_batches_tracked.fill_(7)
    before, modes = _state(model), [m.training for m in model.modules()]
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    assert macs_per_sample(model, (30,)) == 1 * 4 * 30 * 9 + 120 * 16 + 16 * 2  # conv, linear, linear per sample
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == modes
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before), [
        k for k in before if not torch.equal(before[k], after[k])
    ]
    # a training-mode probe (check_model's) would update the statistics and draw dropout masks: restored too
    probe_forward(model, torch.randn(4, 30, generator=torch.Generator().manual_seed(0)), training=True)
    assert torch.equal(torch.get_rng_state(), rng) and [m.training for m in model.modules()] == modes
    assert all(torch.equal(before[k], v) for k, v in _state(model).items())


def test_a_last_batch_of_one_sample_joins_the_batch_before():
    assert batch_bounds(364, 121) == [(0, 121), (121, 242), (242, 364)]
    assert batch_bounds(364, 120) == [(0, 120), (120, 240), (240, 360), (360, 364)]  # 4 left: a batch of its own
    assert batch_bounds(1, 32) == [(0, 1)] and batch_bounds(3, 1) == [
        (0, 1),
        (1, 2),
        (2, 3),
    ]  # asked for or all there is
    for n in range(1, 60):
        for size in range(1, 12):
            bounds = batch_bounds(n, size)
            assert [b for a, b in bounds][-1] == n and all(b[0] == a[1] for a, b in zip(bounds, bounds[1:]))
            assert merges_last_batch(n, size) == (n > 1 and size > 1 and n % size == 1)
            if size > 1 and n > 1:
                assert min(b - a for a, b in bounds) >= 2


def test_keras_batches_merge_the_same_last_sample():
    keras_engine = pytest.importorskip("spocu.experiments.run.keras_engine")
    import numpy as np

    x, y = np.zeros((7, 2), dtype=np.float32), np.arange(7)
    batches = keras_engine.SeededBatches(x, y, 3, None, seed=5)
    assert batches.steps == 2 and [len(batches[i][1]) for i in range(4)] == [3, 4, 3, 4]
    from spocu.experiments.seeding import batch_order

    assert np.concatenate([batches[0][1], batches[1][1]]).tolist() == batch_order(5, 0, 7).tolist()


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bnnet.py").write_text(BATCH_NORM_NET)
    return tmp_path


@pytest.mark.parametrize(
    "jobs", [None, pytest.param("2", marks=pytest.mark.slow)], ids=["local", "jobs-2"]
)  # jobs-2: worker processes
def test_a_batch_norm_model_trains_where_the_last_batch_holds_one_sample(jobs, work, capsys):
    # wdbc trains on 364 samples: batches of 121 leave one, the case that crashed mid-training
    args = ["--model", "bnnet.py:build", *FAST, "--threads", "1", "--batch-size", "121", "--out", "o"]
    if jobs:
        args = [*args[:-2], "--activations", "relu, selu", "--jobs", jobs, "--out", "o"]
    code = cli.main(["compare", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    protocol = json.loads((work / "o" / "config.json").read_text())["protocol"]
    assert protocol["last_batch"] == "merged"
    run = json.loads((work / "o" / "runs" / "relu-seed0.json").read_text())
    assert run["epochs"][0]["train_loss"] is not None


def test_a_batch_norm_model_with_the_default_plan_has_no_last_batch_entry(work, capsys):
    assert cli.main(["compare", "--model", "bnnet.py:build", *FAST, "--out", "o"]) == 0
    assert "last_batch" not in json.loads((work / "o" / "config.json").read_text())["protocol"]


def test_an_output_trained_on_the_old_plan_is_refused_in_one_line(work, capsys):
    grid = ["compare", *FAST, "--batch-size", "121", "--out", "o"]
    assert cli.main(grid) == 0
    path = work / "o" / "config.json"
    stored = json.loads(path.read_text())
    del stored["protocol"]["last_batch"]  # as written before the plan merged a last single sample
    path.write_text(json.dumps(stored))
    before = {p: p.read_bytes() for p in (work / "o").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert cli.main(grid) == 2
    error = capsys.readouterr().err
    assert (
        error.count("\n") == 1
        and "were trained with a last batch of one sample" in error
        and "use another --out" in error
    )
    assert {p: p.read_bytes() for p in (work / "o").rglob("*") if p.is_file()} == before


def test_batch_size_one_with_a_batch_norm_is_refused_before_anything_is_written(work, capsys):
    assert cli.main(["compare", "--model", "bnnet.py:build", *FAST, "--batch-size", "1", "--out", "o"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "a training batch of 1 does not go through the model" in error
    assert "use a --batch-size of 2 or more" in error and not (work / "o").exists()


def test_building_and_checking_a_factory_model_leaves_its_state_and_the_rng_as_drawn(work):
    """Every probe of build_torch_model (output check, activation-use check) leaves BatchNorm statistics and the RNG."""
    from spocu.experiments.activations import parse_activation
    from spocu.experiments.models.factories import load_factory
    from spocu.experiments.models.torch_models import build_torch_model, seeded_factory_call

    factory = load_factory("bnnet.py:build")
    with seeded_factory_call(3):
        drawn = factory.function(parse_activation("relu").torch_module, (30,), 2)
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    built = build_torch_model(factory, parse_activation("relu"), (30,), 2, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    assert built.training and all(m.training for m in built.modules())
    expected, got = drawn.state_dict(), built.state_dict()
    assert list(expected) == list(got) and all(torch.equal(expected[k], got[k]) for k in expected)


def test_under_torchrun_the_merged_last_batch_is_the_single_process_one_plus_padding():
    from spocu.experiments.run.distributed import per_process_batch
    from spocu.experiments.run.torch_engine import SeededDistributedSampler
    from spocu.experiments.seeding import batch_order

    n, world, batch, seed = 13, 2, 4, 7  # 13 = 3 x 4 + 1: the single-process plan merges the last sample
    single = [batch_order(seed, 0, n)[a:b].tolist() for a, b in batch_bounds(n, batch)]
    shards = []
    for rank in range(world):
        sampler = SeededDistributedSampler(n, seed=seed, num_replicas=world, rank=rank)
        sampler.set_epoch(0)
        shards.append(list(sampler))
    step = per_process_batch(batch, world)
    per_rank = [[shard[a:b] for a, b in batch_bounds(len(shard), step)] for shard in shards]
    assert len(per_rank[0]) == len(single) == 3
    for k, expected in enumerate(single):
        together = [i for rank in per_rank for i in rank[k]]
        if k < len(single) - 1:
            assert sorted(together) == sorted(expected)
        else:  # the merged 5 samples, plus the one repeat that pads 13 to 14
            assert set(expected) <= set(together) and len(together) == len(expected) + 1
