"""Writers for tiny MNIST and CIFAR-10 files in their real on-disk formats (no network in tests)."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` opcodes (SHORT_BINSTRING/BINSTRING), as cPickle did.

    The real CIFAR-10 batches were written by Python 2's cPickle (protocol 2): their keys
    and the array bytes are py2 strings, and the array global is numpy.core.multiarray.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    stream = io.BytesIO()
    _Py2Pickler(stream, protocol=2).dump(obj)
    return stream.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_batch(n_per_class: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A CIFAR-10 batch in the real layout: py2 dict {data: N x 3072 uint8, labels: [int], ...}."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per_class)
    rng.shuffle(labels)
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [int(v) for v in labels],
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    return py2_pickle(batch), data, labels


CIFAR_NAMES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]


def write_cifar_dir(directory: Path, n_per_class: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, name in enumerate(CIFAR_NAMES):
        raw, data, labels = cifar_batch(n_per_class, seed=i)
        (directory / name).write_bytes(raw)
        arrays[name] = (data, labels)
    (directory / "batches.meta").write_bytes(py2_pickle({b"label_names": [b"airplane"] * 10}))
    return arrays


def write_cifar_tarball(path: Path, n_per_class: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A tiny cifar-10-python.tar.gz with the real member names (cifar-10-batches-py/...)."""
    staging = path.parent / (path.name + ".staging")
    arrays = write_cifar_dir(staging / "cifar-10-batches-py", n_per_class)
    with tarfile.open(path, "w:gz") as archive:
        archive.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return arrays


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (ubyte); gzipped when the name ends in .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def tiny_mnist(n_train_per_class: int = 3, n_test_per_class: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_train = np.repeat(np.arange(10, dtype=np.uint8), n_train_per_class)
    y_test = np.repeat(np.arange(10, dtype=np.uint8), n_test_per_class)
    return {
        "train_images": rng.integers(0, 256, (len(y_train), 28, 28), dtype=np.uint8),
        "train_labels": y_train,
        "test_images": rng.integers(0, 256, (len(y_test), 28, 28), dtype=np.uint8),
        "test_labels": y_test,
    }


def write_mnist_idx(directory: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> dict[str, Path]:
    paths = {}
    for role, name in MNIST_NAMES.items():
        path = directory / (name if gz else name[: -len(".gz")])
        write_idx(path, arrays[role])
        paths[role] = path
    return paths


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()
