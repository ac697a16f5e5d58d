r"""Tables (rich or Markdown) and the JSON file of a benchmark run.

>>> print(markdown("T", ["a", "b"], [["1", "x|y"]]))
**T**
<BLANKLINE>
| a | b |
|---|---|
| 1 | x\|y |
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["tables", "markdown", "write_json", "strict_json", "fmt"]


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table: 3 significant digits, whole numbers from 1000 on, ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _interval(row: dict[str, Any]) -> str:
    low, high = row.get("ratio_ci95") or (None, None)
    if row.get("name") == "ReLU" or low is None or math.isnan(low):
        return "-"
    return f"{fmt(low, 3)}-{fmt(high, 3)}"


def tables(rows: list[dict[str, Any]]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, body) for every section present in ``rows``."""
    out = []
    ew = [r for r in rows if r.get("section") == "elementwise"]
    if ew:
        header = ["dtype", "numel", "function", "fwd ms", "fwd / ReLU", "fwd+bwd ms", "fwd+bwd / ReLU",
                  "saved bytes / input byte", "note"]  # fmt: skip
        body = [[r["dtype"], f"{r['numel']:.3g}", r["name"], fmt(r.get("forward_ms")), fmt(r.get("forward_ratio"), 2),
                 fmt(r.get("fwd_bwd_ms")), fmt(r.get("fwd_bwd_ratio"), 2), fmt(r.get("saved_per_input_byte"), 2),
                 r.get("note", "")] for r in ew]  # fmt: skip
        out.append(("Elementwise (median per call)", header, body))
    cnn = [r for r in rows if r.get("section") in ("cnn", "keras") and "name" in r]
    if cnn:
        # a mode can slow ReLU itself down (Inductor's CPU max-pool with ReLU, say): also compare with
        # the fastest ReLU of the same framework
        fastest: dict[str, float] = {}
        for r in cnn:
            if r["name"] == "ReLU":
                fastest[r["framework"]] = min(fastest.get(r["framework"], math.inf), r["step_ms"])
        header = ["framework", "mode", "activation", "ms / step", "/ ReLU (same mode)", "95% interval",
                  "/ fastest ReLU", "page faults / step"]  # fmt: skip
        body = [[r["framework"], r["mode"], r["name"], fmt(r["step_ms"]), fmt(r["ratio"], 3), _interval(r),
                 fmt(r["step_ms"] / fastest[r["framework"]], 3) if r["framework"] in fastest else "-",
                 fmt(r.get("page_faults_per_step"))]
                for r in cnn]  # fmt: skip
        out.append(
            (
                "Seed CNN, CIFAR-10 shape, batch 100: one training step (median; ratio: median of the "
                "per-round ratios)",
                header,
                body,
            )
        )
    lat = [r for r in rows if r.get("section") == "latency"]
    if lat:
        header = ["compiler cache", "import spocu.torch s", "torch's first call s (relu)", "first call s",
                  "second call s", "kernels", "fused path", "first fused call s", "second fused call s"]  # fmt: skip
        body = [[r["cache"], fmt(r["import_s"]), fmt(r.get("torch_first_call_s")), fmt(r["first_call_s"]),
                 fmt(r["second_call_s"]), r.get("kernel_path", "-"),
                 r.get("fused_backend", "-") + ("" if "fused_error" not in r else f" (failed: {r['fused_error']})"),
                 fmt(r.get("fused_first_call_s")), fmt(r.get("fused_second_call_s"))] for r in lat]  # fmt: skip
        out.append(("First SPOCU call in a fresh process (2^20 float32, fwd+bwd)", header, body))
    return out


def markdown(title: str, header: list[str], body: list[list[str]]) -> str:
    """One table as Markdown (``|`` in cells escaped)."""
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def strict_json(value: Any) -> Any:
    """``value`` with non-finite floats as the strings ``"nan"``, ``"inf"``, ``"-inf"`` (strict JSON has none).

    >>> strict_json({"a": [1.0, float("nan")], "b": float("-inf")})
    {'a': [1.0, 'nan'], 'b': '-inf'}
    """
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def write_json(path: str, data: dict[str, Any]) -> None:
    """``data`` as indented strict JSON, written atomically."""
    from spocu._atomic import atomic_write_text

    atomic_write_text(path, json.dumps(strict_json(data), indent=1, allow_nan=False) + "\n")
