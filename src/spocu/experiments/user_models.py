"""The user's own model for ``spocu compare --model MODULE:FUNCTION`` or ``--model path/to/file.py:FUNCTION``.

A **model factory** is a function. By default it is called as::

    FUNCTION(activation, input_shape, num_classes)

and returns a ``torch.nn.Module`` (PyTorch engine) or a ``keras.Model`` (Keras engine) that maps a
batch of inputs to ``num_classes`` logits. ``activation`` is

- PyTorch: a zero-argument factory of the compared activation's module (``activation()`` gives a
  fresh ``nn.Module``: call it once per place, e.g. ``nn.Sequential(nn.Linear(30, 64), activation())``);
- Keras: the compared activation as Keras layers take it (``Dense(64, activation=activation)``;
  a :class:`spocu.keras.SPOCU` layer for SPOCU, Keras's function for the others).

``input_shape`` is one sample's shape: ``(features,)`` or, for images, ``(C, H, W)`` in PyTorch
and ``(H, W, C)`` in Keras.

With ``swap=NAME`` (``--swap relu``; also gelu, silu, elu, selu, tanh, ...) the factory is called
as ``FUNCTION(num_classes=N)`` -- the signature of ``torchvision.models.resnet18`` and friends --
and every activation of kind NAME in the result is replaced by the compared one
(:func:`spocu.torch.replace_activations` / :func:`spocu.keras.replace_activations`).

The factory is called under the run's seed (torch, numpy and Python's ``random`` seeded from it,
their previous states restored afterwards; Keras: ``keras.utils.set_random_seed``), so a seed's
runs start from the same draws whatever the activation. The model keeps its own weight
initialization unless an init scheme is given (``--init``), which then re-draws every
Linear/Conv2d (Dense/Conv) kernel as the built-in models do and zeroes the biases.

:attr:`ModelFactory.protocol` records the factory's name and a hash of its source file, so a
resumed experiment notices changed model code. Everything that can go wrong -- the import, the
name, the signature, what it returns, its output shape -- raises :class:`UserModelError`
naming the factory, before anything is written.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "mynet.py"
    >>> _ = path.write_text(
    ...     "from torch import nn\\n"
    ...     "def build(activation, input_shape, num_classes):\\n"
    ...     "    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], 8), activation(), nn.Linear(8, num_classes))\\n")
    >>> factory = load_factory(f"{path}:build")
    >>> factory.name
    'mynet.py:build'
    >>> from spocu.experiments.activations import parse_activation
    >>> net = build_torch_model(factory, parse_activation("spocu"), (4,), 3, seed=0)
    >>> type(net[2]).__name__, net[3].out_features
    ('SPOCU', 3)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import random
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from spocu.experiments.activations import ActivationSpec
from spocu.experiments.engines import STREAM_INIT, derive_seed

__all__ = [
    "SWAPPABLE",
    "ModelFactory",
    "UserModelError",
    "build_keras_model",
    "build_torch_model",
    "factory_name",
    "is_model_factory",
    "load_factory",
]

#: Activation kinds ``--swap`` accepts (torch module class names in spocu.torch.replace.ACTIVATION_CLASSES).
SWAPPABLE = ("relu", "gelu", "silu", "elu", "selu", "tanh", "sigmoid", "mish", "leaky_relu", "relu6", "hardswish")


class UserModelError(ValueError):
    """A model factory cannot be imported, called or used; the message names it."""


def factory_name(text: str) -> str:
    """How a factory is named in files and tables: ``package.module:function`` or ``file.py:function``
    (a file's name, not its folder: the protocol should not change when the experiment is resumed elsewhere)."""
    module_text, _, function_name = text.rpartition(":")
    if module_text.endswith(".py") or "/" in module_text or "\\" in module_text:
        return f"{Path(module_text).name}:{function_name}"
    return text


def is_model_factory(text: str) -> bool:
    """True for ``MODULE:FUNCTION`` or ``path/file.py:FUNCTION`` (a built-in model name has no colon)."""
    module, sep, function = text.rpartition(":")
    return bool(sep and module and function)


@dataclass(frozen=True)
class ModelFactory:
    """A resolved ``--model`` factory: what to call, where its code is, and how it is called."""

    name: str  # "package.module:function" or "file.py:function"
    function: Callable[..., Any]
    source: Path | None  # the file that defines the function (None if Python cannot tell)
    source_sha256: str | None
    swap: str | None = None

    @property
    def protocol(self) -> dict[str, Any]:
        """What identifies the model in an experiment's protocol."""
        return {"factory": self.name, "source_sha256": self.source_sha256, "swap": self.swap}


def _sha256(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _import_file(path: Path, text: str) -> Any:
    if not path.is_file():
        raise UserModelError(f"--model {text}: no such file {path}")
    # a unique module name per file, so two model files with one name do not collide
    module_name = "spocu_user_model_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserModelError(f"--model {text}: {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    write_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__/ left beside the user's file: spocu writes only under --out
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:  # sys.exit() in a model file must not end spocu silently
        sys.modules.pop(module_name, None)
        raise UserModelError(f"--model {text}: importing {path} failed: {type(error).__name__}: {error}") from None
    finally:
        sys.dont_write_bytecode = write_bytecode
    return module


def load_factory(text: str, swap: str | None = None) -> ModelFactory:
    """Import the factory named by ``text`` (``MODULE:FUNCTION`` or ``file.py:FUNCTION``) and check its signature.

    Raises:
        UserModelError: the module or file does not import, has no such function, the function
            cannot be called as it will be, or ``swap`` is not an activation kind.
    """
    module_text, sep, function_name = text.rpartition(":")
    if not sep or not module_text or not function_name:
        raise UserModelError(f"--model {text}: expected MODULE:FUNCTION or path/to/file.py:FUNCTION")
    if swap is not None:
        swap = swap.strip().lower().replace("-", "_")
        if swap not in SWAPPABLE:
            raise UserModelError(f"--swap {swap}: not an activation kind; choose one of {', '.join(SWAPPABLE)}")
    is_file = module_text.endswith(".py") or "/" in module_text or "\\" in module_text
    if is_file:
        path = Path(module_text).expanduser()
        module = _import_file(path, text)
        name = factory_name(text)
    else:
        try:
            module = importlib.import_module(module_text)
        except (Exception, SystemExit) as error:  # ModuleNotFoundError, or anything the module raises while importing
            raise UserModelError(f"--model {text}: cannot import {module_text} ({type(error).__name__}: {error})") from None
        name = text
    function = getattr(module, function_name, None)
    if function is None:
        available = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__)
        listed = f"; it defines {', '.join(available)}" if available else ""
        raise UserModelError(f"--model {text}: {module_text} has no {function_name!r}{listed}")
    if not callable(function):
        raise UserModelError(f"--model {text}: {function_name} is a {type(function).__name__}, not a function")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            if swap is None:
                signature.bind(None, None, None)
            else:
                signature.bind(num_classes=2)
        except TypeError:
            wanted = f"{function_name}(num_classes=N) (the torchvision signature, for --swap)" if swap else f"{function_name}(activation, input_shape, num_classes)"
            raise UserModelError(f"--model {text}: {function_name}{signature} cannot be called as {wanted}") from None
    try:
        source_file = inspect.getsourcefile(function)
    except TypeError:
        source_file = None
    source = Path(source_file) if source_file else None
    return ModelFactory(name, function, source, _sha256(source), swap)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """torch, numpy and random seeded from ``seed`` inside; their states restored after."""
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        value = derive_seed(seed, STREAM_INIT, 2)
        torch.manual_seed(value)
        np.random.seed(value % 2**32)
        random.seed(value)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _call(factory: ModelFactory, args: tuple, kwargs: dict, hint: str = "") -> Any:
    try:
        return factory.function(*args, **kwargs)
    except (Exception, SystemExit) as error:  # a factory calling sys.exit() is a failed factory, not spocu's exit
        raise UserModelError(f"--model {factory.name}: calling it failed: {type(error).__name__}: {error}{hint}") from None


def _check_output(factory: ModelFactory, output: Any, num_classes: int, framework: str) -> None:
    shape = tuple(getattr(output, "shape", ()))
    if len(shape) != 2 or shape[1] != num_classes:
        raise UserModelError(
            f"--model {factory.name}: the {framework} model's output has shape {shape} for a batch of 2; "
            f"expected (2, {num_classes}): one logit per class"
        )
    dtype = str(getattr(output, "dtype", ""))
    if "float" not in dtype:  # integer or boolean outputs cannot be logits (and break the loss mid-run)
        raise UserModelError(
            f"--model {factory.name}: the {framework} model's output has dtype {dtype or type(output).__name__}; "
            "expected floating-point logits"
        )


#: Every model a factory has returned in this process: a factory that returns one again (a cached
#: instance) would start a run from another run's trained weights.
_RETURNED: weakref.WeakSet = weakref.WeakSet()


def _check_fresh(factory: ModelFactory, model: Any) -> None:
    if model in _RETURNED:
        raise UserModelError(
            f"--model {factory.name}: returned a model it had returned before (a cached instance?); every run must start "
            "from a new model, or it would continue another run's training"
        )
    _RETURNED.add(model)


def _checked_and_swapped(factory: ModelFactory, model: Any, model_type: type, type_name: str,
                         replace_activations: Any, make_activation: Any, errors: tuple) -> Any:  # fmt: skip
    """``model`` checked (its type, a new instance) with ``--swap``'s activations replaced by ``make_activation()``."""
    if not isinstance(model, model_type):
        raise UserModelError(f"--model {factory.name}: returned {type(model).__name__}, not a {type_name}")
    _check_fresh(factory, model)
    if factory.swap is None:
        return model
    try:
        return replace_activations(model, factory.swap, make_activation)
    except errors as error:
        raise UserModelError(f"--model {factory.name} --swap {factory.swap}: {error}") from None


def _check_trainable(factory: ModelFactory, count: int) -> None:
    if count == 0:
        raise UserModelError(f"--model {factory.name}: the model has no trainable parameters; there is nothing to train")


def build_torch_model(
    factory: ModelFactory,
    activation: ActivationSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    init: str | None = None,
):
    """The factory's ``nn.Module`` for ``activation``, built under ``seed``; checked on a zero batch.

    ``init``: a scheme of :data:`~spocu.experiments.activations.INIT_SCHEMES` to re-draw the
    weights with (as the built-in models), or None to keep the model's own initialization.
    """
    import torch
    from torch import nn

    from spocu.experiments.models_torch import initialize

    calls = []

    def make_activation():
        calls.append(1)
        return activation.torch_module()

    with _seeded(seed):
        if factory.swap is None:
            model = _call(factory, (make_activation, tuple(input_shape), num_classes), {})
        else:
            model = _call(factory, (), {"num_classes": num_classes})
    from spocu.torch.replace import replace_activations

    model = _checked_and_swapped(factory, model, nn.Module, "torch.nn.Module", replace_activations,
                                 activation.torch_module, (ValueError,))  # fmt: skip
    if init is not None:
        initialize(model, init, derive_seed(seed, STREAM_INIT))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros((2, *input_shape)))
    except Exception as error:
        raise UserModelError(
            f"--model {factory.name}: a batch of shape {(2, *input_shape)} does not go through the model: {type(error).__name__}: {error}"
        ) from None
    finally:
        model.train(was_training)
    _check_output(factory, output, num_classes, "PyTorch")
    _check_trainable(factory, sum(p.numel() for p in model.parameters() if p.requires_grad))
    if factory.swap is None and not calls:
        raise UserModelError(
            f"--model {factory.name}: never called activation(), so the compared activations would all train the same "
            "network; use activation() where the activation goes (or --swap NAME for a model with its own activation)"
        )
    return model


def _keras_initialize(model: Any, scheme: str, seed: int) -> None:
    """Every kernel re-drawn like the built-in Keras models' (layer k: ``initializer(scheme, seed, k)``), biases zero."""
    from spocu.experiments.models_keras import initializer

    def leaves(layer: Any) -> Iterator[Any]:
        inner = getattr(layer, "layers", None)
        if inner:
            for sub in inner:
                yield from leaves(sub)
        else:
            yield layer

    index = 0
    for layer in leaves(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        kernel.assign(initializer(scheme, seed, index)(tuple(kernel.shape), dtype=kernel.dtype))
        index += 1
        bias = getattr(layer, "bias", None)
        if bias is not None:
            bias.assign(np.zeros(tuple(bias.shape), dtype=np.float32))


def build_keras_model(
    factory: ModelFactory,
    activation: ActivationSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    init: str | None = None,
):
    """The factory's ``keras.Model`` for ``activation`` (``input_shape`` channels-last), built under ``seed``."""
    import keras

    from spocu.experiments.models_keras import keras_activation

    keras.utils.set_random_seed(derive_seed(seed, STREAM_INIT, 2) % 2**32)
    if factory.swap is None:
        hint = (
            " (with --framework keras the factory gets the Keras activation, used as Dense(units, activation=activation), "
            "not a zero-argument factory: a PyTorch model runs with --framework torch)"
        )
        given = keras_activation(activation)
        used: list[int] = []
        passed = given if isinstance(given, keras.layers.Layer) else _recording(given, used)
        model = _call(factory, (passed, tuple(input_shape), num_classes), {}, hint)
    else:
        model = _call(factory, (), {"num_classes": num_classes})
    from spocu.keras.replace import replace_activations

    model = _checked_and_swapped(factory, model, keras.Model, "keras.Model", replace_activations,
                                 lambda: keras_activation(activation), (ValueError, TypeError))  # fmt: skip
    try:
        output = model(np.zeros((2, *input_shape), dtype=np.float32), training=False)
    except Exception as error:
        raise UserModelError(
            f"--model {factory.name}: a batch of shape {(2, *input_shape)} does not go through the model: {type(error).__name__}: {error}"
        ) from None
    if init is not None:
        _keras_initialize(model, init, seed)
    _check_output(factory, output, num_classes, "Keras")
    _check_trainable(factory, sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    # a layer activation (SPOCU) is built when it is first called; a function one records its calls
    if factory.swap is None and not (given.built if isinstance(given, keras.layers.Layer) else used):
        raise UserModelError(
            f"--model {factory.name}: never used the activation it was given, so the compared activations would all "
            "train the same network; pass it as Dense(units, activation=activation) (or use --swap NAME for a model "
            "with its own activation)"
        )
    return model


def _recording(function: Any, calls: list[int]) -> Any:
    """``function`` that appends to ``calls`` each time it runs (a Keras activation a factory may ignore)."""

    @functools.wraps(function)
    def activation(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return function(*args, **kwargs)

    return activation
