"""The experiment spec (:class:`~spocu.experiments.config.ExperimentConfig`): built once, typed, and
compatible with every output directory written before it was typed."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from spocu.experiments.activations import ActivationSpec, parse_activation
from spocu.experiments.config import ExperimentConfig, resolve_config

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


def test_the_spec_holds_the_activations_parsed_with_their_init():
    config = resolve_config({"activations": "spocu(c=1.0), relu", "init": "glorot-normal"})
    assert all(isinstance(a, ActivationSpec) for a in config.activations)
    assert [(a.canonical, a.init) for a in config.activations] == [
        ("spocu(c=1)", "glorot-normal"),
        ("relu", "glorot-normal"),
    ]
    assert config.reference is config.activations[0] and hash(config) == hash(dataclasses.replace(config))
    customary = dataclasses.replace(config, init="customary")  # the specs are kept, their init follows the config's
    assert [a.init for a in customary.activations] == ["lecun-normal", "he-normal"]
    # the Python API may still give strings (and specs): parsed where the config is built
    given = ExperimentConfig(
        dataset="wdbc",
        model=config.model,
        activations=("elu(alpha=1.0)", parse_activation("selu")),
        seeds=(0,),
        epochs=1,
        batch_size=8,
        optimizer="adam",
        lr=1e-3,
        learning_rates=(("selu", 0.01),),
    )
    assert given.activations == (parse_activation("elu"), parse_activation("selu"))
    assert (
        given.lr_for(parse_activation("selu")) == given.lr_for("selu") == 0.01 and given.lr_for(given.reference) == 1e-3
    )
    assert given.to_dict()["learning_rates"] == {"selu": 0.01}


def test_a_bad_activation_is_refused_where_the_spec_is_built():
    with pytest.raises(ValueError) as error:
        resolve_config({"activations": ("relu", "spocu(beta=2)")})
    assert str(error.value) == (
        "activation 'spocu(beta=2)': SPOCU parameter beta=2.0 is out of range: beta must lie in the open interval (0, 1)"
    )
    with pytest.raises(ValueError, match="activation listed twice: spocu"):
        resolve_config({"activations": ("spocu(c=inf)", "spocu")})
    with pytest.raises(ValueError, match="an activation is a name such as"):
        resolve_config({"activations": ("relu", 3)})


def test_a_compare_parses_each_activation_once_where_the_spec_is_built(tmp_path, monkeypatch):
    import spocu.experiments.activations as activations
    from spocu.experiments.compare import CompareOptions, compare

    parsed = []
    original = activations.parse_activation

    def counting(text, *args, **kwargs):
        parsed.append(text)
        return original(text, *args, **kwargs)

    for module in [m for name, m in sys.modules.items() if name.startswith("spocu")]:
        if getattr(module, "parse_activation", None) is original:
            monkeypatch.setattr(module, "parse_activation", counting)
    options = {"activations": ("relu", "spocu(c=1)"), "seeds": 2, "epochs": 1, "hidden": (8,)}
    outcome = compare(CompareOptions(config=options, out=tmp_path / "out", progress=False))
    assert parsed == ["relu", "spocu(c=1)"]
    assert outcome.results["config"]["activations"] == ["relu", "spocu(c=1)"] and outcome.results["reference"] == "relu"
