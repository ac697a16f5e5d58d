"""Swap the activations of any Sequential or functional Keras model: :func:`replace_activations`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import keras

__all__ = ["activation_kinds", "replace_activations"]


def _plain_relu(layer: Any) -> bool:
    return layer.max_value is None and float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0


#: name -> (standalone layer class, test that the layer computes exactly that activation)
_STANDALONE: dict[str, tuple[type, Callable[[Any], bool]]] = {
    "relu": (keras.layers.ReLU, _plain_relu),
    # MobileNetV2's ReLU(6.0): a capped relu is "relu6"
    "relu6": (
        keras.layers.ReLU,
        lambda layer: (
            layer.max_value is not None
            and float(layer.max_value) == 6.0
            and float(layer.negative_slope) == 0.0
            and float(layer.threshold) == 0.0
        ),
    ),
    "elu": (keras.layers.ELU, lambda layer: float(layer.alpha) == 1.0),
    "leaky_relu": (keras.layers.LeakyReLU, lambda layer: True),
}


def _activation_name(function: Any) -> str | None:
    """The registered name of an activation function or layer ("relu", "spocu>SPOCU", ...)."""
    if function is None:
        return None
    if isinstance(function, keras.layers.Layer):
        return type(function).__name__.lower()
    try:
        name = keras.activations.serialize(function)
    except Exception:  # an unregistered custom callable
        name = getattr(function, "__name__", None)
    if isinstance(name, dict):
        name = name.get("config") if isinstance(name.get("config"), str) else name.get("class_name")
    return name.lower() if isinstance(name, str) else None


def _kind_of_layer(layer: Any) -> str | None:
    """The activation kind a layer computes or applies, for messages ("relu", "relu6", "gelu", ...), or None."""
    for key, (cls, test) in _STANDALONE.items():
        if isinstance(layer, cls) and test(layer):
            return key
    if isinstance(layer, keras.layers.ReLU):
        return f"relu(max_value={layer.max_value}, negative_slope={float(layer.negative_slope)}, threshold={float(layer.threshold)})"
    name = _activation_name(getattr(layer, "activation", None))
    if name in (None, "linear") or isinstance(layer, keras.Model):
        return (
            type(layer).__name__.lower()
            if type(layer).__module__.startswith("keras") and "activation" in type(layer).__module__
            else None
        )
    return name


def activation_kinds(model: Any) -> dict[str, int]:
    """How many layers of ``model`` (nested ones included) apply each activation kind."""
    kinds: dict[str, int] = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        kind = _kind_of_layer(layer)
        if kind is not None:
            kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _matcher(old: Any) -> tuple[Callable[[Any], bool], Callable[[Any], bool], str]:
    """(does a layer's ``activation`` match, is a layer a standalone match, description)."""
    if isinstance(old, (tuple, list)):
        if not old:
            raise ValueError("replace_activations: old is empty; name at least one activation")
        parts = [_matcher(item) for item in old]
        return (
            lambda fn: any(p[0](fn) for p in parts),
            lambda layer: any(p[1](layer) for p in parts),
            " or ".join(p[2] for p in parts),
        )
    if isinstance(old, str):
        key = old.strip().lower().replace("-", "_")
        try:
            keras.activations.get(key)
        except (ValueError, TypeError):
            if key not in _STANDALONE:
                raise ValueError(f"replace_activations: {old!r} is not a Keras activation name") from None
        standalone = _STANDALONE.get(key)
        return (
            lambda fn: _activation_name(fn) == key,
            (lambda layer: isinstance(layer, standalone[0]) and standalone[1](layer))
            if standalone
            else (lambda layer: False),
            f"activation {key!r}",
        )
    if isinstance(old, type) and issubclass(old, keras.layers.Layer):
        return (lambda fn: isinstance(fn, old), lambda layer: isinstance(layer, old), f"layer class {old.__name__}")
    if callable(old):
        name = _activation_name(old)
        return (
            lambda fn: fn is old or (name is not None and _activation_name(fn) == name),
            lambda layer: False,
            f"activation {name or old!r}",
        )
    raise TypeError(f"replace_activations: old must be an activation name, function or layer class, not {old!r}")


def _maker(new: Any) -> Callable[[], Any]:
    """A zero-argument callable giving what replaces one activation (a fresh layer for layer factories)."""
    if isinstance(new, keras.layers.Layer):
        raise TypeError(
            f"replace_activations: new is a layer instance ({type(new).__name__}); pass its class or a zero-argument "
            "factory (lambda: ...) so that every place gets its own layer"
        )
    if isinstance(new, str):
        keras.activations.get(new)  # raises ValueError naming an unknown activation
        return lambda: new
    if isinstance(new, type):
        if not issubclass(new, keras.layers.Layer):
            raise TypeError(f"replace_activations: new class {new.__name__} is not a keras.layers.Layer")
        return new
    if not callable(new):
        raise TypeError(
            f"replace_activations: new must be an activation (name or function) or a layer factory, not {new!r}"
        )
    try:
        inspect.signature(new).bind()
    except TypeError:  # takes the tensor: an activation function, used as it is
        return lambda: new
    except ValueError:  # no signature (a builtin): treat as a function
        return lambda: new

    def fresh() -> Any:
        layer = new()
        if not isinstance(layer, keras.layers.Layer) and not callable(layer):
            raise TypeError(f"replace_activations: new() returned {type(layer).__name__}, not a layer or activation")
        return layer

    return fresh


def _clonable(model: Any) -> bool:
    """Sequential and functional models can be cloned; subclassed ones cannot."""
    try:
        from keras.src.models.functional import Functional
    except ImportError:  # pragma: no cover - another Keras layout: let clone_model decide
        return True
    return isinstance(model, (keras.Sequential, Functional))


def replace_activations(model: keras.Model, old: Any, new: Any) -> keras.Model:
    """A copy of ``model`` (same weights) in which every activation ``old`` is ``new``.

    The copy is made by ``keras.models.clone_model`` (``recursive=True``, so nested Sequential
    and functional models are searched too) with a ``clone_function`` that changes

    - every layer whose ``activation=`` is ``old`` (``Dense``, ``Conv2D``, ``Activation``, ...), and
    - every standalone activation layer of that kind: ``keras.layers.ReLU()`` with its default
      arguments for ``"relu"``, ``ReLU(max_value=6)`` (MobileNetV2's) for ``"relu6"``, ``ELU()``
      with ``alpha=1`` for ``"elu"``, ``LeakyReLU`` for ``"leaky_relu"`` -- replaced by
      ``Activation(new)`` of the same name.

    ``old``: an activation name (``"relu"``), an activation function (``keras.activations.relu``),
    a layer class (matched by ``isinstance``), or a tuple/list of these (``("relu", "relu6")``). ``new``: an activation name or function
    (``"selu"``, ``spocu.keras.spocu``), or a layer class or zero-argument factory
    (``spocu.keras.SPOCU``, ``lambda: SPOCU(c=1.0)``), called once per place, so learnable
    parameters are never shared. Every other weight (kernels, biases, batch-norm statistics)
    is copied from ``model``; ``model`` itself is not changed. The copy saves and loads with
    ``model.save`` / ``keras.models.load_model`` (after ``import spocu.keras``).

    Subclassed models cannot be cloned (their structure is code): build them with the new
    activation instead. An activation computed in a layer's ``call`` is code too and stays.

    Raises:
        ValueError: nothing matched (the message names what was searched for), a subclassed model,
            or an unknown activation name.
        TypeError: ``new`` is a layer instance (it would be shared), or ``old``/``new`` of a wrong type.

    Examples:
        >>> import numpy as np, keras, spocu.keras
        >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="relu")])
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.ReLU(), inner, keras.layers.Dense(2)])
        >>> swapped = replace_activations(model, "relu", spocu.keras.SPOCU)
        >>> [type(layer).__name__ for layer in swapped.layers]
        ['Dense', 'Activation', 'Sequential', 'Dense']
        >>> type(swapped.layers[2].layers[0].activation).__name__
        'SPOCU'
        >>> np.array_equal(swapped.layers[0].get_weights()[0], model.layers[0].get_weights()[0])
        True
    """
    matches_activation, matches_layer, searched = _matcher(old)
    make = _maker(new)
    pairs: list[tuple[Any, Any]] = []
    replaced: list[str] = []

    def clone(layer: Any) -> Any:
        if matches_layer(layer):
            replaced.append(layer.name)
            return keras.layers.Activation(make(), name=layer.name)
        config = layer.get_config()
        if "activation" in config and matches_activation(getattr(layer, "activation", None)):
            config["activation"] = make()
            replaced.append(layer.name)
        copy = layer.__class__.from_config(config)
        pairs.append((layer, copy))
        return copy

    def own_weights(layer: Any) -> list[Any]:
        """The layer's weights less its activation's (a learnable SPOCU in ``activation=`` adds its own)."""
        activation = getattr(layer, "activation", None)
        inner = {id(v) for v in activation.weights} if isinstance(activation, keras.layers.Layer) else set()
        return [v for v in layer.weights if id(v) not in inner]

    if not isinstance(model, keras.Model):
        raise TypeError(f"replace_activations: {type(model).__name__} is not a keras.Model")
    if not _clonable(model):
        raise ValueError(
            f"replace_activations: {type(model).__name__} is a subclassed model, which Keras cannot clone "
            "(its structure is code); build it with the new activation instead"
        )
    swapped = keras.models.clone_model(model, clone_function=clone, recursive=True)
    if not replaced:
        kinds = activation_kinds(model)
        has = (
            "; its activations: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
            if kinds
            else "; it has no activation layers"
        )
        raise ValueError(f"replace_activations: no layer of {model.name} uses {searched}; nothing replaced{has}")
    object.__setattr__(swapped, "spocu_replaced", tuple(replaced))  # untracked by Keras: not saved, for reports
    for original, copy in pairs:
        sources, targets = own_weights(original), own_weights(copy)
        if len(sources) != len(targets):  # pragma: no cover - a layer whose weights the swap changed
            raise ValueError(
                f"replace_activations: {original.name} has {len(sources)} weights, its copy {len(targets)}"
            )
        for source, target in zip(sources, targets):
            target.assign(keras.ops.convert_to_numpy(source))
    return swapped
