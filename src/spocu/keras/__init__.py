"""SPOCU for Keras 3 (TensorFlow, JAX and torch backends): :func:`spocu` and :class:`SPOCU`.

Importing this module registers both with Keras's serialization, so models that
use them load back with ``keras.models.load_model``. The opt-in
:func:`register_activation_name` makes the strings ``activation="spocu"`` and
``"spocu_c1"`` (c = 1) work too (it uses Keras's private table, see
:mod:`spocu.keras.names`).

Example:
    >>> import keras
    >>> import spocu.keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation=spocu.keras.spocu),
    ...                           spocu.keras.SPOCU(c=1.0), keras.layers.Dense(1)])
    >>> model.count_params()
    49
"""

from spocu.keras.functional import spocu
from spocu.keras.layers import SPOCU
from spocu.keras.names import register_activation_name, spocu_c1
from spocu.keras.replace import replace_activations  # noqa: F401  (public: spocu.keras.replace_activations)

__all__ = ["spocu", "spocu_c1", "SPOCU", "register_activation_name"]

# registers the old-API layer (spocu.spocu_tensorflow.SPOCU) so saved models that use it load
from spocu import spocu_tensorflow as _spocu_tensorflow  # noqa: E402,F401  isort: skip
