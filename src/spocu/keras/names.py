r"""Opt-in string names for Keras: ``activation="spocu"`` and ``activation="spocu_c1"``.

.. math::

    \text{"spocu"}:\ s(x) = \alpha\,h(x/\gamma + \beta) - \alpha\,h(\beta)\ (\text{defaults},\ c = \infty),\qquad
    \text{"spocu\_c1"}:\ \text{the same with } c = 1\ (\text{bounded, monotone}).

Keras 3 resolves an activation string only through its own table of built-ins
(``keras.src.activations.ALL_OBJECTS_DICT``); ``custom_object_scope`` does not
reach ``keras.activations.get``. :func:`register_activation_name` adds the two
names to that table. **The table is private Keras API and may change between
Keras versions**; the function refuses with a clear error where it is missing,
and the test suite pins the behaviour on the installed Keras.

A model built from the strings saves the functions under their registered names
(``"spocu>spocu"``, ``"spocu>spocu_c1"``), so ``keras.models.load_model`` needs
only ``import spocu.keras`` in the loading process; a config written by hand with
the plain strings needs :func:`register_activation_name` there too.

Examples:
    >>> import keras, spocu.keras
    >>> spocu.keras.register_activation_name()
    >>> keras.activations.get("spocu_c1") is spocu.keras.spocu_c1
    True
    >>> keras.layers.Dense(4, activation="spocu").activation is spocu.keras.spocu
    True
"""

from __future__ import annotations

from typing import Any

import keras

from spocu.keras.functional import spocu

__all__ = ["register_activation_name", "spocu_c1", "ACTIVATION_NAMES"]


@keras.saving.register_keras_serializable(package="spocu")
def spocu_c1(x: Any) -> Any:
    r"""SPOCU with the default alpha, beta, gamma and ``c = 1``: bounded and monotone.

    .. math:: s(x) = \alpha\,h(x/\gamma + \beta) - \alpha\,h(\beta),\quad h(u) = r(\min(u, 1))\ (u \ge 0)

    Examples:
        >>> import numpy as np, keras
        >>> [round(float(v), 4) for v in keras.ops.convert_to_numpy(spocu_c1(np.array([-5.0, 0.0, 5.0])))]
        [-1.5838, 0.0, 1.5099]
    """
    return spocu(x, c=1.0)


#: The names :func:`register_activation_name` adds, and the functions they resolve to.
ACTIVATION_NAMES = {"spocu": spocu, "spocu_c1": spocu_c1}


def _activation_table() -> dict[str, Any]:
    from keras.src import activations as keras_activations  # private: see the module docstring

    table = getattr(keras_activations, "ALL_OBJECTS_DICT", None)
    if not isinstance(table, dict):
        raise RuntimeError(
            f"spocu.keras.register_activation_name: Keras {keras.__version__} has no activation table "
            "keras.src.activations.ALL_OBJECTS_DICT (private API that changed); pass the function instead, "
            "activation=spocu.keras.spocu or activation=spocu.keras.SPOCU(c=1.0)"
        )
    return table


def register_activation_name() -> None:
    """Make ``activation="spocu"`` and ``activation="spocu_c1"`` resolve in Keras (opt-in, idempotent).

    Writes into Keras's private table of activation names (unstable across Keras
    versions; see the module docstring). After it, ``keras.activations.get("spocu")``
    is :func:`spocu.keras.spocu` and ``"spocu_c1"`` is :func:`spocu.keras.spocu_c1`,
    in layer arguments and in configs loaded by ``keras.models.model_from_json``.

    Raises:
        RuntimeError: the installed Keras has no such table, or one of the names
            is already taken by another activation (nothing is overwritten).

    Examples:
        >>> import keras, spocu.keras
        >>> spocu.keras.register_activation_name()
        >>> keras.activations.get("spocu") is spocu.keras.spocu
        True
    """
    table = _activation_table()
    for name, fn in ACTIVATION_NAMES.items():
        taken = table.get(name)
        if taken is not None and taken is not fn:
            raise RuntimeError(
                f"spocu.keras.register_activation_name: Keras's activation name {name!r} is already taken by "
                f"{taken!r}; not overwriting it"
            )
    table.update(ACTIVATION_NAMES)
