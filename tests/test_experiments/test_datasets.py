"""Dataset loaders on small files in the real formats: layouts, checksums, downloads, splits."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest

from spocu.experiments.data import datasets
from spocu.experiments.data.download import ChecksumError, DatasetError, RemoteFile, fetch
from tiny_data import CIFAR_NAMES, md5, tiny_mnist, write_cifar_dir, write_cifar_tarball, write_mnist_idx

# ----------------------------------------------------------------------------- embedded data


def test_wdbc_split_is_stratified_and_standardized_with_training_statistics():
    from sklearn.datasets import load_breast_cancer

    ds = datasets.load_dataset("wdbc", split_seed=3)
    _, raw_y = load_breast_cancer(return_X_y=True)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == len(raw_y)
    # class proportions agree within one sample per split
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert abs(np.sum(y == 0) - len(y) * np.mean(raw_y == 0)) <= 1
    mean, sd = ds.x_train.mean(0), ds.x_train.std(0)
    np.testing.assert_allclose(mean, 0, atol=1e-5)
    np.testing.assert_allclose(sd, 1, atol=1e-4)
    assert np.abs(ds.x_val.mean(0)).max() > 1e-3  # the validation split was not standardized on itself


def test_wdbc_scaling_matches_an_independent_split():
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    rest_x, test_x, rest_y, _ = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    train_x, _, _, _ = train_test_split(rest_x, rest_y, test_size=0.2, stratify=rest_y, random_state=0)
    expected = (test_x - train_x.mean(0)) / train_x.std(0)
    ds = datasets.load_dataset("wdbc")
    np.testing.assert_allclose(ds.x_test, expected, rtol=1e-5, atol=1e-5)


def test_digits_are_standardized_per_channel_with_training_statistics():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    rest_x, test_x, rest_y, _ = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    train_x, _, _, _ = train_test_split(rest_x, rest_y, test_size=0.2, stratify=rest_y, random_state=0)
    ds = datasets.load_dataset("digits")
    np.testing.assert_allclose(
        ds.x_test.reshape(len(test_x), -1), (test_x - train_x.mean()) / train_x.std(), rtol=1e-5, atol=1e-5
    )
    assert np.abs(ds.x_val).max() < 3  # 0..16 pixel values stay moderate


def test_digits_are_images_and_splits_are_reproducible():
    a = datasets.load_dataset("digits", split_seed=1)
    b = datasets.load_dataset("digits", split_seed=1)
    c = datasets.load_dataset("digits", split_seed=2)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_bad_split_sizes_are_errors():
    with pytest.raises(ValueError, match="val_size"):
        datasets.load_dataset("wdbc", val_size=0)
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.load_dataset("imagenet")


# ----------------------------------------------------------------------------- CIFAR-10


@pytest.fixture
def tiny_cifar_md5s(monkeypatch):
    """Make the checksum tables accept the tiny files the test writes (by their real md5)."""

    def accept_archive(path):
        monkeypatch.setattr(
            datasets, "CIFAR10_ARCHIVE", dataclasses.replace(datasets.CIFAR10_ARCHIVE, digest=md5(path))
        )

    def accept_directory(directory):
        for name in CIFAR_NAMES:
            monkeypatch.setitem(datasets.CIFAR10_BATCH_MD5, name, md5(directory / name))

    return accept_archive, accept_directory


def _check_cifar(ds, arrays):
    x_all = np.concatenate([ds.x_train, ds.x_val])
    y_all = np.concatenate([ds.y_train, ds.y_val])
    train = [arrays[f"data_batch_{i}"] for i in range(1, 6)]
    expected_x = np.concatenate([x for x, _ in train]).reshape(-1, 3, 32, 32)
    expected_y = np.concatenate([y for _, y in train])
    order_got = np.lexsort(x_all.reshape(len(x_all), -1).T[:8])
    order_expected = np.lexsort(expected_x.reshape(len(expected_x), -1).T[:8])
    np.testing.assert_array_equal(x_all[order_got], expected_x[order_expected])
    np.testing.assert_array_equal(y_all[order_got], expected_y[order_expected])
    np.testing.assert_array_equal(ds.x_test, arrays["test_batch"][0].reshape(-1, 3, 32, 32))
    assert ds.x_train.dtype == np.uint8 and ds.pixel_scale == pytest.approx(1 / 255)


def test_cifar10_tarball_in_the_cache(cache, tiny_cifar_md5s):
    archive = cache / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True)
    arrays = write_cifar_tarball(archive, n_per_class=2)
    tiny_cifar_md5s[0](archive)
    ds = datasets.load_dataset("cifar10", val_size=20, download=False)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (80, 20, 20)
    _check_cifar(ds, arrays)


@pytest.mark.parametrize(
    "layout",
    ["cifar-10-batches-py", "cifar-10-batches-py-target/cifar-10-batches-py", "datasets/cifar-10-batches-py"],
    ids=["torchvision-or-old-keras", "new-keras", "keras-home"],
)
def test_cifar10_extracted_layouts_in_data_dir(tmp_path, cache, tiny_cifar_md5s, layout):
    arrays = write_cifar_dir(tmp_path / "mine" / layout, n_per_class=2)
    tiny_cifar_md5s[1](tmp_path / "mine" / layout)
    ds = datasets.load_dataset("cifar10", data_dir=tmp_path / "mine", val_size=20, download=False)
    _check_cifar(ds, arrays)
    assert layout in ds.info["origin"]


def test_cifar10_batches_are_verified_against_the_published_md5(tmp_path, cache):
    write_cifar_dir(tmp_path / "mine" / "cifar-10-batches-py")
    with pytest.raises(ChecksumError, match="data_batch_1.*c99cafc152244af753f735de768cd75f"):
        datasets.load_dataset("cifar10", data_dir=tmp_path / "mine", download=False)


def test_cifar10_tarball_with_a_wrong_checksum(cache):
    archive = cache / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True)
    write_cifar_tarball(archive)
    with pytest.raises(ChecksumError, match="c58f30108f718f92721af3b95e74349a"):
        datasets.load_dataset("cifar10", download=False)


def test_cifar10_truncated_tarball(cache, tiny_cifar_md5s):
    archive = cache / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True)
    write_cifar_tarball(archive, n_per_class=2)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ChecksumError):  # the real md5 catches it first
        datasets.load_dataset("cifar10", download=False)
    tiny_cifar_md5s[0](archive)  # even if the digest matched, a cut archive is a clear error
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        datasets.load_dataset("cifar10", download=False)


def test_cifar10_malicious_batch_in_the_archive_is_refused(tmp_path, cache, tiny_cifar_md5s):
    marker = tmp_path / "pwned"
    directory = tmp_path / "evil" / "cifar-10-batches-py"
    write_cifar_dir(directory)
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (directory / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2))
    tiny_cifar_md5s[1](directory)
    with pytest.raises(DatasetError, match="refused"):
        datasets.load_dataset("cifar10", data_dir=tmp_path / "evil", download=False)
    assert not marker.exists()


def test_cifar10_download_from_a_url_is_verified_and_cached(tmp_path, cache, monkeypatch):
    served = tmp_path / "server" / "cifar-10-python.tar.gz"
    served.parent.mkdir()
    arrays = write_cifar_tarball(served, n_per_class=2)
    remote = dataclasses.replace(datasets.CIFAR10_ARCHIVE, url=served.as_uri(), digest=md5(served))
    monkeypatch.setattr(datasets, "CIFAR10_ARCHIVE", remote)
    ds = datasets.load_dataset("cifar10", val_size=20, progress=False)
    _check_cifar(ds, arrays)
    cached = cache / "cifar10" / "cifar-10-python.tar.gz"
    assert cached.read_bytes() == served.read_bytes()
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temporary files left
    served.unlink()  # now it loads from the cache, without the network
    datasets.load_dataset("cifar10", val_size=20, progress=False)


def test_cifar10_without_network_or_files_says_what_to_do(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(
        datasets,
        "CIFAR10_ARCHIVE",
        dataclasses.replace(datasets.CIFAR10_ARCHIVE, url=(tmp_path / "nowhere.tgz").as_uri()),
    )
    with pytest.raises(DatasetError) as info:
        datasets.load_dataset("cifar10", progress=False)
    message = str(info.value)
    assert "cifar-10-python.tar.gz" in message and "c58f30108f718f92721af3b95e74349a" in message
    assert str(cache / "cifar10") in message and "--data-dir" in message
    assert not any((cache / "cifar10").iterdir())  # nothing half-downloaded
    with pytest.raises(DatasetError, match="--no-download"):
        datasets.load_dataset("cifar10", download=False)


# ----------------------------------------------------------------------------- download


def test_fetch_rejects_a_wrong_checksum_and_keeps_nothing(tmp_path):
    served = tmp_path / "file.bin"
    served.write_bytes(b"x" * 100_000)
    target = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="expected 0{32}"):
        fetch(RemoteFile("file.bin", served.as_uri(), "0" * 32), target, progress=False)
    assert list(target.iterdir()) == []
    path = fetch(RemoteFile("file.bin", served.as_uri(), md5(served)), target, progress=True)
    assert path.read_bytes() == served.read_bytes()


def test_fetch_interrupted_mid_stream_keeps_nothing(tmp_path):
    class Response:
        headers = {"Content-Length": "1000000"}

        def __init__(self):
            self.sent = 0

        def read(self, n):
            if self.sent >= 3:
                raise KeyboardInterrupt
            self.sent += 1
            return b"y" * n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    target = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        fetch(
            RemoteFile("big.bin", "https://example.invalid/big.bin", "0" * 32),
            target,
            progress=False,
            opener=lambda url, timeout: Response(),
        )
    assert list(target.iterdir()) == []


# ----------------------------------------------------------------------------- MNIST


@pytest.fixture
def tiny_mnist_md5s(monkeypatch):
    def accept(paths):
        for role, path in paths.items():
            name, _ = datasets.MNIST_FILES[role]
            monkeypatch.setitem(datasets.MNIST_FILES, role, (name, md5(path)))

    return accept


def _check_mnist(ds, arrays):
    assert ds.input_shape == (1, 28, 28)
    np.testing.assert_array_equal(ds.x_test[:, 0], arrays["test_images"])
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert sorted(np.concatenate([ds.y_train, ds.y_val]).tolist()) == sorted(arrays["train_labels"].tolist())


def test_mnist_torchvision_layout_gz(tmp_path, cache, tiny_mnist_md5s):
    arrays = tiny_mnist()
    paths = write_mnist_idx(tmp_path / "root" / "MNIST" / "raw", arrays)
    tiny_mnist_md5s(paths)
    ds = datasets.load_dataset("mnist", data_dir=tmp_path / "root", val_size=10, download=False)
    _check_mnist(ds, arrays)


def test_mnist_uncompressed_idx(tmp_path, cache):
    arrays = tiny_mnist()
    write_mnist_idx(tmp_path / "root" / "MNIST" / "raw", arrays, gz=False)
    ds = datasets.load_dataset("mnist", data_dir=tmp_path / "root", val_size=10, download=False)
    _check_mnist(ds, arrays)


def test_mnist_gz_with_a_wrong_checksum(tmp_path, cache):
    write_mnist_idx(tmp_path / "root", tiny_mnist())
    with pytest.raises(ChecksumError, match="f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        datasets.load_dataset("mnist", data_dir=tmp_path / "root", download=False)


def test_mnist_keras_npz(tmp_path, cache, monkeypatch):
    arrays = tiny_mnist()
    path = tmp_path / "keras" / "datasets" / "mnist.npz"
    path.parent.mkdir(parents=True)
    np.savez_compressed(
        path,
        x_train=arrays["train_images"],
        y_train=arrays["train_labels"],
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"],
    )
    with pytest.raises(ChecksumError, match="sha256"):
        datasets.load_dataset("mnist", data_dir=tmp_path / "keras", download=False)
    import hashlib

    monkeypatch.setattr(datasets, "MNIST_NPZ_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    ds = datasets.load_dataset("mnist", data_dir=tmp_path / "keras", val_size=10, download=False)
    _check_mnist(ds, arrays)


def test_mnist_download_from_the_mirror(tmp_path, cache, tiny_mnist_md5s, monkeypatch):
    arrays = tiny_mnist()
    paths = write_mnist_idx(tmp_path / "mirror", arrays)
    tiny_mnist_md5s(paths)
    monkeypatch.setattr(datasets, "MNIST_MIRROR", (tmp_path / "mirror").as_uri() + "/")
    ds = datasets.load_dataset("mnist", val_size=10, progress=False)
    _check_mnist(ds, arrays)
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(p.name for p in paths.values())
    shutil.rmtree(tmp_path / "mirror")
    datasets.load_dataset("mnist", val_size=10, download=False)  # from the cache now


def test_mnist_missing_everywhere(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(datasets, "MNIST_MIRROR", (tmp_path / "offline").as_uri() + "/")
    with pytest.raises(DatasetError) as info:
        datasets.load_dataset("mnist", data_dir=tmp_path, progress=False)
    message = str(info.value)
    for name, digest in datasets.MNIST_FILES.values():
        assert name in message and digest in message
    assert "mnist.npz" in message and "MNIST/raw" in message
