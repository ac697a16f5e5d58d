"""Config for the user's data and model, resnet20 and its preset, the LR schedule; user_inputs' checks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from spocu.experiments.config import resolve_config, with_model_source
from spocu.experiments.models.factories import UserModelError
from spocu.experiments.run.inputs import ResumeRefused, check_resume, finalize, load_data

MODEL = """
from torch import nn

def build(activation, input_shape, num_classes):
    return nn.Sequential(nn.Linear(input_shape[0], 8), activation(), nn.Linear(8, num_classes))
"""


def test_existing_protocols_unchanged_by_the_new_fields():
    # the keys a protocol had before this change: their hashes (and so every existing output directory) stay valid
    before = {
        "dataset",
        "model",
        "epochs",
        "batch_size",
        "optimizer",
        "lr",
        "weight_decay",
        "momentum",
        "init",
        "val_size",
        "test_size",
        "split_seed",
        "framework",
    }
    # --split fixed (spocu 0.1's single split) leaves "split" out; CIFAR-10 keeps its official test set: fixed
    for options in (
        {"split": "fixed"},
        {"preset": "seed-cifar10"},
        {"dataset": "digits", "model": "deep-mlp", "split": "fixed"},
    ):
        protocol = resolve_config(options).protocol()
        assert set(protocol) == before and set(protocol["model"]) == {"name", "hidden"}
    # the default per-seed splits are a new protocol (an old directory resumes with --split fixed)
    assert set(resolve_config({}).protocol()) == before | {"split"}


def test_resnet20_preset_is_he_et_al_recipe():
    config = resolve_config({"preset": "resnet20-cifar10"})
    assert (config.dataset, config.model.name, config.optimizer, config.momentum, config.weight_decay) == (
        "cifar10",
        "resnet20",
        "sgd",
        0.9,
        1e-4,
    )
    assert (config.batch_size, config.lr, config.lr_milestones, config.epochs) == (128, 0.1, (91, 136), 182)
    assert config.protocol()["lr_milestones"] == [91, 136]
    assert resolve_config({"preset": "resnet20-cifar10", "epochs": 2}).epochs == 2


def test_lr_schedule_is_the_same_in_both_engines():
    from spocu.experiments.run.keras_engine import lr_at_epoch

    config = resolve_config({"lr": 0.1, "lr_milestones": (2, 4), "epochs": 6})
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.lr_milestones), 0.1)
    for epoch in range(6):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr_at_epoch(config, epoch))
        optimizer.step()
        schedule.step()
    assert lr_at_epoch(config, 5) == pytest.approx(0.001)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"lr_milestones": (5, 3)}, "--lr-milestones must be increasing"),
        ({"lr_milestones": (0,)}, "--lr-milestones must be increasing"),
        ({"swap": "relu"}, "--swap applies to a model factory"),
        ({"target": "y"}, "--target applies to your own data"),
        ({"image_size": (8, 8)}, "--image-size applies to your own data"),
        ({"dataset": "nope"}, "unknown dataset 'nope'.*or give a path"),
        ({"model": "nope"}, "unknown model 'nope'.*MODULE:FUNCTION"),
        ({"model": "x.py:f", "swap": "softsign"}, "--swap softsign: not an activation kind"),
        ({"model": "x.py:f", "hidden": (4,)}, "hidden sizes apply to mlp, not x.py:f"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        resolve_config(options)


def test_factory_keeps_its_own_init_unless_init_is_given(tmp_path):
    (tmp_path / "m.py").write_text(MODEL)
    own = resolve_config({"model": f"{tmp_path / 'm.py'}:build"})
    assert own.init == "own" and {s.init for s in own.activations} == {"own"}
    assert own.protocol()["model"] == {"name": "m.py:build", "hidden": [], "swap": None, "source_sha256": None}
    finished, factory = with_model_source(own)
    assert finished.protocol()["model"]["source_sha256"] == factory.source_sha256 is not None
    assert (
        resolve_config({"model": f"{tmp_path / 'm.py'}:build", "init": "customary"}).activations[0].init
        == "lecun-normal"
    )


def _csv(path, seed=0):
    rng = np.random.default_rng(seed)
    pd.DataFrame({"a": rng.normal(size=50), "b": rng.normal(size=50), "y": np.arange(50) % 2}).to_csv(path, index=False)


def test_finalize_adds_hashes_and_checks_the_model_before_anything_is_written(tmp_path):
    _csv(tmp_path / "d.csv")
    (tmp_path / "m.py").write_text(MODEL)
    config = resolve_config({"dataset": str(tmp_path / "d.csv"), "model": f"{tmp_path / 'm.py'}:build"})
    dataset = load_data(config)
    final = finalize(config, dataset)
    assert final.protocol()["data_sha256"] == dataset.info["content_sha256"] and final.protocol()["dataset"] == "d.csv"
    assert final.protocol_hash() != config.protocol_hash()
    images = resolve_config({"dataset": str(tmp_path / "d.csv"), "model": "resnet20"})
    with pytest.raises(ValueError, match="resnet20 needs image inputs"):
        finalize(images, dataset)
    (tmp_path / "bad.py").write_text(
        "from torch import nn\ndef build(activation, input_shape, num_classes):\n    return nn.Linear(99, 2)\n"
    )
    with pytest.raises(UserModelError, match="bad.py:build: a batch of shape"):
        finalize(resolve_config({"dataset": str(tmp_path / "d.csv"), "model": f"{tmp_path / 'bad.py'}:build"}), dataset)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.py", "d.csv", "m.py"]


def test_keras_factory_under_torch_engine_names_the_other_engine(tmp_path):
    pytest.importorskip("keras")
    _csv(tmp_path / "d.csv")
    (tmp_path / "k.py").write_text(
        "import keras\ndef build(activation, input_shape, num_classes):\n"
        "    return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(num_classes)])\n"
    )
    config = resolve_config({"dataset": str(tmp_path / "d.csv"), "model": f"{tmp_path / 'k.py'}:build"})
    with pytest.raises(
        UserModelError, match="not a torch.nn.Module: if it builds a Keras model, run it with --framework keras"
    ):
        finalize(config, load_data(config))
    (tmp_path / "m.py").write_text(MODEL)
    keras_config = resolve_config(
        {"dataset": str(tmp_path / "d.csv"), "model": f"{tmp_path / 'm.py'}:build", "framework": "keras"}
    )
    with pytest.raises(UserModelError, match="calling it failed: .*a PyTorch model runs with --framework torch"):
        finalize(keras_config, load_data(keras_config))


def test_resume_refused_after_the_data_or_the_model_file_changed(tmp_path):
    _csv(tmp_path / "d.csv")
    (tmp_path / "m.py").write_text(MODEL)
    options = {"dataset": str(tmp_path / "d.csv"), "model": f"{tmp_path / 'm.py'}:build"}

    def final():
        config = resolve_config(options)
        return finalize(config, load_data(config))

    out = tmp_path / "out"
    out.mkdir()
    first = final()
    (out / "config.json").write_text(json.dumps({"protocol": first.protocol()}))
    check_resume(first, out)  # unchanged: fine
    _csv(tmp_path / "d.csv", seed=1)
    with pytest.raises(ResumeRefused, match=r"d\.csv changed since the runs in .*out were made \(content sha256"):
        check_resume(final(), out)
    _csv(tmp_path / "d.csv")
    (tmp_path / "m.py").write_text(MODEL + "\n# tuned\n")
    with pytest.raises(ResumeRefused, match=r"the model code .*m\.py changed since the runs"):
        check_resume(final(), out)
