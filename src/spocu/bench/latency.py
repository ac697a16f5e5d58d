"""The latency section: the first SPOCU call in a fresh process, with a cold and a warm compiler cache.

Each measurement is a new Python process (``python -c``), so nothing is imported or compiled
yet. It times ``import spocu.torch``, then forward+backward of 2^20 float32 elements: torch's own
first call (``torch.relu``, which pays autograd's and the allocator's first-use costs), then the
first and the second SPOCU call of the default path (what every new script, notebook kernel and
test process pays: on CPU the installed C++ kernels are verified, loaded and self-checked in the
first call), and the first call of the fused path (``backend="inductor"`` on CPU, ``"triton"`` on
CUDA). *Cold*: empty ``TORCHINDUCTOR_CACHE_DIR`` and ``TRITON_CACHE_DIR`` (fresh temporary
directories); *warm*: a second process on the caches the cold one filled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from spocu.bench.config import BenchConfig

__all__ = ["run", "measure_first_call", "STATES"]

STATES = ("cold", "warm")

_CODE = r"""
import json, sys, time
device = sys.argv[1]
t0 = time.perf_counter()
import torch
import spocu.torch
t1 = time.perf_counter()
fused = "triton" if device.startswith("cuda") else "inductor"
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
def call(**kw):
    x = torch.randn(1 << 20, device=device, requires_grad=True)
    sync()
    start = time.perf_counter()
    spocu.torch.spocu(x, **kw).sum().backward()
    sync()
    return time.perf_counter() - start
def relu_call():
    x = torch.randn(1 << 20, device=device, requires_grad=True)
    sync()
    start = time.perf_counter()
    torch.relu(x).sum().backward()
    sync()
    return time.perf_counter() - start
out = {"import_s": t1 - t0, "torch_first_call_s": relu_call(), "first_call_s": call(), "second_call_s": call(),
       "fused_backend": fused}
out["kernel_path"] = spocu.torch.kernel_path(torch.float32, device)
try:
    out["fused_first_call_s"] = call(backend=fused)
    out["fused_second_call_s"] = call(backend=fused)
except Exception as exc:
    out["fused_error"] = f"{type(exc).__name__}: {exc}"
try:
    out["fused_usable"] = bool(spocu.torch._inductor.usable()) if fused == "inductor" else True
except Exception:
    out["fused_usable"] = None
print("@@" + json.dumps(out))
"""


def measure_first_call(device: str, cache: str, timeout: float = 900) -> dict[str, Any]:
    """One fresh process timing the first calls with compiler caches under ``cache``."""
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(cache, "inductor"),
               TRITON_CACHE_DIR=os.path.join(cache, "triton"))  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", _CODE, device], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    payload = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
    if proc.returncode != 0 or not payload:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["no output"])[-1])
    return json.loads(payload[-1][2:])


def run(config: BenchConfig, notes: list[str]) -> list[dict[str, Any]]:
    """Time the first SPOCU call in a fresh process, cold then warm compiler cache; one row per
    state (a failed measurement becomes a note in ``notes``).
    """
    rows = []
    with tempfile.TemporaryDirectory(prefix="spocu-compile-cache-") as cache:
        for state in STATES:  # cold first: it fills the cache the warm one reads
            try:
                result = measure_first_call(config.device, cache)
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                notes.append(f"latency ({state}): failed: {exc}")
                continue
            rows.append({"section": "latency", "cache": state, "device": config.device, **result})
    return rows
