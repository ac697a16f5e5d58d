"""Readers for the on-disk formats of MNIST and CIFAR-10, safe against hostile files.

- IDX (MNIST, LeCun et al.): a big-endian header ``0x00 0x00 <type> <ndim>``, ``ndim``
  big-endian uint32 sizes, then the data in C order. Labels: magic 2049 (``0x00000801``),
  images: magic 2051 (``0x00000803``); type ``0x08`` is uint8.
- CIFAR-10 python batches: pickled dicts (Python 2 ``cPickle``, protocol 2) with ``data``
  (N x 3072 uint8: 1024 red, 1024 green, 1024 blue values, each row-major) and ``labels``.
  They are read with :class:`RestrictedUnpickler`, which admits only the numpy array
  reconstruction the format needs, so a malicious pickle is refused without running anything.
- ``mnist.npz`` (Keras): ``x_train``, ``y_train``, ``x_test``, ``y_test``, read with
  ``allow_pickle=False``.

Every reader raises :class:`FormatError` naming the file and what is wrong.

Example:
    >>> import io, numpy as np
    >>> raw = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([7, 0, 9])
    >>> read_idx(io.BytesIO(raw), "labels").tolist()
    [7, 0, 9]
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "FormatError",
    "RestrictedUnpickler",
    "read_idx",
    "read_idx_file",
    "read_cifar_batch",
    "read_mnist_npz",
]


class FormatError(ValueError):
    """A data file is truncated, corrupt, or not in the expected format."""


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(stream: IO[bytes], name: str = "IDX data") -> np.ndarray:
    """Parse an IDX stream into an array of its declared shape (checked against the byte count)."""
    header = stream.read(4)
    if len(header) != 4 or header[0] != 0 or header[1] != 0:
        raise FormatError(f"{name}: not an IDX file (bad magic number {header.hex() or 'empty'})")
    dtype = _IDX_TYPES.get(header[2])
    if dtype is None:
        raise FormatError(f"{name}: unknown IDX data type 0x{header[2]:02x}")
    ndim = header[3]
    dims_raw = stream.read(4 * ndim)
    if len(dims_raw) != 4 * ndim:
        raise FormatError(f"{name}: truncated IDX header")
    shape = tuple(int.from_bytes(dims_raw[4 * i : 4 * i + 4], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    data = stream.read(expected + 1)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise FormatError(
            f"{name}: IDX file is {what} (header {shape}, {expected} data bytes, found {min(len(data), expected + 1)}{'+' if len(data) > expected else ''})"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(np.dtype(dtype).newbyteorder("="))


def read_idx_file(path: Path) -> np.ndarray:
    """Read an IDX file, gzipped (``.gz``) or not."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return read_idx(stream, str(path))
        with open(path, "rb") as stream:
            return read_idx(stream, str(path))
    except (OSError, EOFError) as error:  # gzip: truncated or not gzip
        raise FormatError(f"{path}: cannot read ({error})") from None


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches: only plain containers, strings, numbers and uint8 numpy arrays.

    ``find_class`` admits exactly the globals a pickled numpy array needs
    (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``, wrapped so
    that only plain ndarrays of bool/int/uint/float dtype can be built); any other global
    (``os.system``, ``builtins.eval``, ...) raises :class:`pickle.UnpicklingError` before
    anything runs.
    """

    _ALLOWED_DTYPE_KINDS = "biuf"

    def find_class(self, module: str, name: str) -> Any:
        """Unpickling's lookup of a global, restricted to what a CIFAR-10 batch holds (a numpy array
        rebuilt from raw bytes of a numeric dtype); anything else raises ``pickle.UnpicklingError``.
        """
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _safe_reconstruct
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return _safe_dtype
        raise pickle.UnpicklingError(f"refused global {module}.{name}: not allowed in a CIFAR-10 batch")


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refused array subtype {subtype!r}")
    return np.ndarray.__new__(np.ndarray, shape, _safe_dtype(dtype))


def _safe_dtype(spec: Any, *args: Any) -> np.dtype:
    if isinstance(spec, bytes):
        spec = spec.decode("latin1")
    if not isinstance(spec, (str, np.dtype)):
        raise pickle.UnpicklingError(f"refused dtype {spec!r}")
    dtype = np.dtype(spec)
    if dtype.kind not in RestrictedUnpickler._ALLOWED_DTYPE_KINDS or dtype.fields is not None:
        raise pickle.UnpicklingError(f"refused dtype {dtype!r}: CIFAR-10 batches hold plain numeric arrays")
    return dtype


def _str_keys(mapping: dict) -> dict:
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in mapping.items()}


def read_cifar_batch(stream: IO[bytes], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch: images (N, 3, 32, 32) uint8 and labels (N,) int64.

    Raises:
        FormatError: a refused global or dtype, a truncated file, a wrong layout.
    """
    try:
        batch = RestrictedUnpickler(stream, encoding="bytes").load()
    except pickle.UnpicklingError as error:
        raise FormatError(f"{name}: refused to unpickle: {error}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise FormatError(f"{name}: not a readable CIFAR-10 batch ({type(error).__name__}: {error})") from None
    if not isinstance(batch, dict):
        raise FormatError(f"{name}: a CIFAR-10 batch is a dict, found {type(batch).__name__}")
    batch = _str_keys(batch)
    if "data" not in batch or "labels" not in batch:
        raise FormatError(f"{name}: missing 'data' or 'labels' (keys: {sorted(map(str, batch))})")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise FormatError(
            f"{name}: 'data' must be an N x 3072 uint8 array, found {getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}"
        )
    if not isinstance(labels, list) or not all(isinstance(v, int) for v in labels):
        raise FormatError(f"{name}: 'labels' must be a list of ints")
    y = np.asarray(labels, dtype=np.int64)
    if len(y) != len(data):
        raise FormatError(f"{name}: {len(data)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise FormatError(f"{name}: labels must lie in 0..9, found {y.min()}..{y.max()}")
    return data.reshape(-1, 3, 32, 32), y


def read_mnist_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read Keras's ``mnist.npz``: (x_train, y_train, x_test, y_test), images (N, 28, 28) uint8."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = [np.asarray(archive[key]) for key in ("x_train", "y_train", "x_test", "y_test")]
    except KeyError as error:
        raise FormatError(
            f"{path}: missing array {error} (an mnist.npz holds x_train, y_train, x_test, y_test)"
        ) from None
    except (OSError, ValueError, EOFError) as error:
        raise FormatError(f"{path}: not a readable .npz ({error})") from None
    return tuple(arrays)  # type: ignore[return-value]
