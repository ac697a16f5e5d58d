"""The compared networks in Keras 3, with the PyTorch engine's initialization schemes.

- ``seed-cnn``: the seed's Keras model layer for layer::

      Conv2D(32, (3, 3), activation=act) -> MaxPool2D() -> Conv2D(64, (3, 3), activation=act)
      -> MaxPool2D() -> Flatten() -> Dense(classes)

  channels-last, "valid" convolutions: 896 + 18,496 + 23,050 = 42,442 parameters on 32x32x3
  inputs, as in the seed's ``model.summary()``. The last layer returns logits, trained with
  ``SparseCategoricalCrossentropy(from_logits=True)``: the seed's softmax + cross-entropy,
  computed stably. A pool is skipped where the map is below 2x2 (8x8 digits), as in
  :mod:`~spocu.experiments.models.torch_models`.
- ``mlp`` / ``deep-mlp``: Flatten -> [Dense(width, activation=act)] per hidden width -> Dense(classes).
- ``resnet20``: :func:`resnet20`, the CIFAR ResNet-20 of He et al. 2016, layer for layer as
  :class:`spocu.experiments.models.torch_models.ResNet20` (the same 269,722 parameters on 32x32x3
  inputs and 10 classes; batch norm with PyTorch's momentum 0.1 and epsilon 1e-5; stride-2
  convolutions pad one pixel on every side, as PyTorch does, not Keras's "same").

The activation is the layers' ``activation=`` argument, as the seed wrote it: SPOCU is
:class:`spocu.keras.SPOCU` (with the spec's alpha, beta, gamma, c), the others Keras's own
functions (``gelu`` exact unless ``approximate=tanh``; ``silu`` is Keras's ``silu``).

Initialization: every kernel from ``keras.initializers.VarianceScaling`` with the scheme's std
or bound (:data:`KERAS_INITIALIZERS`) -- untruncated normals, like the PyTorch engine (Keras's
``lecun_normal``/``he_normal`` would truncate at 2 sd); biases zero. Layer k's initializer is
seeded by ``(run seed, k)``, so with the same seed two activations whose schemes share a
distribution start from the same draws, scaled by the scheme (He-normal = sqrt(2) x LeCun-normal).
The draws come from the Keras backend's generator, so they differ between backends and from
the PyTorch engine's; their distribution does not.

Example:
    >>> from spocu.experiments.activations import parse_activation
    >>> from spocu.experiments.models.spec import ModelSpec
    >>> build_model(ModelSpec("seed-cnn"), (3, 32, 32), 10, parse_activation("spocu"), seed=0).count_params()
    42442
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial, wraps
from typing import Any

import keras
import numpy as np

from spocu.experiments.activations import INIT_SCHEMES, OWN_INIT, ActivationSpec
from spocu.experiments.models.factories import (
    ModelFactory,
    UserModelError,
    call_factory,
    check_output,
    check_trainable,
    checked_and_swapped,
    load_spec_factory,
)
from spocu.experiments.models.spec import ModelSpec
from spocu.experiments.seeding import STREAM_INIT, derive_seed

__all__ = [
    "KERAS_INITIALIZERS",
    "SubsampleZeroPad",
    "build_model",
    "build_keras_model",
    "resnet20",
    "count_parameters",
    "keras_activation",
    "keras_input_shape",
    "initializer",
]

#: init scheme -> VarianceScaling(scale, mode, distribution); std = sqrt(scale / fan), uniform bound = sqrt(3 scale / fan)
KERAS_INITIALIZERS: dict[str, tuple[float, str, str]] = {
    "lecun-normal": (1.0, "fan_in", "untruncated_normal"),
    "he-normal": (2.0, "fan_in", "untruncated_normal"),
    "glorot-normal": (1.0, "fan_avg", "untruncated_normal"),
    "glorot-uniform": (1.0, "fan_avg", "uniform"),  # keras.initializers.GlorotUniform, Keras's default
    "torch-default": (1.0 / 3.0, "fan_in", "uniform"),  # bound 1 / sqrt(fan_in)
}
assert set(KERAS_INITIALIZERS) == set(INIT_SCHEMES)


def keras_input_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Channels-last shape for a dataset's ``(C, H, W)`` images; features unchanged."""
    if len(input_shape) == 3:
        channels, height, width = input_shape
        return (height, width, channels)
    return tuple(input_shape)


class SharedPReLU(keras.layers.Layer):
    """PReLU with one learned slope shared by every unit, as ``torch.nn.PReLU()``: x for x >= 0, a x below.

    (``keras.layers.PReLU`` learns one slope per unit by default: another network than PyTorch's.)
    """

    def __init__(self, init: float = 0.25, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.init = float(init)

    def build(self, input_shape: tuple) -> None:
        self.slope = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.init), name="slope")

    def call(self, x: Any) -> Any:
        return keras.ops.where(x >= 0, x, self.slope * x)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "init": self.init}


def keras_activation(activation: ActivationSpec) -> Any:
    """What the layers get as ``activation=``: a fresh :class:`spocu.keras.SPOCU` layer, or Keras's function."""
    if activation.is_user:  # the user's Keras callable, or a layer class instantiated for this place
        import inspect

        obj = activation.user_object()
        return obj() if inspect.isclass(obj) else obj
    p = activation.all_params
    if activation.name == "spocu":
        from spocu.keras import SPOCU

        return SPOCU(alpha=p["alpha"], beta=p["beta"], gamma=p["gamma"], c=p["c"], learnable=p["learnable"])
    if activation.name == "prelu":
        return SharedPReLU(p["init"])
    functions = {
        "relu": lambda: keras.activations.relu,
        "selu": lambda: keras.activations.selu,
        "gelu": lambda: partial(keras.activations.gelu, approximate=p["approximate"] == "tanh"),
        "elu": lambda: partial(keras.activations.elu, alpha=p["alpha"]),
        "silu": lambda: keras.activations.silu,
        "mish": lambda: keras.activations.mish,
        "tanh": lambda: keras.activations.tanh,
        "sigmoid": lambda: keras.activations.sigmoid,
    }
    return functions[activation.name]()


def initializer(scheme: str, seed: int, layer: int) -> keras.initializers.Initializer:
    """The kernel initializer of layer ``layer`` (0, 1, ...) of a run with ``seed``."""
    if scheme not in KERAS_INITIALIZERS:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {', '.join(KERAS_INITIALIZERS)}")
    scale, mode, distribution = KERAS_INITIALIZERS[scheme]
    layer_seed = derive_seed(seed, STREAM_INIT, 1000 + layer) % (2**31 - 1)
    return keras.initializers.VarianceScaling(scale=scale, mode=mode, distribution=distribution, seed=layer_seed)


@keras.saving.register_keras_serializable(package="spocu")
class SubsampleZeroPad(keras.layers.Layer):
    """ResNet option-A shortcut: every ``stride``-th pixel, then ``extra_channels`` zero channels appended (channels-last)."""

    def __init__(self, stride: int = 2, extra_channels: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stride = int(stride)
        self.extra_channels = int(extra_channels)

    def call(self, x: Any) -> Any:
        """Keras forward of the ResNet shortcut: subsample by ``stride`` and zero-pad
        ``extra_channels`` channels (option A of He et al. 2016; no parameters).
        """
        from keras import ops

        x = x[:, :: self.stride, :: self.stride, :]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.extra_channels]])

    def compute_output_shape(self, shape: tuple) -> tuple:
        """Keras shape inference: height and width divided by ``stride`` (rounded up), and
        ``extra_channels`` more channels.
        """
        n, h, w, c = shape

        def shrink(d: int | None) -> int | None:
            return None if d is None else -(-d // self.stride)

        return (n, shrink(h), shrink(w), None if c is None else c + self.extra_channels)

    def get_config(self) -> dict[str, Any]:
        """Keras serialization: the constructor's arguments, ``stride`` and ``extra_channels``."""
        return {**super().get_config(), "stride": self.stride, "extra_channels": self.extra_channels}


def resnet20(
    input_shape: tuple[int, ...], num_classes: int, activation: Any, kernel_initializer: Any = None
) -> keras.Model:
    """The CIFAR ResNet-20 (He et al. 2016, Sec. 4.2) for channels-last ``input_shape`` (H, W, C).

    conv3x3(16) -> BN -> act -> 3 stages x 3 basic blocks (16, 32, 64 channels; stages 2 and 3
    start with stride 2; option-A shortcuts, :class:`SubsampleZeroPad`) -> global average pooling
    -> Dense(classes). ``activation()`` gives what follows each of the 19 places ReLU stands in
    the paper (a layer, or a function wrapped in ``Activation``); ``kernel_initializer(k)`` the
    initializer of the k-th convolution or dense kernel (None: Keras's default).

    Example:
        >>> count_parameters(resnet20((32, 32, 3), 10, lambda: keras.activations.relu))
        269722
    """
    counter = iter(range(10_000))
    layers = keras.layers

    def init() -> dict[str, Any]:
        return {} if kernel_initializer is None else {"kernel_initializer": kernel_initializer(next(counter))}

    def act(x: Any) -> Any:
        made = activation()
        return (made if isinstance(made, keras.layers.Layer) else layers.Activation(made))(x)

    def conv(x: Any, filters: int, stride: int = 1) -> Any:
        if stride > 1:  # pad 1 on every side like PyTorch's padding=1 (Keras's "same" would pad bottom/right only)
            x = layers.ZeroPadding2D(1)(x)
        return layers.Conv2D(
            filters, 3, strides=stride, padding="valid" if stride > 1 else "same", use_bias=False, **init()
        )(x)

    def bn(x: Any) -> Any:
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)  # PyTorch's defaults

    inputs = keras.Input(tuple(input_shape))
    x = act(bn(conv(inputs, 16)))
    width = 16
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            out = act(bn(conv(x, filters, stride)))
            out = bn(conv(out, filters))
            shortcut = x if stride == 1 and filters == width else SubsampleZeroPad(stride, filters - width)(x)
            x = act(layers.Add()([out, shortcut]))
            width = filters
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, bias_initializer="zeros", **init())(x)
    return keras.Model(inputs, outputs, name="resnet20")


def build_model(
    spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, activation: ActivationSpec, seed: int
) -> keras.Model:
    """The network ``spec`` for a dataset's ``input_shape`` (features, or C x H x W), initialized for ``seed``."""
    if spec.is_factory:
        factory = load_spec_factory(spec)
        init = None if activation.init == OWN_INIT else activation.init
        return build_keras_model(factory, activation, keras_input_shape(input_shape), num_classes, seed, init)
    if spec.name == "resnet20":
        if len(input_shape) != 3:
            raise ValueError(
                f"resnet20 needs image inputs (channels, height, width); this dataset has {input_shape} features: use mlp"
            )
        return resnet20(
            keras_input_shape(input_shape),
            num_classes,
            lambda: keras_activation(activation),
            lambda k: initializer(activation.init, seed, k),
        )
    layers: list[keras.layers.Layer] = [keras.Input(keras_input_shape(input_shape))]
    counter = iter(range(10_000))

    def weights() -> dict[str, Any]:
        return {"kernel_initializer": initializer(activation.init, seed, next(counter)), "bias_initializer": "zeros"}

    if spec.name == "seed-cnn":
        if len(input_shape) != 3:
            raise ValueError(
                f"seed-cnn needs image inputs (channels, height, width); this dataset has {input_shape} features: use mlp"
            )
        _, height, width = input_shape
        for filters in (32, 64):
            if height < 3 or width < 3:
                raise ValueError(f"seed-cnn: a {height}x{width} feature map is too small for a 3x3 valid convolution")
            layers.append(
                keras.layers.Conv2D(
                    filters, (3, 3), activation=keras_activation(activation), data_format="channels_last", **weights()
                )
            )
            height, width = height - 2, width - 2
            if height >= 2 and width >= 2:
                layers.append(keras.layers.MaxPool2D(data_format="channels_last"))
                height, width = height // 2, width // 2
        layers += [keras.layers.Flatten(data_format="channels_last"), keras.layers.Dense(num_classes, **weights())]
    else:
        layers.append(keras.layers.Flatten())
        for width in spec.hidden:
            layers.append(keras.layers.Dense(width, activation=keras_activation(activation), **weights()))
        layers.append(keras.layers.Dense(num_classes, **weights()))
    return keras.Sequential(layers)


def count_parameters(model: keras.Model) -> int:
    """The number of trainable scalars (summed over the model's trainable weights)."""
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def _keras_initialize(model: Any, scheme: str, seed: int) -> None:
    """Every kernel re-drawn like the built-in Keras models' (layer k: ``initializer(scheme, seed, k)``), biases zero."""

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
    keras.utils.set_random_seed(derive_seed(seed, STREAM_INIT, 2) % 2**32)
    if factory.swap is None:
        hint = (
            " (with --framework keras the factory gets the Keras activation, used as Dense(units, activation=activation), "
            "not a zero-argument factory: a PyTorch model runs with --framework torch)"
        )
        given = keras_activation(activation)
        used: list[int] = []
        passed = given if isinstance(given, keras.layers.Layer) else _recording(given, used)
        model = call_factory(factory, (passed, tuple(input_shape), num_classes), {}, hint)
    else:
        model = call_factory(factory, (), factory.swap_kwargs(num_classes, tuple(input_shape)))
    from spocu.keras.replace import replace_activations

    def replace(model: Any, kinds: str, make: Any) -> Any:
        return replace_activations(model, list(factory.swap_kinds), make)

    model = checked_and_swapped(factory, model, keras.Model, "keras.Model", replace,
                                 lambda: keras_activation(activation), (ValueError, TypeError))  # fmt: skip
    used_before_forward = len(used) if factory.swap is None else 0
    try:
        output = model(np.zeros((2, *input_shape), dtype=np.float32), training=False)
    except Exception as error:
        raise UserModelError(
            f"--model {factory.name}: a batch of shape {(2, *input_shape)} does not go through the model: {type(error).__name__}: {error}"
        ) from None
    if init is not None:
        _keras_initialize(model, init, seed)
    check_output(factory, output, num_classes, "Keras")
    check_trainable(factory, sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    # a layer activation (SPOCU) is built when it is first called; a function one records its calls
    if factory.swap is None and not (given.built if isinstance(given, keras.layers.Layer) else used):
        raise UserModelError(
            f"--model {factory.name}: never used the activation it was given, so the compared activations would all "
            "train the same network; pass it as Dense(units, activation=activation) (or use --swap NAME for a model "
            "with its own activation)"
        )
    if factory.swap is None:
        _check_keras_activation_used(factory, model, passed, used_during_forward=len(used) > used_before_forward)
    else:
        _record_keras_swap(factory, model)
    return model


#: Activations that also serve as output or gate functions: never counted as "another activation kind".
_NOT_HIDDEN_ACTIVATIONS = {"softmax", "log_softmax", "sigmoid", "tanh", "linear"}


def _check_keras_activation_used(factory: ModelFactory, model: Any, passed: Any, used_during_forward: bool) -> None:
    """The activation the factory was given is in the model (held by a layer, or run by its forward), and no other kind is."""
    from spocu.keras.replace import _activation_name, _kind_of_layer

    layers = list(model._flatten_layers(include_self=False, recursive=True))
    held = any(layer is passed or getattr(layer, "activation", None) is passed for layer in layers)
    name = f"--model {factory.name}"
    if not held and not used_during_forward:
        raise UserModelError(
            f"{name}: the activation it was given is called but not part of the model (its result is thrown away), so "
            "the compared arms would train the same network; pass it as Dense(units, activation=activation)"
        )
    own = {None, _activation_name(passed)} | _NOT_HIDDEN_ACTIVATIONS
    others: dict[str, list[str]] = {}
    for layer in layers:
        if layer is passed or getattr(layer, "activation", None) is passed:
            continue
        kind = _kind_of_layer(layer)
        if kind not in own:
            others.setdefault(kind, []).append(layer.name)
    if others:
        listed = ", ".join(
            f"{len(v)} {k} ({', '.join(v[:3])}{' ...' if len(v) > 3 else ''})" for k, v in sorted(others.items())
        )
        raise UserModelError(
            f"{name}: runs other activations beside the one it was given: {listed}; every compared arm would keep "
            "them: use the given activation there too (or --swap NAME to swap a hard-wired kind)"
        )


def _record_keras_swap(factory: ModelFactory, model: Any) -> None:
    """What --swap replaced, for the protocol and report ("3 of 3 relu (3 layers)")."""
    from spocu.keras.replace import activation_kinds

    replaced = len(getattr(model, "spocu_replaced", ()))
    kinds = set(factory.swap_kinds)
    left = sum(n for kind, n in activation_kinds(model).items() if kind in kinds)
    summary = f"{replaced} of {replaced + left} {'/'.join(factory.swap_kinds)} ({replaced} layers)"
    object.__setattr__(model, "spocu_swap", {"summary": summary, "left": left})


def _recording(function: Any, calls: list[int]) -> Any:
    """``function`` that appends to ``calls`` each time it runs (a Keras activation a factory may ignore)."""

    @wraps(function)
    def activation(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return function(*args, **kwargs)

    return activation
