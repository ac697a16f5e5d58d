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
    >>> from spocu.experiments.models.torch_models import build_torch_model
    >>> net = build_torch_model(factory, parse_activation("spocu"), (4,), 3, seed=0)
    >>> type(net[2]).__name__, net[3].out_features
    ('SPOCU', 3)
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spocu.experiments.models.spec import (
    SWAPPABLE,
    ModelSpec,
    UserModelError,
    factory_name,
    is_model_factory,
    parse_swap,
)
from spocu.experiments.user_code import import_file, source_sha256

__all__ = [
    "SWAPPABLE",
    "ModelFactory",
    "UserModelError",
    "call_factory",
    "check_output",
    "check_trainable",
    "checked_and_swapped",
    "factory_name",
    "is_model_factory",
    "load_factory",
    "load_spec_factory",
]


@dataclass(frozen=True)
class ModelFactory:
    """A resolved ``--model`` factory: what to call, where its code is, and how it is called."""

    name: str  # "package.module:function" or "file.py:function"
    function: Callable[..., Any]
    source: Path | None  # the file that defines the function (None if Python cannot tell)
    source_sha256: str | None
    swap: str | None = None
    #: the keyword the factory takes the class count by: "num_classes" (torchvision, timm) or "classes" (keras.applications)
    classes_keyword: str = "num_classes"
    #: what else a --swap factory is given: weights=None (train from scratch) where it downloads weights by default,
    #: input_shape= where it takes one, classifier_activation=None (logits, not softmax) (keras.applications)
    swap_extras: tuple[str, ...] = ()

    @property
    def swap_kinds(self) -> tuple[str, ...]:
        """``--swap``'s kinds and class paths, as :func:`spocu.torch.replace_activations` takes them."""
        return tuple(self.swap.split(",")) if self.swap else ()

    def swap_kwargs(self, num_classes: int, input_shape: tuple[int, ...]) -> dict[str, Any]:
        """The keyword arguments a --swap factory is called with."""
        kwargs: dict[str, Any] = {self.classes_keyword: num_classes}
        if "weights" in self.swap_extras:
            kwargs["weights"] = None
        if "input_shape" in self.swap_extras:
            kwargs["input_shape"] = tuple(input_shape)
        if "classifier_activation" in self.swap_extras:
            kwargs["classifier_activation"] = None
        return kwargs

    @property
    def protocol(self) -> dict[str, Any]:
        """What identifies the model in an experiment's protocol."""
        return {"factory": self.name, "source_sha256": self.source_sha256, "swap": self.swap}


def _sha256(path: Path | None) -> str | None:
    return source_sha256(path)


def _import_file(path: Path, text: str) -> Any:
    return import_file(path, f"--model {text}", UserModelError)


def _in_cwd_only(module_text: str) -> bool:
    """The module's top package is a file or folder in the current directory that sys.path does not reach."""
    top = module_text.split(".")[0]
    if "" in sys.path or os.getcwd() in sys.path or not top.isidentifier():
        return False
    here = Path.cwd()
    if not ((here / f"{top}.py").is_file() or (here / top / "__init__.py").is_file()):
        return False
    try:
        return importlib.util.find_spec(top) is None
    except (ImportError, ValueError):
        return False


def load_factory(text: str, swap: str | None = None) -> ModelFactory:
    """Import the factory named by ``text`` (``MODULE:FUNCTION`` or ``file.py:FUNCTION``) and check its signature.

    Raises:
        UserModelError: the module or file does not import, has no such function, the function
            cannot be called as it will be, or ``swap`` is not an activation kind.
    """
    module_text, sep, function_name = text.rpartition(":")
    if not sep or not module_text or not function_name:
        raise UserModelError(f"--model {text}: expected MODULE:FUNCTION or path/to/file.py:FUNCTION")
    try:
        swap = parse_swap(swap)
    except ValueError as error:
        raise UserModelError(str(error)) from None
    is_file = module_text.endswith(".py") or "/" in module_text or "\\" in module_text
    if is_file:
        path = Path(module_text).expanduser()
        module = _import_file(path, text)
        name = factory_name(text)
    else:
        write_bytecode = sys.dont_write_bytecode
        try:
            if _in_cwd_only(module_text):
                # `python -m spocu` has the current directory on sys.path, the `spocu` console script not:
                # mynet.py beside the user imports either way (and leaves no __pycache__/ there)
                sys.path.insert(0, os.getcwd())
                sys.dont_write_bytecode = True
            module = importlib.import_module(module_text)
        except (Exception, SystemExit) as error:  # ModuleNotFoundError, or anything the module raises while importing
            raise UserModelError(
                f"--model {text}: cannot import {module_text} ({type(error).__name__}: {error})"
            ) from None
        finally:
            sys.dont_write_bytecode = write_bytecode
        name = text
    function = getattr(module, function_name, None)
    if function is None:
        available = sorted(
            n
            for n, v in vars(module).items()
            if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
        )
        listed = f"; it defines {', '.join(available)}" if available else ""
        raise UserModelError(f"--model {text}: {module_text} has no {function_name!r}{listed}")
    if not callable(function):
        raise UserModelError(f"--model {text}: {function_name} is a {type(function).__name__}, not a function")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        signature = None
    classes_keyword, extras = "num_classes", ()
    if signature is not None:
        try:
            if swap is None:
                signature.bind(None, None, None)
            else:
                classes_keyword, extras = _swap_call(signature)
        except TypeError:
            wanted = (
                f"{function_name}(num_classes=N) (the torchvision signature, for --swap; or classes=N)"
                if swap
                else f"{function_name}(activation, input_shape, num_classes)"
            )
            raise UserModelError(f"--model {text}: {function_name}{signature} cannot be called as {wanted}") from None
    try:
        source_file = inspect.getsourcefile(function)
    except TypeError:
        source_file = None
    source = Path(source_file) if source_file else None
    return ModelFactory(name, function, source, _sha256(source), swap, classes_keyword, extras)


def _swap_call(signature: inspect.Signature) -> tuple[str, tuple[str, ...]]:
    """How a --swap factory is called: its class-count keyword, and weights=None / input_shape= where it takes them.

    Raises TypeError (as ``bind`` does) if it takes neither ``num_classes=`` nor ``classes=``.
    """
    try:
        signature.bind(num_classes=2)
        keyword = "num_classes"
    except TypeError:
        signature.bind(classes=2)
        keyword = "classes"
    parameters = signature.parameters
    extras = []
    weights = parameters.get("weights")
    if weights is not None and weights.default not in (None, inspect.Parameter.empty):  # keras.applications: "imagenet"
        extras.append("weights")
    if "input_shape" in parameters:
        extras.append("input_shape")
    if "classifier_activation" in parameters:  # keras.applications: softmax by default; training takes logits
        extras.append("classifier_activation")
    return keyword, tuple(extras)


class _ExitCalled(Exception):
    pass


def _refuse_exit(status: int = 0) -> None:
    raise _ExitCalled(f"it called os._exit({status}), which would end spocu compare silently")


def call_factory(factory: ModelFactory, args: tuple, kwargs: dict, hint: str = "") -> Any:
    """``factory(*args, **kwargs)``; anything it raises (or ``sys.exit``/``os._exit``) becomes a :class:`UserModelError`."""
    real_exit, os._exit = (
        os._exit,
        _refuse_exit,
    )  # os._exit skips every handler: the run would end with exit 0, silently
    try:
        return factory.function(*args, **kwargs)
    except _ExitCalled as error:
        raise UserModelError(f"--model {factory.name}: {error}; a factory must return a model") from None
    except (Exception, SystemExit) as error:  # a factory calling sys.exit() is a failed factory, not spocu's exit
        raise UserModelError(
            f"--model {factory.name}: calling it failed: {type(error).__name__}: {error}{hint}"
        ) from None
    finally:
        os._exit = real_exit


def check_output(factory: ModelFactory, output: Any, num_classes: int, framework: str, batch: int = 2) -> None:
    """Raise :class:`UserModelError` unless the factory's model maps a batch of ``batch`` samples
    to float logits of shape ``(batch, num_classes)``.
    """
    shape = tuple(getattr(output, "shape", ()))
    if len(shape) != 2 or shape[1] != num_classes or shape[0] != batch:
        raise UserModelError(
            f"--model {factory.name}: the {framework} model's output has shape {shape} for a batch of {batch}; "
            f"expected ({batch}, {num_classes}): one logit per class and sample"
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


def checked_and_swapped(factory: ModelFactory, model: Any, model_type: type, type_name: str,
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


def check_trainable(factory: ModelFactory, count: int) -> None:
    """Raise :class:`UserModelError` if the factory's model has no trainable parameters (``count == 0``)."""
    if count == 0:
        raise UserModelError(
            f"--model {factory.name}: the model has no trainable parameters; there is nothing to train"
        )


def load_spec_factory(spec: ModelSpec) -> ModelFactory:
    """The factory ``spec`` names; :class:`UserModelError` if its source changed since the protocol hashed it."""
    factory = load_factory(spec.name, spec.swap)
    if spec.source_sha256 is not None and factory.source_sha256 != spec.source_sha256:
        raise UserModelError(f"--model {factory.name}: its source file {factory.source} changed during the experiment")
    return factory
