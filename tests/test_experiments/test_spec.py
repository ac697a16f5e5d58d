"""The experiment spec (:class:`~spocu.experiments.config.ExperimentConfig`): built once, typed, and
compatible with every output directory written before it was typed."""

from __future__ import annotations

import argparse
import dataclasses
import sys

import pytest

from spocu.experiments.activations import ActivationSpec, parse_activation
from spocu.experiments.config import OPTIONS, ExperimentConfig, resolve_config

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
    with pytest.warns(DeprecationWarning, match="activations holds the ActivationSpec objects"):
        assert config.activation_specs() == list(config.activations)


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


def test_every_compare_option_reaches_the_spec_or_the_run_options_by_its_name():
    from spocu.commands.compare import _DERIVED, add_arguments
    from spocu.experiments.compare import CompareOptions

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    dests = {action.dest for action in parser._actions if action.option_strings} - {"help"}
    fields = {f.name for f in dataclasses.fields(CompareOptions)}
    command_line_only = {"config", "estimate", "no_download", "no_progress"}  # the TOML file, what to do, negated flags
    assert not set(OPTIONS) & fields
    assert dests == set(OPTIONS) | (fields - _DERIVED) | {"track"} | command_line_only


def test_the_command_line_builds_the_spec_its_options_say(tmp_path):
    from spocu.commands.compare import _options, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    words = "--dataset digits --model deep-mlp --depth 3 --width 8 --activations spocu(c=1),relu selu --seeds 3 "
    words += "--first-seed 2 --epochs 4 --batch-size 16 --optimizer sgd --lr 0.01 --weight-decay 1e-4 --momentum 0.9 "
    words += (
        "--init he-normal --val-size 0.1 --test-size 0.3 --split-seed 7 --split fixed --lr-milestones 2,3 --tune lr "
    )
    words += "--jobs 2 --threads 1 --no-download --no-progress --rope 1 --skip-bad-runs --allow-leak --device cpu --track mlflow mlflow"
    options = _options(parser.parse_args([*words.split(), "--out", str(tmp_path / "out")]))
    config = resolve_config(options.config)
    assert [a.canonical for a in config.activations] == ["spocu(c=1)", "relu", "selu"]
    assert {a.init for a in config.activations} == {"he-normal"}
    assert (config.dataset, config.model.label, config.seeds, config.epochs, config.batch_size) == (
        "digits",
        "deep-mlp 3x8",
        (2, 3, 4),
        4,
        16,
    )
    assert (config.optimizer, config.lr, config.weight_decay, config.momentum, config.lr_milestones) == (
        "sgd",
        0.01,
        1e-4,
        0.9,
        (2, 3),
    )
    assert (config.val_size, config.test_size, config.split_seed, config.split, config.tune) == (
        0.1,
        0.3,
        7,
        "fixed",
        "lr",
    )
    assert (options.jobs, options.threads, options.download, options.progress, options.rope) == (
        2,
        1,
        False,
        False,
        1.0,
    )
    assert (options.skip_bad_runs, options.allow_leak, options.device, options.track) == (
        True,
        True,
        "cpu",
        ("mlflow",),
    )
    assert options.out == str(tmp_path / "out") and "tune = " in options.options_toml
    with pytest.raises(ValueError, match="unknown experiment option.* data_dir; the options are preset, model"):
        resolve_config({"data_dir": "/data"})
