"""Is a tracer or exporter recording this call? The one module that asks.

* :func:`exporting` -- ``torch.export`` or an ONNX exporter: the graph must hold standard ops only;
* :func:`compiling` -- Dynamo (``torch.compile``) is tracing;
* :func:`jit_tracing` -- ``torch.jit.trace`` is recording;
* :func:`untraced` -- none of them records (the common eager call);
* :func:`fx_proxy` -- ``torch.fx.symbolic_trace`` passes a :class:`torch.fx.Proxy`: the call
  becomes one ``call_function`` node (what ``torch.fx.wrap`` would record), so a traced model
  runs spocu's own kernels, with values and gradients equal to eager.

:mod:`spocu.torch._dispatch` decides what each answer means for the kernels.

Example:
    >>> import torch
    >>> exporting(), compiling(), jit_tracing(), fx_proxy(torch.zeros(1)), untraced()
    (False, False, False, False, True)
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.fx

from spocu.torch import _compat

__all__ = ["compiling", "exporting", "fx_call", "fx_proxy", "jit_tracing", "recording", "untraced"]

_Proxy = torch.fx.Proxy


def compiling() -> bool:
    """Dynamo is tracing (``torch.compile``, and ``torch.export``, which runs it)."""
    return torch.compiler.is_compiling()


def exporting() -> bool:
    """``torch.export`` or the ONNX exporter records: the graph must hold standard ops only.

    Under a plain ``torch.compile`` this is False: the TorchScript ONNX exporter does not
    run Dynamo, and the Dynamo ONNX exporter goes through ``torch.export``.
    """
    if _compat.torch_export_running():
        return True
    return not torch.compiler.is_compiling() and _onnx_exporting()


def _onnx_exporting() -> bool:
    if "torch.onnx" not in sys.modules:  # no exporter is loaded, so none is running (saves ~3 us a call)
        return False
    return _compat.onnx_exporting()


def recording() -> bool:
    """Dynamo or an exporter records the call."""
    return torch.compiler.is_compiling() or exporting()


def untraced() -> bool:
    """Nothing records the call: not Dynamo, ``torch.jit.trace``, ``torch.export`` nor ONNX
    (``not (recording() or jit_tracing())``, with Dynamo asked once first: every eager call asks)."""
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing() or exporting())


def jit_tracing() -> bool:
    return torch.jit.is_tracing()


def fx_proxy(*args) -> bool:
    """An argument is a ``torch.fx.Proxy`` (``symbolic_trace`` is recording)."""
    for a in args:
        if isinstance(a, _Proxy):
            return True
    return False


def fx_call(target: Callable, args: tuple, kwargs: dict):
    """Record ``target(*args, **kwargs)`` as one ``call_function`` node of the tracing graph."""
    tracer = next(a for a in (*args, *kwargs.values()) if isinstance(a, _Proxy)).tracer
    return tracer.create_proxy("call_function", target, args, kwargs)
