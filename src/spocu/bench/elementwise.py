"""The elementwise section: SPOCU against ReLU and GELU on flat tensors.

Forward (under ``no_grad``) and forward+backward of SPOCU on its default path, on plain ops
(``backend="eager"``), as the textbook composition of torch ops, ReLU, GELU and the old
``spocu`` 0.0.1 module (forward only: it has no backward; NumPy inside, so CPU float32/64
only); milliseconds per call, the ratio to ReLU and the bytes kept for backward per input byte.
"""

from __future__ import annotations

from typing import Any

from spocu.bench.config import BenchConfig
from spocu.bench.old import OLD_DEFAULTS, OLD_VERSION, load_old_module
from spocu.bench.timing import calls_per_sample, device_sync, interleaved_medians, saved_bytes_ratio
from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_GAMMA

__all__ = ["textbook_spocu", "candidates", "run"]


def textbook_spocu(x, alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA, gamma: float = DEFAULT_GAMMA):
    r"""SPOCU as plain composed torch ops, :math:`\alpha h(x/\gamma + \beta) - \alpha h(\beta)`
    with :math:`h(u) = u^3(u^5 - 2u^4 + 2)` for u ≥ 0 (what one writes from the paper, c = ∞);
    autograd keeps the intermediates.

    >>> import torch
    >>> round(float(textbook_spocu(torch.tensor(-100.0))), 4)
    -1.5838
    """
    import torch

    def h(u):
        return torch.where(u < 0, torch.zeros_like(u), u**3 * (u**5 - 2 * u**4 + 2))

    hb = beta**3 * (beta**5 - 2 * beta**4 + 2)
    return alpha * h(x / gamma + beta) - alpha * hb


def candidates() -> dict[str, Any]:
    """name -> function of one tensor, for every timed activation with a backward."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    from spocu.torch import spocu

    return {
        "SPOCU (default path)": lambda t: spocu(t),
        "SPOCU (plain ops)": lambda t: spocu(t, backend="eager"),
        "SPOCU (composed torch ops)": textbook_spocu,
        "ReLU": torch.relu,
        "GELU": F.gelu,
    }


def run(config: BenchConfig, notes: list[str]) -> list[dict[str, Any]]:
    """Time every candidate on flat tensors of ``config.sizes`` elements in ``config.dtypes``; one
    row per candidate, dtype and size: forward and forward+backward ms, their ratios to ReLU, the bytes
    kept for backward per input byte. A skipped old module appends a note to ``notes``.
    """
    import torch

    device = torch.device(config.device)
    sync = device_sync(device)
    old = None
    if not config.no_old:
        old_module, note = load_old_module("spocu_pytorch", config.old_wheel)
        if old_module is None:
            notes.append(f"old spocu {OLD_VERSION}: skipped: {note}")
        else:
            old = old_module.SPOCU(*OLD_DEFAULTS)
    fns = candidates()
    rows = []
    gen = torch.Generator().manual_seed(config.seed)
    for dtype_name in config.dtypes:
        dtype = getattr(torch, dtype_name)
        for n in config.sizes:
            x0 = (torch.randn(n, generator=gen) * 3).to(dtype).to(device)
            g = torch.randn(n, generator=gen).to(dtype).to(device)
            x = x0.clone().requires_grad_(True)

            def forward(fn):
                def call():
                    with torch.no_grad():
                        fn(x0)

                return call

            def forward_backward(fn):
                def call():
                    fn(x).backward(g)
                    x.grad = None

                return call

            fwd = {name: forward(fn) for name, fn in fns.items()}
            fb = {name: forward_backward(fn) for name, fn in fns.items()}
            old_note = ""
            if old is not None:
                if device.type != "cpu" or dtype not in (torch.float32, torch.float64):
                    old_note = "no: NumPy inside, CPU float32/64 only"
                else:
                    fwd[f"spocu {OLD_VERSION} (old module)"] = forward(old)
            inner = calls_per_sample(forward_backward(torch.relu), sync=sync)
            t_fwd = interleaved_medians(fwd, rounds=config.rounds, inner=inner, sync=sync, seed=config.seed)
            t_fb = interleaved_medians(fb, rounds=config.rounds, inner=inner, sync=sync, seed=config.seed + 1)
            for name in [*fns, *(k for k in fwd if k not in fns)]:
                rows.append({
                    "section": "elementwise",
                    "dtype": dtype_name,
                    "numel": n,
                    "name": name,
                    "forward_ms": t_fwd[name] * 1e3,
                    "forward_ratio": t_fwd[name] / t_fwd["ReLU"],
                    "fwd_bwd_ms": t_fb[name] * 1e3 if name in t_fb else None,
                    "fwd_bwd_ratio": t_fb[name] / t_fb["ReLU"] if name in t_fb else None,
                    "saved_per_input_byte": saved_bytes_ratio(fns[name], x) if name in fns else None,
                    "note": "forward only: no backward" if name not in fns else "",
                })  # fmt: skip
            if old_note:
                rows.append({"section": "elementwise", "dtype": dtype_name, "numel": n,
                             "name": f"spocu {OLD_VERSION} (old module)", "note": old_note})  # fmt: skip
    return rows
