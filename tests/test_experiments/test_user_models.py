"""--model MODULE:FUNCTION / file.py:FUNCTION and --swap: model files the tests write; every bad-model case."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from spocu.experiments.activations import parse_activation
from spocu.experiments.models.factories import UserModelError, is_model_factory, load_factory
from spocu.experiments.models.torch_models import build_torch_model, initialize
from spocu.torch import SPOCU

MODEL_FILE = """
from torch import nn

def build(activation, input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], 16), activation(), nn.Linear(16, 16), activation(),
                         nn.Linear(16, num_classes))
"""

# the torchvision factory signature: resnet18(*, weights=None, progress=True, **kwargs) with ReLU modules nested in blocks
SWAP_FILE = """
from torch import nn

class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv(x) + x)

class TinyNet(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True))
        self.layers = nn.ModuleList([Block(4), Block(4)])
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x.mean(dim=(2, 3)))

def tinynet(*, weights=None, progress=True, **kwargs):
    return TinyNet(**kwargs)

def functional_only(*, weights=None, **kwargs):
    class F(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 4 * 4, kwargs["num_classes"])
        def forward(self, x):
            return nn.functional.relu(self.fc(x.flatten(1)))
    return F()
"""


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_model_file_factory_gets_the_activation_factory_and_shapes(tmp_path):
    path = _write(tmp_path, "mynet.py", MODEL_FILE)
    factory = load_factory(f"{path}:build")
    assert factory.name == "mynet.py:build" and factory.source == path
    assert factory.protocol["source_sha256"] and factory.protocol["swap"] is None
    net = build_torch_model(factory, parse_activation("spocu(c=1)"), (5,), 3, seed=0)
    spocus = [m for m in net.modules() if isinstance(m, SPOCU)]
    assert len(spocus) == 2 and spocus[0] is not spocus[1]
    assert net(torch.zeros(4, 5)).shape == (4, 3)


def test_module_function_factory_and_source_hash_follows_the_file(tmp_path, monkeypatch):
    _write(tmp_path, "usernets.py", MODEL_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    factory = load_factory("usernets:build")
    assert factory.name == "usernets:build" and factory.source == tmp_path / "usernets.py"
    before = factory.source_sha256
    (tmp_path / "usernets.py").write_text(MODEL_FILE + "\n# changed\n")
    assert load_factory(f"{tmp_path / 'usernets.py'}:build").source_sha256 != before


def test_factory_runs_under_the_seed_so_runs_pair_across_activations(tmp_path):
    factory = load_factory(f"{_write(tmp_path, 'm.py', MODEL_FILE)}:build")
    relu = build_torch_model(factory, parse_activation("relu"), (5,), 3, seed=4)
    selu = build_torch_model(factory, parse_activation("selu"), (5,), 3, seed=4)
    other = build_torch_model(factory, parse_activation("relu"), (5,), 3, seed=5)
    torch.testing.assert_close(relu[1].weight, selu[1].weight)  # the model's own init, same draws
    assert not torch.equal(relu[1].weight, other[1].weight)
    state = torch.random.get_rng_state()
    build_torch_model(factory, parse_activation("relu"), (5,), 3, seed=4)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random state is left alone


def test_init_override_redraws_like_the_built_in_models(tmp_path):
    factory = load_factory(f"{_write(tmp_path, 'm.py', MODEL_FILE)}:build")
    own = build_torch_model(factory, parse_activation("relu"), (5,), 3, seed=2)
    redrawn = build_torch_model(factory, parse_activation("relu"), (5,), 3, seed=2, init="lecun-normal")
    assert not torch.equal(own[1].weight, redrawn[1].weight)
    from spocu.experiments.run.engine import derive_seed
    from spocu.experiments.seeding import STREAM_INIT

    initialize(own, "lecun-normal", derive_seed(2, STREAM_INIT))
    for a, b in zip(own.parameters(), redrawn.parameters()):
        torch.testing.assert_close(a, b)
    assert torch.count_nonzero(redrawn[1].bias) == 0


def test_swap_replaces_every_relu_of_a_torchvision_style_factory(tmp_path):
    path = _write(tmp_path, "tv.py", SWAP_FILE)
    factory = load_factory(f"{path}:tinynet", swap="relu")
    assert factory.protocol["swap"] == "relu"
    net = build_torch_model(factory, parse_activation("spocu"), (3, 8, 8), 5, seed=0)
    assert not any(isinstance(m, nn.ReLU) for m in net.modules())
    assert len([m for m in net.modules() if isinstance(m, SPOCU)]) == 3
    assert net.head.out_features == 5  # called as tinynet(num_classes=5)


def test_swap_replaces_functional_calls_too(tmp_path):
    from spocu.torch.replace import count_activations

    path = _write(tmp_path, "tv.py", SWAP_FILE)
    net = build_torch_model(
        load_factory(f"{path}:functional_only", swap="relu"), parse_activation("spocu"), (3, 4, 4), 2, seed=0
    )
    assert isinstance(next(iter(net.spocu_calls.values())), SPOCU)
    assert not count_activations(net, torch.zeros(2, 3, 4, 4))  # no relu op runs any more


def test_keras_model_file_and_swap(tmp_path):
    keras = pytest.importorskip("keras")
    import spocu.keras
    from spocu.experiments.models.keras_models import build_keras_model

    path = _write(
        tmp_path,
        "k.py",
        """
        import keras

        def build(activation, input_shape, num_classes):
            return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                     keras.layers.Dense(8, activation=activation), keras.layers.Dense(num_classes)])

        def relu_net(num_classes=10):
            return keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(8),
                                     keras.layers.ReLU(), keras.layers.Dense(num_classes)])
    """,
    )
    model = build_keras_model(load_factory(f"{path}:build"), parse_activation("spocu"), (4, 4, 1), 3, seed=0)
    assert isinstance(model.layers[1].activation, spocu.keras.SPOCU)
    assert model(np.zeros((2, 4, 4, 1), "float32")).shape == (2, 3)
    swapped = build_keras_model(
        load_factory(f"{path}:relu_net", swap="relu"), parse_activation("selu"), (4, 4, 1), 3, seed=0
    )
    assert [type(layer).__name__ for layer in swapped.layers] == ["Flatten", "Dense", "Activation", "Dense"]
    assert swapped.layers[2].activation is keras.activations.selu
    again = build_keras_model(
        load_factory(f"{path}:build"), parse_activation("relu"), (4, 4, 1), 3, seed=0, init="he-normal"
    )
    assert not np.any(np.asarray(again.layers[1].bias))


def test_keras_factory_that_ignores_its_activation_is_refused(tmp_path):
    """As in PyTorch: a Keras factory that builds its own activation would compare nothing."""
    pytest.importorskip("keras")
    from spocu.experiments.models.keras_models import build_keras_model

    path = _write(
        tmp_path,
        "kignore.py",
        """
import keras

def ignores(activation, input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(num_classes)])

def uses(activation, input_shape, num_classes):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.Activation(activation)(
        keras.layers.Dense(8)(inputs))))
""",
    )
    for name in ("spocu", "relu", "gelu"):  # a layer (SPOCU), a function and a partial
        with pytest.raises(UserModelError, match=r"ignores: never used the activation it was given"):
            build_keras_model(load_factory(f"{path}:ignores"), parse_activation(name), (3,), 2, seed=0)
        model = build_keras_model(load_factory(f"{path}:uses"), parse_activation(name), (3,), 2, seed=0)
        assert model(np.zeros((2, 3), "float32")).shape == (2, 2)


# ----------------------------------------------------------------------------- bad models


def test_import_failures_name_the_factory(tmp_path):
    bad = _write(tmp_path, "broken.py", "def build(:\n")
    with pytest.raises(UserModelError, match=r"--model .*broken\.py:build: importing .*broken\.py failed: SyntaxError"):
        load_factory(f"{bad}:build")
    raising = _write(tmp_path, "raising.py", "import no_such_package_spocu\n")
    with pytest.raises(UserModelError, match=r"raising\.py failed: ModuleNotFoundError"):
        load_factory(f"{raising}:build")
    with pytest.raises(UserModelError, match=r"--model no_such_module_spocu:f: cannot import no_such_module_spocu"):
        load_factory("no_such_module_spocu:f")
    with pytest.raises(UserModelError, match=r"no such file .*missing\.py"):
        load_factory(f"{tmp_path / 'missing.py'}:build")


def test_missing_or_not_callable_function(tmp_path):
    path = _write(tmp_path, "m.py", MODEL_FILE + "\nWIDTH = 3\n")
    with pytest.raises(UserModelError, match=r"has no 'biuld'; it defines build"):
        load_factory(f"{path}:biuld")
    with pytest.raises(UserModelError, match=r"WIDTH is a int, not a function"):
        load_factory(f"{path}:WIDTH")


def test_wrong_signature(tmp_path):
    path = _write(tmp_path, "s.py", "def two(activation, input_shape):\n    pass\n\ndef needs_more(depth):\n    pass\n")
    with pytest.raises(
        UserModelError,
        match=r"two\(activation, input_shape\) cannot be called as two\(activation, input_shape, num_classes\)",
    ):
        load_factory(f"{path}:two")
    with pytest.raises(UserModelError, match=r"cannot be called as needs_more\(num_classes=N\)"):
        load_factory(f"{path}:needs_more", swap="relu")


def test_not_a_model_and_wrong_output(tmp_path):
    path = _write(
        tmp_path,
        "n.py",
        """
        from torch import nn

        def returns_list(activation, input_shape, num_classes):
            return [nn.Linear(1, 1)]

        def wrong_classes(activation, input_shape, num_classes):
            return nn.Sequential(nn.Linear(input_shape[0], num_classes + 1))

        def wrong_input(activation, input_shape, num_classes):
            return nn.Sequential(nn.Linear(99, num_classes))

        def raises(activation, input_shape, num_classes):
            raise RuntimeError("out of ideas")
    """,
    )
    spec = parse_activation("relu")
    with pytest.raises(UserModelError, match=r"returns_list: returned list, not a torch\.nn\.Module"):
        build_torch_model(load_factory(f"{path}:returns_list"), spec, (3,), 2, seed=0)
    with pytest.raises(UserModelError, match=r"output has shape \(2, 3\).*expected \(2, 2\)"):
        build_torch_model(load_factory(f"{path}:wrong_classes"), spec, (3,), 2, seed=0)
    with pytest.raises(UserModelError, match=r"wrong_input: a batch of shape \(2, 3\) does not go through"):
        build_torch_model(load_factory(f"{path}:wrong_input"), spec, (3,), 2, seed=0)
    with pytest.raises(UserModelError, match=r"raises: calling it failed: RuntimeError: out of ideas"):
        build_torch_model(load_factory(f"{path}:raises"), spec, (3,), 2, seed=0)


def test_swap_problems(tmp_path):
    path = _write(tmp_path, "tv.py", SWAP_FILE)
    with pytest.raises(UserModelError, match=r"--swap softsign: not an activation kind"):
        load_factory(f"{path}:tinynet", swap="softsign")
    with pytest.raises(UserModelError, match=r"--swap gelu: .*nothing replaced"):
        build_torch_model(load_factory(f"{path}:tinynet", swap="gelu"), parse_activation("spocu"), (3, 4, 4), 2, seed=0)


def test_is_model_factory():
    assert is_model_factory("torchvision.models:resnet18") and is_model_factory("nets/my.py:build")
    assert not is_model_factory("mlp") and not is_model_factory("resnet20") and not is_model_factory("x:")


# ----------------------------------------------------------------------------- hostile model files (QA)

HOSTILE_FILE = """
import sys
from torch import nn

def exits(activation, input_shape, num_classes):
    sys.exit(3)

def no_parameters(activation, input_shape, num_classes):
    class Zero(nn.Module):
        def forward(self, x):
            return x[:, :num_classes] * 0
    return Zero()

def integer_output(activation, input_shape, num_classes):
    class Rounded(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(input_shape[0], num_classes)
        def forward(self, x):
            return self.fc(x).long()
    return Rounded()

def frozen(activation, input_shape, num_classes):
    net = nn.Linear(input_shape[0], num_classes)
    net.requires_grad_(False)
    return net
"""


@pytest.mark.parametrize(
    "function, message",
    [
        ("exits", r"--model .*h\.py:exits: calling it failed: SystemExit: 3"),
        ("no_parameters", r"no_parameters: the model has no trainable parameters"),
        ("frozen", r"frozen: the model has no trainable parameters"),
        (
            "integer_output",
            r"integer_output: the PyTorch model's output has dtype torch\.int64; expected floating-point logits",
        ),
    ],
)
def test_hostile_torch_factories_are_refused_naming_them(tmp_path, function, message):
    path = _write(tmp_path, "h.py", HOSTILE_FILE)
    with pytest.raises(UserModelError, match=message):
        build_torch_model(load_factory(f"{path}:{function}"), parse_activation("relu"), (3,), 2, seed=0)


def test_sys_exit_while_importing_the_model_file_is_a_named_failure(tmp_path):
    path = _write(tmp_path, "quits.py", "import sys\nsys.exit(4)\n")
    with pytest.raises(UserModelError, match=r"quits\.py:build: importing .*quits\.py failed: SystemExit: 4"):
        load_factory(f"{path}:build")


LAZY_FILE = """
from torch import nn

NET = None

def cached(activation, input_shape, num_classes):
    global NET
    if NET is None:
        NET = nn.Sequential(nn.Linear(input_shape[0], 8), activation(), nn.Linear(8, num_classes))
    return NET

def ignores_activation(activation, input_shape, num_classes):
    return nn.Sequential(nn.Linear(input_shape[0], 8), nn.ReLU(), nn.Linear(8, num_classes))
"""


def test_factory_that_ignores_its_activation_is_refused(tmp_path):
    """Every activation would train the same network: a comparison of nothing, reported as if real."""
    path = _write(tmp_path, "lazy.py", LAZY_FILE)
    with pytest.raises(
        UserModelError,
        match=r"ignores_activation: never called activation\(\), so the compared activations would all train the same network",
    ):
        build_torch_model(load_factory(f"{path}:ignores_activation"), parse_activation("spocu"), (3,), 2, seed=0)


def test_factory_handing_out_a_cached_instance_is_refused(tmp_path, monkeypatch):
    """A module factory's cached model would carry one run's trained weights into the next run."""
    _write(tmp_path, "spocu_qa_lazy_module.py", LAZY_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    factory = load_factory("spocu_qa_lazy_module:cached")
    first = build_torch_model(factory, parse_activation("relu"), (3,), 2, seed=0)
    with pytest.raises(UserModelError, match=r"spocu_qa_lazy_module:cached: returned a model it had returned before"):
        build_torch_model(factory, parse_activation("relu"), (3,), 2, seed=1)
    assert isinstance(first, nn.Module)


def test_compare_refuses_a_cached_factory_before_writing(tmp_path, monkeypatch, capsys):
    from spocu import cli

    _write(tmp_path, "spocu_qa_lazy_module2.py", LAZY_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    code = cli.main(
        [
            "compare",
            "--model",
            "spocu_qa_lazy_module2:cached",
            "--epochs",
            "1",
            "--seeds",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 2 and "returned a model it had returned before" in capsys.readouterr().err
    assert not out.exists()


def test_module_in_the_current_directory_imports_from_the_console_script(tmp_path, monkeypatch):
    """`spocu compare --model mynet:build` (console script: no cwd on sys.path) finds mynet.py as `python -m spocu` does."""
    import sys

    from spocu.experiments.models.factories import load_factory

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mynet_cwd24.py").write_text(
        "from torch import nn\n"
        "def build(activation, input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Linear(input_shape[0], 4), activation(), nn.Linear(4, num_classes))\n"
    )
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path), ".")])
    monkeypatch.delitem(sys.modules, "mynet_cwd24", raising=False)
    factory = load_factory("mynet_cwd24:build")
    assert factory.name == "mynet_cwd24:build" and factory.source == tmp_path / "mynet_cwd24.py"
    assert not (tmp_path / "__pycache__").exists()


# ----------------------------------------------------------------------------- the activation must be used (#24), --swap probes

USE_FILE = """
import torch
from torch import nn
from torch.nn import functional as F

class Ignores(nn.Module):
    def __init__(self, activation, n_in, n_out):
        super().__init__()
        self.fc, self.act, self.out = nn.Linear(n_in, 8), activation(), nn.Linear(8, n_out)
    def forward(self, x):
        return self.out(F.relu(self.fc(x)))  # registers activation() but calls F.relu

class Mixes(Ignores):
    def forward(self, x):
        return self.out(F.gelu(self.act(self.fc(x))))  # the given one and a hard-wired GELU

class ThrowsAway(Ignores):
    def forward(self, x):
        h = self.fc(x)
        self.act(h)  # the result is thrown away
        return self.out(h)

class Uses(Ignores):
    def forward(self, x):
        return self.out(self.act(self.fc(x)))

def ignores(activation, input_shape, num_classes):
    return Ignores(activation, input_shape[0], num_classes)

def mixes(activation, input_shape, num_classes):
    return Mixes(activation, input_shape[0], num_classes)

def throws_away(activation, input_shape, num_classes):
    return ThrowsAway(activation, input_shape[0], num_classes)

def uses(activation, input_shape, num_classes):
    return Uses(activation, input_shape[0], num_classes)

def keras_style(*, include_top=True, weights="imagenet", input_shape=None, classes=1000):
    assert weights is None, "would download ImageNet weights"
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], 8), nn.ReLU(), nn.Linear(8, classes))
"""


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "ignores",
            r"ignores: called activation\(\) 1 times but never runs what it returned; it runs 1 relu \(1 relu in \(model\) \(m\.py:\d+\)\)",
        ),
        (
            "mixes",
            r"mixes: runs other activations beside the one it was given: 1 gelu \(1 gelu in \(model\) \(m\.py:\d+\)\)",
        ),
        ("throws_away", r"throws_away: 1 of 1 calls of the activation it was given do not reach the model's output"),
    ],
)
def test_a_factory_that_does_not_use_its_activation_is_refused_naming_what_ran(tmp_path, name, message):
    factory = load_factory(f"{_write(tmp_path, 'm.py', USE_FILE)}:{name}")
    with pytest.raises(UserModelError, match=message):
        build_torch_model(factory, parse_activation("spocu"), (3,), 2, seed=0)


@pytest.mark.parametrize("activation", ["spocu", "relu", "gelu"])  # relu/gelu: the given kind's own ops are not "other"
def test_a_factory_that_uses_its_activation_passes(tmp_path, activation):
    factory = load_factory(f"{_write(tmp_path, 'm.py', USE_FILE)}:uses")
    model = build_torch_model(factory, parse_activation(activation), (3,), 2, seed=0)
    assert model.training and model(torch.zeros(2, 3)).shape == (2, 2)


def test_swap_calls_keras_applications_style_factories_with_classes_and_no_downloaded_weights(tmp_path):
    factory = load_factory(f"{_write(tmp_path, 'm.py', USE_FILE)}:keras_style", swap="relu")
    assert factory.classes_keyword == "classes" and factory.swap_kwargs(3, (5,)) == {
        "classes": 3,
        "weights": None,
        "input_shape": (5,),
    }
    model = build_torch_model(factory, parse_activation("spocu"), (5,), 3, seed=0)
    assert isinstance(model[2], SPOCU) and model.spocu_swap == {
        "summary": "1 of 1 relu (1 modules, 0 functional calls)",
        "left": 0,
    }


def test_several_kinds_and_dotted_class_paths_for_swap(tmp_path):
    assert load_factory(f"{_write(tmp_path, 'tv.py', SWAP_FILE)}:tinynet", swap=["relu", "ReLU6"]).swap_kinds == (
        "relu",
        "relu6",
    )
    factory = load_factory(f"{tmp_path / 'tv.py'}:tinynet", swap="torch.nn.modules.activation.ReLU")
    net = build_torch_model(factory, parse_activation("spocu"), (3, 8, 8), 5, seed=0)
    assert len([m for m in net.modules() if isinstance(m, SPOCU)]) == 3


KERAS_USE_FILE = """
import keras

def mixes(activation, input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(8, activation=activation),
                             keras.layers.Dense(8, activation="relu"), keras.layers.Dense(num_classes)])

def throws_away(activation, input_shape, num_classes):
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(8)(inputs)
    keras.layers.Activation(activation)(hidden)  # the result is thrown away
    return keras.Model(inputs, keras.layers.Dense(num_classes)(hidden))

def uses(activation, input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(8, activation=activation), keras.layers.Dense(num_classes)])

def application(*, include_top=True, weights="imagenet", input_shape=None, classes=1000, classifier_activation="softmax"):
    # keras.applications' signature
    assert weights is None and classifier_activation is None, "would download ImageNet weights, or end in a softmax"
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(8), keras.layers.ReLU(6.0),
                             keras.layers.Dense(8), keras.layers.ReLU(), keras.layers.Dense(classes)])
"""


@pytest.mark.parametrize("activation", ["spocu", "relu"])
def test_keras_factories_must_use_the_activation_they_are_given(tmp_path, activation):
    pytest.importorskip("keras")
    from spocu.experiments.models.keras_models import build_keras_model

    path = _write(tmp_path, "k.py", KERAS_USE_FILE)
    spec = parse_activation(activation)
    if activation != "relu":  # with relu compared, the hard-wired relu is the same kind
        with pytest.raises(
            UserModelError,
            match=r"k\.py:mixes: runs other activations beside the one it was given: 1 relu \(dense_\d+\)",
        ):
            build_keras_model(load_factory(f"{path}:mixes"), spec, (4,), 2, seed=0)
    with pytest.raises(
        UserModelError,
        match=r"k\.py:throws_away: (never used the activation it was given|the activation it was given is called but not part of the model)",
    ):
        build_keras_model(load_factory(f"{path}:throws_away"), spec, (4,), 2, seed=0)
    assert build_keras_model(load_factory(f"{path}:uses"), spec, (4,), 2, seed=0).output_shape == (None, 2)


def test_keras_applications_style_factory_swaps_relu6_and_relu(tmp_path):
    pytest.importorskip("keras")
    from spocu.experiments.models.keras_models import build_keras_model

    factory = load_factory(f"{_write(tmp_path, 'k.py', KERAS_USE_FILE)}:application", swap=["relu", "relu6"])
    model = build_keras_model(factory, parse_activation("spocu"), (4, 4, 1), 3, seed=0)
    assert [type(layer).__name__ for layer in model.layers].count("Activation") == 2
    assert model.spocu_swap == {"summary": "2 of 2 relu/relu6 (2 layers)", "left": 0}
