"""The Triton kernels behind :mod:`spocu.torch._triton`.

Triton decides at decoration time whether a kernel runs compiled (CUDA) or in
its CPU interpreter (``TRITON_INTERPRET=1``); :func:`spocu.torch._triton._kernels`
reloads this module when that setting has changed since it was imported.
Without ``triton`` installed this module defines nothing (and imports fine).
"""
# ruff: noqa: N803 -- Triton's constexpr arguments are upper case by convention

import os

try:
    import triton
    import triton.language as tl
except ImportError:  # the package works without triton; _triton reports why it cannot run
    triton = None

__all__ = ["INTERPRETED", "spocu_forward_kernel", "spocu_backward_kernel", "triton"]

#: whether these kernels were defined for Triton's CPU interpreter
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"

if triton is not None:

    @triton.jit
    def _offsets(offs, s1, s2, s3, t0, t1, t2, t3, STRIDED: tl.constexpr):
        if STRIDED:
            i3 = offs % s3
            rest = offs // s3
            i2 = rest % s2
            rest = rest // s2
            i1 = rest % s1
            i0 = rest // s1
            return i0 * t0 + i1 * t1 + i2 * t2 + i3 * t3
        return offs

    @triton.jit
    def _to_output(v, out_ty: tl.constexpr):
        """Round to the output dtype to nearest-even (as PyTorch does).

        bfloat16 is rounded by hand from the float32 bits (c10::BFloat16's formula):
        the GPU's own conversion also rounds to nearest-even, but Triton's CPU
        interpreter truncates, and the kernels must give the same bits on both.
        """
        if out_ty == tl.bfloat16:
            bits = v.to(tl.float32).to(tl.uint32, bitcast=True)
            rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
            rounded = tl.where(v != v, 0x7FC0, rounded)  # NaN stays a (quiet) NaN
            return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)
        return v.to(out_ty)

    @triton.jit
    def _horner(x, table_ptr, FIRST: tl.constexpr, COUNT: tl.constexpr):
        acc = x * tl.load(table_ptr + FIRST + COUNT - 1) + tl.load(table_ptr + FIRST + COUNT - 2)
        for j in tl.static_range(COUNT - 3, -1, -1):
            acc = acc * x + tl.load(table_ptr + FIRST + j)
        return acc

    @triton.jit
    def spocu_forward_kernel(
        x_ptr, y_ptr, table_ptr, n,
        s1, s2, s3, xt0, xt1, xt2, xt3,
        STRIDED: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + _offsets(offs, s1, s2, s3, xt0, xt1, xt2, xt3, STRIDED), mask=mask, other=0.0)
        lo = tl.load(table_ptr)
        hi = tl.load(table_ptr + 1)
        w = x.to(table_ptr.dtype.element_ty)
        xc = tl.where(w < lo, lo, tl.where(w > hi, hi, w))  # NaN stays NaN
        y = _horner(xc, table_ptr, 2, 8) * xc
        tl.store(y_ptr + offs, _to_output(y, y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def spocu_backward_kernel(
        g_ptr, x_ptr, out_ptr, table_ptr, n,
        s1, s2, s3, xt0, xt1, xt2, xt3, gt0, gt1, gt2, gt3,
        X_STRIDED: tl.constexpr, G_STRIDED: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + _offsets(offs, s1, s2, s3, xt0, xt1, xt2, xt3, X_STRIDED), mask=mask, other=0.0)
        g = tl.load(g_ptr + _offsets(offs, s1, s2, s3, gt0, gt1, gt2, gt3, G_STRIDED), mask=mask, other=0.0)
        lo = tl.load(table_ptr)
        hi = tl.load(table_ptr + 1)
        cap = tl.load(table_ptr + 2)
        w = x.to(table_ptr.dtype.element_ty)
        xc = tl.where(w < lo, lo, tl.where(w > cap, cap, w))
        ds = _horner(xc, table_ptr, 3, 8)
        ds = tl.where((w <= lo) | (w >= hi), 0.0, ds)
        out = ds * g.to(table_ptr.dtype.element_ty)
        tl.store(out_ptr + offs, _to_output(out, out_ptr.dtype.element_ty), mask=mask)
