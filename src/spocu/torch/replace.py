"""Swap the activation modules of any PyTorch model: :func:`replace_activations`."""

from __future__ import annotations

from typing import Callable, Union

from torch import nn

__all__ = ["ACTIVATION_CLASSES", "replace_activations"]

#: Names accepted for ``old`` (case-insensitive; any class name of ``torch.nn`` works too).
ACTIVATION_CLASSES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "celu": nn.CELU,
    "mish": nn.Mish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "hardswish": nn.Hardswish,
    "softplus": nn.Softplus,
}

Old = Union[str, type, tuple]


def _classes(old: Old) -> tuple[type, ...]:
    items = old if isinstance(old, tuple) else (old,)
    if not items:
        raise ValueError("replace_activations: old is an empty tuple; name at least one activation class")
    classes = []
    for item in items:
        if isinstance(item, str):
            key = item.strip().lower().replace("-", "_")
            found = ACTIVATION_CLASSES.get(key) or next(
                (c for n, c in vars(nn).items() if n.lower() == key and isinstance(c, type) and issubclass(c, nn.Module)), None
            )
            if found is None:
                raise ValueError(f"replace_activations: unknown activation {item!r}; use a torch.nn class or one of {', '.join(ACTIVATION_CLASSES)}")
            classes.append(found)
        elif isinstance(item, type) and issubclass(item, nn.Module):
            classes.append(item)
        else:
            raise TypeError(f"replace_activations: old must be a torch.nn.Module class, a tuple of them or a name, not {item!r}")
    return tuple(classes)


def replace_activations(module: nn.Module, old: Old, new: Callable[[], nn.Module]) -> nn.Module:
    """Replace, in place and recursively, every submodule that is an instance of ``old`` by ``new()``.

    ``old`` is a class (``nn.ReLU``), a tuple of classes, or a name (``"relu"``, ``"gelu"``,
    ``"silu"``, ... see :data:`ACTIVATION_CLASSES`, or any ``torch.nn`` class name). ``new``
    is a class or a zero-argument factory (``SPOCU``, ``lambda: SPOCU(c=1.0)``); it is called
    once per replaced submodule, so every replacement is a fresh instance and learnable
    parameters are never shared by accident. The search goes through ``Sequential``,
    ``ModuleList``, ``ModuleDict`` and the attributes of custom modules; a replacement is not
    searched again. Returns ``module`` (or ``new()`` if ``module`` itself is an ``old``).

    Only *modules* can be replaced: a functional call inside ``forward`` (``F.relu(x)``,
    ``torch.relu(x)``, ``x.relu()``) is code, not a submodule, and stays as it is. A module
    called at several places of ``forward`` (torchvision's ``BasicBlock.relu``) is one
    submodule, so its replacement is one instance called at those places.

    Raises:
        ValueError: nothing matched (the message names what was searched for), or an unknown name.
        TypeError: ``new`` is a module instance (it would be shared) or does not return a module.

    Examples:
        >>> import torch
        >>> from spocu.torch import SPOCU
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(),
        ...                           torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()))
        >>> net = replace_activations(net, "relu", SPOCU)
        >>> [type(m).__name__ for m in net.modules() if not isinstance(m, (torch.nn.Linear, torch.nn.Sequential))]
        ['SPOCU', 'SPOCU']
        >>> net[1] is net[2][1]
        False
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"replace_activations: module must be a torch.nn.Module, not {type(module).__name__}")
    classes = _classes(old)
    if isinstance(new, nn.Module):
        raise TypeError(
            f"replace_activations: new is a module instance ({type(new).__name__}); pass its class or a zero-argument "
            "factory (lambda: ...) so that every place gets its own instance"
        )
    if not callable(new):
        raise TypeError(f"replace_activations: new must be a class or a zero-argument factory, not {new!r}")

    def make() -> nn.Module:
        replacement = new()
        if not isinstance(replacement, nn.Module):
            raise TypeError(f"replace_activations: new() returned {type(replacement).__name__}, not a torch.nn.Module")
        return replacement

    if isinstance(module, classes):
        return make()
    replaced = 0
    seen: set[int] = set()

    def visit(parent: nn.Module) -> None:
        nonlocal replaced
        if id(parent) in seen:
            return
        seen.add(id(parent))
        for name, child in list(parent.named_children()):
            if isinstance(child, classes):
                setattr(parent, name, make())  # also right for Sequential/ModuleList/ModuleDict: keys are names
                replaced += 1
            else:
                visit(child)

    visit(module)
    if replaced == 0:
        searched = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in classes)
        raise ValueError(
            f"replace_activations: no submodule of {type(module).__name__} is a {searched}; nothing replaced "
            "(functional calls such as F.relu inside forward cannot be replaced)"
        )
    return module
