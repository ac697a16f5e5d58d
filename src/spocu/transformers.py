r"""SPOCU in Hugging Face transformers: ``hidden_act="spocu"``.

Importing this module (or calling :func:`register`) adds two names to
``transformers.activations.ACT2FN``, the table every architecture builds its activations from:

- ``"spocu"``: :class:`spocu.torch.SPOCU` with the defaults (α = 3.0937, β = 0.6653, γ = 4.437, c = ∞);
- ``"spocu_c1"``: the same with c = 1 (bounded and monotone).

.. math::

    s(x) = \alpha\,h(x/\gamma + \beta) - \alpha\,h(\beta),\quad h(u) = 0\ (u < 0),\ r(u)\ (0 \le u < c),\ r(c)\ (u \ge c),
    \quad r(u) = u^3(u^5 - 2u^4 + 2)

So ``BertConfig(hidden_act="spocu")`` builds a SPOCU BERT, ``save_pretrained`` writes the name
into ``config.json``, and ``from_pretrained`` in another process rebuilds it after
``import spocu.transformers``.

:func:`spocu.torch.replace_activations` on a transformers model keeps the swap through
``save_pretrained``/``from_pretrained`` where the config can say it: when every module the
config's activation field (``hidden_act``, ``activation_function``, ``hidden_activation``)
builds was replaced by a registered SPOCU, and nothing else was, the field is set to
``"spocu"``/``"spocu_c1"``. Otherwise (a learnable SPOCU, other parameters, functional call sites,
modules the config does not build) ``save_pretrained`` raises, saying why: from_pretrained would
silently rebuild the old activation.

Example:
    >>> import spocu.transformers  # registers "spocu" and "spocu_c1"
    >>> from transformers.activations import ACT2FN
    >>> ACT2FN["spocu_c1"]
    SPOCU(alpha=3.0937, beta=0.6653, gamma=4.437, c=1.0)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_GAMMA
from spocu.torch.modules import SPOCU

__all__ = ["ACTIVATION_FIELDS", "NAMES", "register"]

#: The registered names and the SPOCU keyword arguments each stands for.
NAMES: dict[str, dict[str, float]] = {"spocu": {}, "spocu_c1": {"c": 1.0}}

#: Config fields that name an architecture's activation (BERT/LLaMA, GPT-2, Gemma).
ACTIVATION_FIELDS = ("hidden_act", "activation_function", "hidden_activation")


def register() -> None:
    """Add ``"spocu"`` and ``"spocu_c1"`` to ``transformers.activations.ACT2FN`` (idempotent).

    Raises:
        ValueError: one of the names is already taken by another activation.
    """
    from transformers.activations import ACT2FN

    for name, kwargs in NAMES.items():
        entry = (SPOCU, kwargs) if kwargs else SPOCU
        present = dict.get(ACT2FN, name)  # the raw entry: ACT2FN[name] would build an instance
        if present is not None and present != entry:
            raise ValueError(
                f"spocu.transformers.register: ACT2FN[{name!r}] is already {present!r}; not overwriting it"
            )
        ACT2FN[name] = entry


def _name_of(module: nn.Module) -> str | None:
    """The ACT2FN name that builds exactly ``module`` (a fixed SPOCU with default α, β, γ), or None."""
    if type(module) is not SPOCU or module.learnable:
        return None
    if (float(module.alpha), float(module.beta), float(module.gamma)) != (
        DEFAULT_ALPHA,
        DEFAULT_BETA,
        DEFAULT_GAMMA,
    ):
        return None
    c = float(module.c)
    return "spocu" if math.isinf(c) else "spocu_c1" if c == 1.0 else None


class _RefuseSave:
    """Stands in for ``save_pretrained`` on a swapped model whose config cannot rebuild the swap."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            f"save_pretrained: this model's activations were swapped by replace_activations, and {self.reason}, so "
            "from_pretrained would silently rebuild the old activation. Build the model with the activation in its "
            'config instead (import spocu.transformers; hidden_act="spocu" or "spocu_c1"), or save the whole '
            "model with torch.save(model)"
        )


def _fresh(model: nn.Module, config: Any) -> nn.Module:
    """The architecture built from ``config`` on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        return type(model)(config)


def after_swap(model: nn.Module, replaced: dict[str, str], call_sites: dict[str, list[str]]) -> None:
    """Make a swapped transformers model save what it runs: update its config, or make save_pretrained refuse.

    Called by :func:`spocu.torch.replace_activations` on a model with a transformers ``config``.
    """
    register()
    pretrained: Any = model  # a transformers PreTrainedModel (transformers is not type-checked here)
    config = pretrained.config
    fields = [f for f in ACTIVATION_FIELDS if isinstance(getattr(config, f, None), str)]
    names = {_name_of(model.get_submodule(path)) for path in replaced}
    reason = None
    if call_sites:
        reason = "functional activation calls were swapped, which no config field describes"
    elif not fields:
        reason = f"{type(config).__name__} has no activation field ({', '.join(ACTIVATION_FIELDS)})"
    elif None in names or len(names) != 1:
        reason = (
            'the replacement is not one registered name ("spocu": the defaults, or "spocu_c1": c = 1, not learnable)'
        )
    if reason is None:
        name = names.pop()
        before = {f: getattr(config, f) for f in fields}
        candidate = type(config).from_dict({**config.to_dict(), **{f: name for f in fields}})
        try:
            rebuilt = _fresh(model, candidate)
        except Exception as error:  # noqa: BLE001 - any failure to rebuild: refuse at save time, saying it
            reason = f"rebuilding {type(model).__name__} from its config to check it failed ({type(error).__name__}: {error})"
        else:
            expected = {path: (type(m).__name__, m.extra_repr()) for path, m in model.named_modules()}
            got = {path: (type(m).__name__, m.extra_repr()) for path, m in rebuilt.named_modules()}
            if expected != got:
                wrong = sorted(p for p in expected.keys() | got.keys() if expected.get(p) != got.get(p))
                reason = (
                    f"setting {'/'.join(fields)} to {name!r} (was {before}) would build other modules at "
                    f"{', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''}"
                )
            else:
                for f in fields:
                    setattr(config, f, name)
                model.__dict__.pop("save_pretrained", None)
                return
    pretrained.save_pretrained = _RefuseSave(reason)


register()
