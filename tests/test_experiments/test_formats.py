"""IDX, CIFAR-10 pickle and mnist.npz readers, including hostile and broken files."""

from __future__ import annotations

import gzip
import io
import os
import pickle

import numpy as np
import pytest

from spocu.experiments.data.formats import FormatError, read_cifar_batch, read_idx_file, read_mnist_npz
from tiny_data import cifar_batch, py2_pickle, write_idx


def test_idx_round_trip_gz_and_raw(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    for name in ("x-idx3-ubyte.gz", "x-idx3-ubyte"):
        write_idx(tmp_path / name, images)
        np.testing.assert_array_equal(read_idx_file(tmp_path / name), images)


def test_idx_header_is_big_endian(tmp_path):
    # 300 labels: the count needs two bytes, so a little-endian reading would see 300 * 2**16
    labels = (np.arange(300) % 10).astype(np.uint8)
    write_idx(tmp_path / "l.gz", labels)
    assert read_idx_file(tmp_path / "l.gz").shape == (300,)


def test_truncated_idx_is_refused(tmp_path):
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x", images)
    raw = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(raw[:-10])
    with pytest.raises(FormatError, match="truncated"):
        read_idx_file(tmp_path / "x")
    (tmp_path / "y.gz").write_bytes(gzip.compress(raw)[:-20])  # a gzip stream cut short
    with pytest.raises(FormatError):
        read_idx_file(tmp_path / "y.gz")


def test_not_idx_is_refused(tmp_path):
    (tmp_path / "x").write_bytes(b"PK\x03\x04 this is a zip")
    with pytest.raises(FormatError, match="not an IDX file"):
        read_idx_file(tmp_path / "x")


def test_cifar_batch_in_the_real_python2_layout():
    raw, data, labels = cifar_batch(2, seed=1)
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw  # as written by Python 2 cPickle
    x, y = read_cifar_batch(io.BytesIO(raw), "batch")
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.uint8
    # channel c of image i is data[i, 1024c : 1024(c+1)] in row-major order
    np.testing.assert_array_equal(x[3, 1], data[3, 1024:2048].reshape(32, 32))
    np.testing.assert_array_equal(y, labels)


def test_cifar_batch_written_by_python3_pickle_also_reads():
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    raw = pickle.dumps({"data": data, "labels": [3, 4]}, protocol=4)
    x, y = read_cifar_batch(io.BytesIO(raw), "batch")
    np.testing.assert_array_equal(x.reshape(2, -1), data)
    assert y.tolist() == [3, 4]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("evil", [_Evil, _EvilEval])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, evil):
    marker = tmp_path / "pwned"
    raw = pickle.dumps({b"data": evil(marker), b"labels": [1]}, protocol=2)
    with pytest.raises(FormatError, match="refused"):
        read_cifar_batch(io.BytesIO(raw), "evil_batch")
    assert not marker.exists()
    # the same file *would* run the command under plain pickle: the test is meaningful
    pickle.loads(raw)
    assert marker.exists()


def test_object_arrays_are_refused():
    raw = py2_pickle({b"data": np.array([[1, 2]], dtype=object), b"labels": [0]})
    with pytest.raises(FormatError, match="refused"):
        read_cifar_batch(io.BytesIO(raw), "batch")


def test_wrong_layout_is_refused():
    raw = py2_pickle({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]})
    with pytest.raises(FormatError, match="3072"):
        read_cifar_batch(io.BytesIO(raw), "batch")
    raw = py2_pickle({b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0]})
    with pytest.raises(FormatError, match="2 images but 1 labels"):
        read_cifar_batch(io.BytesIO(raw), "batch")


def test_truncated_cifar_batch_is_refused():
    raw, _, _ = cifar_batch(1, seed=0)
    with pytest.raises(FormatError):
        read_cifar_batch(io.BytesIO(raw[: len(raw) // 2]), "batch")


def test_mnist_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "y_train": np.arange(5, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        "y_test": np.arange(2, dtype=np.uint8),
    }
    np.savez_compressed(tmp_path / "mnist.npz", **arrays)
    for got, key in zip(read_mnist_npz(tmp_path / "mnist.npz"), ("x_train", "y_train", "x_test", "y_test")):
        np.testing.assert_array_equal(got, arrays[key])
    np.savez(tmp_path / "bad.npz", x_train=arrays["x_train"])
    with pytest.raises(FormatError, match="missing array"):
        read_mnist_npz(tmp_path / "bad.npz")
