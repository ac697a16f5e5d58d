"""The experiment spec (:class:`~spocu.experiments.config.ExperimentConfig`): built once, typed, and
compatible with every output directory written before it was typed."""

from __future__ import annotations

import pytest

from spocu.experiments.config import resolve_config

#: protocol hashes computed on main before the spec held typed activations (commit 5afaa4a): an output
#: directory's config.json and run files carry them, so a change here would refuse every resume
HASHES_BEFORE = {
    "default": ({}, "29725bb6cc4e"),
    "seed-cifar10": ({"preset": "seed-cifar10"}, "94514b62b033"),
    "resnet20-cifar10": ({"preset": "resnet20-cifar10"}, "a7888821d410"),
    "paper-wdbc": ({"preset": "paper-wdbc"}, "29725bb6cc4e"),
    "paper-mnist": ({"preset": "paper-mnist"}, "9bc1cd192799"),
    "tune": ({"tune": "lr", "activations": ("spocu(alpha=3)", "relu")}, "eb33e8df6cb3"),
    "digits-sgd": (
        {
            "dataset": "digits",
            "optimizer": "sgd",
            "momentum": 0.9,
            "init": "he-normal",
            "lr_milestones": (5, 8),
            "split": "fixed",
            "activations": ("elu(alpha=0.5)", "gelu(approximate=tanh)", "prelu"),
        },
        "7e4ad3bc18a8",
    ),
    "keras": (
        {"framework": "keras", "keras_backend": "jax", "model": "deep-mlp", "depth": 3, "width": 16},
        "6cab6ff9fe9e",
    ),
}


@pytest.mark.parametrize("options, expected", list(HASHES_BEFORE.values()), ids=list(HASHES_BEFORE))
def test_protocol_hashes_are_those_of_existing_output_directories(options, expected):
    assert resolve_config(options).protocol_hash() == expected


def test_user_data_and_factory_protocol_hashes_unchanged(tmp_path):
    (tmp_path / "iris.csv").write_text("a,b,y\n1,2,x\n3,4,z\n")
    (tmp_path / "mynet.py").write_text("def build(activation, input_shape, num_classes):\n    pass\n")
    table = resolve_config({"dataset": str(tmp_path / "iris.csv"), "target": "y", "test_size": 0.3})
    factory = resolve_config({"model": f"{tmp_path}/mynet.py:build", "swap": ["relu"], "allow_partial_swap": True})
    assert (table.protocol_hash(), factory.protocol_hash()) == ("f8fe67489e76", "0af105e6936a")


def test_config_json_lists_the_activations_as_before():
    data = resolve_config({"preset": "paper-mnist"}).to_dict()
    assert data["activations"] == [
        "spocu",
        "spocu(alpha=2.19591525050783, beta=0.664109897357774, gamma=1, c=1)",
        "selu",
        "relu",
    ]
    assert "learning_rates" not in data and data["preset"] == "paper-mnist" and data["seeds"] == list(range(5))
