"""``spocu bench``: how much SPOCU costs next to ReLU, measured side by side.

Sections (``--sections``, default all):

* ``elementwise`` -- forward and forward+backward of SPOCU (default path, plain
  ops, the textbook composition of torch ops), ReLU, GELU and the old ``spocu``
  0.0.1 module (forward only: it has no backward) at 1e4, 1e6 and 1.6e7
  elements in float32 and bfloat16; milliseconds per call, the ratio to ReLU
  and the bytes kept for backward per input byte.
* ``cnn`` -- the seed's CIFAR-10 CNN (batch 100): ms per training step with SPOCU
  and with ReLU, PyTorch eager and ``torch.compile``.
* ``keras`` -- the same CNN in Keras 3 (a subprocess per backend, default
  TensorFlow), with ``spocu.keras``, ReLU and the old 0.0.1 Keras layer.
* ``latency`` -- first call of the fused path in a fresh process: with an empty
  (cold) and a populated (warm) Inductor on-disk cache.

Every timing is the median over rounds after warm-up; in each round the
candidates run once each in a shuffled order (interleaved), so that a busy
machine slows all of them alike. Ratios are what to compare across machines.
The old ``spocu`` 0.0.1 is fetched with ``pip download spocu==0.0.1`` (it shares
our import name, so its files are loaded from the wheel under another name);
``--old-wheel`` points at a wheel you already have, ``--no-old`` skips it.

Example (a quick run of one section)::

    spocu bench --quick --sections elementwise
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HELP = "benchmark SPOCU against ReLU/GELU: elementwise, the seed's CNN (PyTorch, Keras), first-call latency"

SECTIONS = ("elementwise", "cnn", "keras", "latency")
OLD_VERSION = "0.0.1"


def _csv(kind: type) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [kind(float(v)) if kind is int else kind(v) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from exc

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="fewer rounds and no optional variants (about a minute)")
    parser.add_argument(
        "--sections", type=_csv(str), default=list(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument("--sizes", type=_csv(int), default=None, help="elementwise sizes (default 1e4,1e6,1.6e7)")
    parser.add_argument("--dtypes", type=_csv(str), default=["float32", "bfloat16"], help="elementwise dtypes")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per measurement (default 9; quick 5)")
    parser.add_argument("--device", default="cpu", help="torch device for the PyTorch sections (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--keras-backends", type=_csv(str), default=["tensorflow"], help="Keras backends to run")
    parser.add_argument("--old-wheel", default=None, help=f"path to a spocu-{OLD_VERSION} wheel (default: pip download)")
    parser.add_argument("--no-old", action="store_true", help=f"skip the old spocu {OLD_VERSION} rows")
    parser.add_argument("--json", default=None, help="also write all results to this JSON file")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for the README)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for inputs and round order")


# --------------------------------------------------------------------------- helpers


def machine_info() -> dict[str, Any]:
    """A description of where the numbers came from."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = round(os.getloadavg()[0], 2)
    return info


def interleaved_medians(
    candidates: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    warmup: int = 2,
    inner: int = 1,
    sync: Callable[[], None] = lambda: None,
    seed: int = 0,
) -> dict[str, float]:
    """Median seconds per call of each candidate; each round runs all candidates in a shuffled order."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    sync()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    order = list(candidates)
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            fn = candidates[name]
            sync()
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            sync()
            samples[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(values) for name, values in samples.items()}


def saved_bytes_ratio(fn: Callable, x) -> float:
    """Bytes the autograd graph of ``fn(x)`` keeps for backward, per byte of ``x`` (unique storages)."""
    import torch

    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(storages.values()) / (x.numel() * x.element_size())


def _wheel_path(explicit: str | None) -> tuple[Path | None, str]:
    """The old spocu wheel: the given path, or one fetched with ``pip download`` (cached)."""
    if explicit:
        path = Path(explicit)
        return (path, "") if path.is_file() else (None, f"--old-wheel {explicit} does not exist")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spocu" / "bench"
    found = sorted(cache.glob(f"spocu-{OLD_VERSION}-*.whl"))
    if found:
        return found[0], ""
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", f"spocu=={OLD_VERSION}", "--no-deps", "-q", "-d", str(cache)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"pip download spocu=={OLD_VERSION} failed ({type(exc).__name__})"
    found = sorted(cache.glob(f"spocu-{OLD_VERSION}-*.whl"))
    return (found[0], "") if found else (None, f"pip download gave no spocu-{OLD_VERSION} wheel")


def load_old_module(member: str, wheel: str | None) -> tuple[Any, str]:
    """Load ``spocu/<member>.py`` of spocu 0.0.1 from its wheel as module ``spocu_old_<member>``.

    Returns (module or None, note saying why not).
    """
    import importlib.util
    import zipfile

    path, note = _wheel_path(wheel)
    if path is None:
        return None, note
    try:
        with zipfile.ZipFile(path) as archive:
            source = archive.read(f"spocu/{member}.py").decode()
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        return None, f"cannot read spocu/{member}.py from {path.name} ({type(exc).__name__})"
    name = f"spocu_old_{member}"
    target = Path(tempfile.mkdtemp(prefix="spocu-old-")) / f"{name}.py"
    target.write_text(source)
    spec = importlib.util.spec_from_file_location(name, target)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 -- any failure of foreign code means "skip it"
        return None, f"spocu {OLD_VERSION} {member} does not import here ({type(exc).__name__}: {exc})"
    return module, ""


# --------------------------------------------------------------------------- elementwise


def textbook_spocu(x, alpha=3.0937, beta=0.6653, gamma=4.437):
    """SPOCU as plain composed torch ops (what one writes from the paper); autograd keeps the intermediates."""
    import torch

    def h(u):
        return torch.where(u < 0, torch.zeros_like(u), u**3 * (u**5 - 2 * u**4 + 2))

    hb = beta**3 * (beta**5 - 2 * beta**4 + 2)
    return alpha * h(x / gamma + beta) - alpha * hb


def run_elementwise(args: argparse.Namespace, notes: list[str]) -> list[dict[str, Any]]:
    import torch
    import torch.nn.functional as F  # noqa: N812

    from spocu.torch import spocu

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    old = None
    if not args.no_old:
        old_module, note = load_old_module("spocu_pytorch", args.old_wheel)
        if old_module is None:
            notes.append(f"old spocu {OLD_VERSION}: skipped: {note}")
        else:
            old = old_module.SPOCU(3.0937, 0.6653, 4.437)
    candidates = {
        "SPOCU (default path)": lambda t: spocu(t),
        "SPOCU (plain ops)": lambda t: spocu(t, backend="eager"),
        "SPOCU (composed torch ops)": textbook_spocu,
        "ReLU": torch.relu,
        "GELU": F.gelu,
    }
    rows = []
    gen = torch.Generator().manual_seed(args.seed)
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for n in args.sizes:
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

            fwd = {name: forward(fn) for name, fn in candidates.items()}
            fb = {name: forward_backward(fn) for name, fn in candidates.items()}
            old_note = ""
            if old is not None:
                if device.type != "cpu" or dtype not in (torch.float32, torch.float64):
                    old_note = "no: NumPy inside, CPU float32/64 only"
                else:
                    fwd[f"spocu {OLD_VERSION} (old module)"] = forward(old)
            # enough calls per sample that a sample lasts a few ms (timer resolution, small sizes)
            forward_backward(torch.relu)()
            start = time.perf_counter()
            forward_backward(torch.relu)()
            inner = max(1, min(200, round(0.004 / max(time.perf_counter() - start, 1e-7))))
            t_fwd = interleaved_medians(fwd, rounds=args.rounds, inner=inner, sync=sync, seed=args.seed)
            t_fb = interleaved_medians(fb, rounds=args.rounds, inner=inner, sync=sync, seed=args.seed + 1)
            for name in [*candidates, *(k for k in fwd if k not in candidates)]:
                row = {
                    "section": "elementwise",
                    "dtype": dtype_name,
                    "numel": n,
                    "name": name,
                    "forward_ms": t_fwd[name] * 1e3,
                    "forward_ratio": t_fwd[name] / t_fwd["ReLU"],
                    "fwd_bwd_ms": t_fb[name] * 1e3 if name in t_fb else None,
                    "fwd_bwd_ratio": t_fb[name] / t_fb["ReLU"] if name in t_fb else None,
                    "saved_per_input_byte": saved_bytes_ratio(candidates[name], x) if name in candidates else None,
                    "note": "forward only: no backward" if name not in candidates else "",
                }
                rows.append(row)
            if old_note:
                rows.append({"section": "elementwise", "dtype": dtype_name, "numel": n,
                             "name": f"spocu {OLD_VERSION} (old module)", "note": old_note})  # fmt: skip
    return rows


# --------------------------------------------------------------------------- the seed's CNN in PyTorch


def seed_cnn_torch(activation: Callable[[int], Any]):
    """The blog post's CIFAR-10 CNN: conv32-act-pool-conv64-act-pool-dense10 (softmax in the loss).

    ``activation(channels)`` makes each activation module.
    """
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 32, 3), activation(32), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), activation(64), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2304, 10),
    )  # fmt: skip


def run_cnn_torch(args: argparse.Namespace, notes: list[str]) -> list[dict[str, Any]]:
    import torch
    from torch import nn

    from spocu.torch import SPOCU

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.rand(100, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (100,), generator=gen).to(device)

    def stepper(activation, compiled: bool):
        torch.manual_seed(args.seed)
        model = seed_cnn_torch(activation).to(device)
        opt = torch.optim.Adam(model.parameters())
        forward = torch.compile(model) if compiled else model

        def step():
            loss = nn.functional.cross_entropy(forward(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    variants = {
        ("eager", "ReLU"): (lambda ch: nn.ReLU(), False),
        ("eager", "SPOCU (default path)"): (lambda ch: SPOCU(), False),
        ("compiled", "ReLU"): (lambda ch: nn.ReLU(), True),
        ("compiled", "SPOCU (default path)"): (lambda ch: SPOCU(), True),
    }
    if not args.quick:
        # GELU: a smooth activation whose output, unlike ReLU's, has no exact zeros (pooling and
        # convolution backward run faster on ReLU's sparse output: that part is not SPOCU's cost)
        variants[("eager", "GELU")] = (lambda ch: nn.GELU(), False)
        variants[("eager", "SPOCU (plain ops)")] = (lambda ch: _forced_module("eager"), False)
        variants[("eager", "SPOCU learnable, per channel")] = (lambda ch: SPOCU(learnable=True, num_parameters=ch), False)
        variants[("compiled", "GELU")] = (lambda ch: nn.GELU(), True)
        variants[("compiled", "SPOCU learnable, per channel")] = (lambda ch: SPOCU(learnable=True, num_parameters=ch), True)
    steps = {f"{mode}|{name}": stepper(act, compiled) for (mode, name), (act, compiled) in variants.items()}
    times = interleaved_medians(steps, rounds=args.rounds, warmup=3, sync=sync, seed=args.seed)
    rows = []
    names = ["ReLU", "GELU", "SPOCU (default path)", "SPOCU (plain ops)", "SPOCU learnable, per channel"]
    for mode, name in sorted(variants, key=lambda v: (v[0] != "eager", names.index(v[1]))):
        t = times[f"{mode}|{name}"]
        rows.append({"section": "cnn", "framework": "PyTorch", "mode": mode, "name": name, "step_ms": t * 1e3,
                     "ratio": t / times[f"{mode}|ReLU"]})  # fmt: skip
    return rows


def _forced_module(backend: str):
    """An nn.Module applying ``spocu(t, backend=backend)``."""
    import torch

    from spocu.torch import spocu

    class Forced(torch.nn.Module):
        def forward(self, t):
            return spocu(t, backend=backend)

    return Forced()


# --------------------------------------------------------------------------- Keras (subprocess per backend)


def keras_worker(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Runs inside a subprocess whose KERAS_BACKEND is set; returns the rows."""
    import numpy as np

    import keras

    backend = keras.backend.backend()
    rng = np.random.default_rng(config["seed"])
    x = rng.random((100, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, size=(100,))
    activations: dict[str, Any] = {"ReLU": "relu"}
    notes = []
    try:
        import spocu.keras

        activations["SPOCU (spocu.keras)"] = spocu.keras.spocu
    except Exception as exc:  # noqa: BLE001 -- report, do not fail the benchmark
        notes.append(f"spocu.keras unavailable: {type(exc).__name__}: {exc}")
    if backend == "tensorflow" and not config["no_old"]:
        old, note = load_old_module("spocu_tensorflow", config["old_wheel"])
        if old is None:
            notes.append(f"old spocu {OLD_VERSION} Keras layer: skipped: {note}")
        else:
            activations[f"spocu {OLD_VERSION} (old Keras layer)"] = old.SPOCU(3.0937, 0.6653, 4.437)
    jit_modes = ["auto"] if config["quick"] else ["auto", False]

    def make(activation, jit):
        keras.utils.set_random_seed(config["seed"])
        model = keras.Sequential([
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, 3, activation=activation), keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation=activation), keras.layers.MaxPooling2D(),
            keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax"),
        ])  # fmt: skip
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit)
        return lambda: model.train_on_batch(x, y)

    steps = {}
    for jit in jit_modes:
        for name, act in activations.items():
            if jit is False and name.startswith("spocu 0"):
                continue
            steps[f"{jit}|{name}"] = make(act, jit)
    times = interleaved_medians(steps, rounds=config["rounds"], warmup=3, seed=config["seed"])
    rows = []
    for key, t in times.items():
        jit, name = key.split("|", 1)
        rows.append({"section": "keras", "framework": f"Keras ({backend})", "mode": f"jit_compile={jit}",
                     "name": name, "step_ms": t * 1e3, "ratio": t / times[f"{jit}|ReLU"]})  # fmt: skip
    rows.extend({"section": "keras", "note": note} for note in notes)
    return rows


def run_keras(args: argparse.Namespace, notes: list[str]) -> list[dict[str, Any]]:
    rows = []
    config = {"seed": args.seed, "rounds": args.rounds, "quick": args.quick, "no_old": args.no_old,
              "old_wheel": args.old_wheel}  # fmt: skip
    for backend in args.keras_backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        code = (
            "import json, sys; from spocu.commands.bench import keras_worker; "
            "print('@@' + json.dumps(keras_worker(json.loads(sys.argv[1]))))"
        )
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(config)], env=env, capture_output=True,
                              text=True, timeout=1800)  # fmt: skip
        payload = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
        if proc.returncode != 0 or not payload:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            notes.append(f"Keras ({backend}): failed: {tail}")
            continue
        for row in json.loads(payload[-1][2:]):
            if "note" in row and "name" not in row:
                notes.append(row["note"])
            else:
                rows.append(row)
    return rows


# --------------------------------------------------------------------------- first-call latency

_LATENCY_CODE = """
import json, time
t0 = time.perf_counter()
import torch
import spocu.torch
t1 = time.perf_counter()
x = torch.randn(1 << 20, requires_grad=True)
t2 = time.perf_counter()
spocu.torch.spocu(x, backend="inductor").sum().backward()
t3 = time.perf_counter()
spocu.torch.spocu(x, backend="inductor").sum().backward()
t4 = time.perf_counter()
print("@@" + json.dumps({"import_s": t1 - t0, "first_call_s": t3 - t2, "second_call_s": t4 - t3,
                         "fused": spocu.torch._inductor.usable()}))
"""


def run_latency(args: argparse.Namespace, notes: list[str]) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="spocu-inductor-cache-") as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        for state in ("cold", "warm"):
            proc = subprocess.run([sys.executable, "-c", _LATENCY_CODE], env=env, capture_output=True, text=True,
                                  timeout=900)  # fmt: skip
            payload = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
            if proc.returncode != 0 or not payload:
                notes.append(f"latency ({state}): failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
                continue
            result = json.loads(payload[-1][2:])
            rows.append({"section": "latency", "cache": state, **result})
    return rows


# --------------------------------------------------------------------------- output


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def tables(rows: list[dict[str, Any]]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, body) for every section present in ``rows``."""
    out = []
    ew = [r for r in rows if r.get("section") == "elementwise"]
    if ew:
        header = ["dtype", "numel", "function", "fwd ms", "fwd / ReLU", "fwd+bwd ms", "fwd+bwd / ReLU",
                  "saved bytes / input byte", "note"]  # fmt: skip
        body = [[r["dtype"], f"{r['numel']:.3g}", r["name"], _fmt(r.get("forward_ms")), _fmt(r.get("forward_ratio"), 2),
                 _fmt(r.get("fwd_bwd_ms")), _fmt(r.get("fwd_bwd_ratio"), 2), _fmt(r.get("saved_per_input_byte"), 2),
                 r.get("note", "")] for r in ew]  # fmt: skip
        out.append(("Elementwise (median per call)", header, body))
    cnn = [r for r in rows if r.get("section") in ("cnn", "keras") and "name" in r]
    if cnn:
        # a mode can slow ReLU itself down (Inductor's CPU max-pool with ReLU, say): also compare with
        # the fastest ReLU of the same framework
        fastest = {}
        for r in cnn:
            if r["name"] == "ReLU":
                fastest[r["framework"]] = min(fastest.get(r["framework"], math.inf), r["step_ms"])
        header = ["framework", "mode", "activation", "ms / step", "/ ReLU (same mode)", "/ fastest ReLU"]
        body = [[r["framework"], r["mode"], r["name"], _fmt(r["step_ms"]), _fmt(r["ratio"], 3),
                 _fmt(r["step_ms"] / fastest[r["framework"]], 3) if r["framework"] in fastest else "-"]
                for r in cnn]  # fmt: skip
        out.append(("Seed CNN, CIFAR-10 shape, batch 100: one training step (median)", header, body))
    lat = [r for r in rows if r.get("section") == "latency"]
    if lat:
        header = ["Inductor cache", "import spocu.torch s", "first fused call s (compile)", "second call s", "fused"]
        body = [[r["cache"], _fmt(r["import_s"]), _fmt(r["first_call_s"]), _fmt(r["second_call_s"]), str(r["fused"])]
                for r in lat]  # fmt: skip
        out.append(("First call of the fused CPU path in a fresh process (1M float32, fwd+bwd)", header, body))
    return out


def markdown(title: str, header: list[str], body: list[list[str]]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def _write_json(path: str, data: dict[str, Any]) -> None:
    from spocu._atomic import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def run(args: argparse.Namespace) -> int:
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.rounds is None:
        args.rounds = 5 if args.quick else 9
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {args.rounds}")
    if args.sizes is None:
        args.sizes = [10_000, 1_000_000, 16_000_000]
    if any(n < 1 for n in args.sizes):
        raise SystemExit(f"--sizes must be positive, got {args.sizes}")

    import torch
    from rich.console import Console
    from rich.table import Table

    bad = [d for d in args.dtypes if not isinstance(getattr(torch, d, None), torch.dtype)]
    if bad:
        raise SystemExit(f"unknown dtype(s) {', '.join(bad)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    console = Console() if sys.stdout.isatty() else Console(width=200)
    info = machine_info() | {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                             "device": args.device}  # fmt: skip
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    console.print(f"[bold]spocu bench[/bold] on {info['cpu']} ({info['cores']} cores, torch {info['torch']}, "
                  f"{info['torch_threads']} threads, device {args.device}); load average {info.get('load_average_at_start')}")  # fmt: skip
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    runners = {"elementwise": run_elementwise, "cnn": run_cnn_torch, "keras": run_keras, "latency": run_latency}
    for section in SECTIONS:
        if section in args.sections:
            start = time.perf_counter()
            with console.status(f"running {section} ..."):
                rows += runners[section](args, notes)
            console.print(f"  {section}: {time.perf_counter() - start:.0f} s")
    if hasattr(os, "getloadavg"):
        info["load_average_at_end"] = round(os.getloadavg()[0], 2)
    for title, header, body in tables(rows):
        if args.markdown:
            console.print(markdown(title, header, body), markup=False, highlight=False, soft_wrap=True)
            console.print()
        else:
            table = Table(title=title)
            for column in header:
                table.add_column(column, overflow="fold")
            for line in body:
                table.add_row(*line)
            console.print(table)
    for note in notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    console.print(f"machine: {json.dumps(info)}", markup=False, highlight=False, soft_wrap=True)
    if args.json:
        _write_json(args.json, {"machine": info, "rows": rows, "notes": notes, "argv": sys.argv[1:]})
    return 0
