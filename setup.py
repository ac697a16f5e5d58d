"""Builds SPOCU's CPU kernels (src/spocu/torch/_cpp_kernels.cpp) into ``spocu.torch._kernels``.

Everything else about the package is in pyproject.toml. The extension is optional: without a
working C++ compiler the install succeeds, setuptools prints why the kernels were not built, and
spocu.torch computes with plain PyTorch ops (correct, several times slower), saying so once with
a RuntimeWarning on first use.

The library holds no Python API: it is an (empty) extension module only so that setuptools,
wheels and cibuildwheel name, tag and install it as one; spocu.torch._cpp finds it with
``importlib.util.find_spec`` and calls its C functions through ctypes. Next to it the build writes
``<library>.sha256`` (its SHA-256), which spocu.torch._cpp checks before loading: a truncated or
damaged file is refused with one warning instead of crashing the process.
"""

from __future__ import annotations

import hashlib
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, LinkError

#: compiler flags, best first: a compiler that rejects one set (no OpenMP: Apple clang) gets the next
FLAG_SETS = (("-O3", "-fopenmp"), ("-O3",))
#: FP exceptions are never read (lets branches become selects); -Wno-psabi: the AVX-512 copies pass
#: vectors by value between their own inline functions only
COMMON_FLAGS = ("-g0", "-std=c++17", "-fvisibility=hidden", "-fno-strict-aliasing", "-fno-trapping-math", "-Wno-psabi")
HASH_SUFFIX = ".sha256"


def record_hash(library: str) -> None:
    """Write ``library``'s SHA-256 next to it (what spocu.torch._cpp verifies before loading it)."""
    with open(library, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(library + HASH_SUFFIX, "w", encoding="ascii") as f:
        f.write(digest + "\n")


class BuildKernels(build_ext):
    """build_ext that tries :data:`FLAG_SETS` in turn and records each library's hash."""

    def build_extension(self, ext: Extension) -> None:
        if self.compiler.compiler_type == "msvc":  # the source uses GCC/Clang attributes and _Float16
            raise CompileError("the SPOCU kernels need GCC or Clang (MSVC is not supported)")
        errors = []
        for flags in FLAG_SETS:
            ext.extra_compile_args = [*flags, *COMMON_FLAGS]
            ext.extra_link_args = [f for f in flags if f == "-fopenmp"]
            try:
                super().build_extension(ext)
            except (CCompilerError, CompileError, LinkError) as exc:
                errors.append(f"{' '.join(flags)}: {exc}")
                continue
            record_hash(self.get_ext_fullpath(ext.name))
            return
        raise CompileError("; ".join(errors))

    def _hash_files(self, files):
        return [f + HASH_SUFFIX for f in files if f.endswith(tuple(_suffixes()))]

    def copy_extensions_to_source(self) -> None:  # editable installs, build_ext --inplace
        super().copy_extensions_to_source()
        for regular, inplace in self._pairs():
            if os.path.exists(regular + HASH_SUFFIX):
                self.copy_file(regular + HASH_SUFFIX, inplace + HASH_SUFFIX, level=self.verbose)

    def _pairs(self):
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            inplace, regular = self._get_inplace_equivalent(build_py, ext)
            yield regular, inplace

    def get_outputs(self) -> list[str]:
        outputs = super().get_outputs()
        return outputs + self._hash_files(outputs)

    def get_output_mapping(self) -> dict[str, str]:
        mapping = super().get_output_mapping()
        mapping.update(
            {k + HASH_SUFFIX: v + HASH_SUFFIX for k, v in list(mapping.items()) if k.endswith(tuple(_suffixes()))}
        )
        return mapping


def _suffixes() -> list[str]:
    from importlib.machinery import EXTENSION_SUFFIXES

    return [*EXTENSION_SUFFIXES, ".abi3.so", ".pyd"]


kernels = Extension(
    "spocu.torch._kernels",
    sources=["src/spocu/torch/_cpp_kernels.cpp"],
    depends=["src/spocu/torch/_cpp_kernels_body.h"],
    define_macros=[("SPOCU_PYTHON_MODULE", "1"), ("Py_LIMITED_API", "0x030A0000")],
    py_limited_api=True,  # one wheel per platform serves every CPython >= 3.10
    language="c++",
    optional=True,  # no compiler: plain PyTorch ops, never a failed install
)

setup(
    ext_modules=[kernels] if os.environ.get("SPOCU_NO_KERNELS") != "1" else [],
    cmdclass={"build_ext": BuildKernels},
    options={"bdist_wheel": {"py_limited_api": "cp310"}} if sys.implementation.name == "cpython" else {},
)
