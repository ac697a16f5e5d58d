"""Datasets behind one loader interface: ``wdbc``, ``digits`` (embedded), ``mnist``, ``cifar10`` (real data).

Every loader returns a :class:`Source` (the official training data, the official test data if
there is one, class names, where it was read from); :func:`load_dataset` turns it into a
:class:`Dataset` with the same protocol for all:

- **wdbc** (569 samples, 30 features; scikit-learn's ``load_breast_cancer``) and **digits**
  (1,797 8x8 images; ``load_digits``) have no official test set: a stratified test split
  (``test_size``, default 0.2) is taken first, then a stratified validation split (``val_size``,
  default 0.2) from the rest, both with ``split_seed``. They are standardized with the mean
  and standard deviation of the training split only (``StandardScaler``): WDBC per feature,
  digits per channel (one mean and sd for all pixels, as for images; per pixel, the nearly
  constant border pixels would become z-scores of 100 and more).
- **mnist** and **cifar10** keep their official test sets (10,000 images each); a stratified
  validation split (``val_size``, default 5,000 images) is held out of the official training set.
  Pixels stay uint8 and are scaled by 1/255 in the engine, as in the seed experiment.

MNIST and CIFAR-10 are looked for in ``data_dir`` (a directory of your own copies, including
torchvision's and Keras's layouts), then in the cache (``$SPOCU_DATA`` or ``~/.cache/spocu``),
then downloaded from the canonical source into the cache, verified by checksum. Files with
a published checksum are verified wherever they come from.

Example:
    >>> ds = load_dataset("wdbc")
    >>> ds.input_shape, ds.num_classes, len(ds.y_train), len(ds.y_val), len(ds.y_test)
    ((30,), 2, 364, 91, 114)
    >>> abs(float(ds.x_train.mean())) < 1e-6  # standardized with training statistics
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spocu.experiments.data.download import ChecksumError, DatasetError, RemoteFile, cache_dir, fetch, verify
from spocu.experiments.data.formats import FormatError, read_cifar_batch, read_idx_file, read_mnist_npz
from spocu.experiments.seeding import split_seed_for

__all__ = [
    "DATASETS",
    "EMBEDDED_DATASETS",
    "Dataset",
    "DatasetError",
    "Resplit",
    "SPLIT_MODES",
    "Source",
    "load_dataset",
    "split_dataset",
    "standardize_splits",
    "NotFiniteAfterScaling",
    "FLOAT32_MAX",
    "CIFAR10_ARCHIVE",
    "CIFAR10_BATCH_MD5",
    "MNIST_FILES",
    "MNIST_NPZ_SHA256",
]

# ----------------------------------------------------------------------------- published files

#: The CIFAR-10 python tarball (https://www.cs.toronto.edu/~kriz/cifar.html).
CIFAR10_ARCHIVE = RemoteFile(
    "cifar-10-python.tar.gz",
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
    size=170_498_071,
)
#: md5 of the extracted batches (torchvision's ``CIFAR10.train_list``/``test_list``).
CIFAR10_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR_DIR = "cifar-10-batches-py"
#: Names under which Keras and torchvision keep the tarball.
_CIFAR_ARCHIVE_NAMES = ("cifar-10-python.tar.gz", "cifar-10-batches-py.tar.gz", "cifar-10-batches-py-target_archive")

#: torchvision's mirror of MNIST (LeCun's original site no longer serves the files).
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
#: role -> (file name, md5) as in ``torchvision.datasets.MNIST.resources``.
MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
#: sha256 of Keras's ``mnist.npz``.
MNIST_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"


# ----------------------------------------------------------------------------- interface


@dataclass(frozen=True)
class Source:
    """What a loader returns: official train (and test, if any) arrays and where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    class_names: tuple[str, ...]
    origin: str
    tabular: bool  # True: standardize features; False: uint8 images scaled by 1/255


@dataclass(frozen=True)
class Dataset:
    """Train/validation/test arrays ready for an engine.

    ``x_*`` are float32 (standardized features, shape (N, *input_shape)) or, for images,
    uint8 of shape (N, C, H, W) to be multiplied by ``pixel_scale``. Labels are int64.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    pixel_scale: float | None
    info: dict = field(default_factory=dict)
    #: positions of the test samples in the data before splitting (official test set: 0..n-1)
    test_indices: np.ndarray | None = field(default=None, compare=False, repr=False)
    #: with ``--split per-seed``: how to draw another seed's split (:meth:`for_seed`); None = one fixed split
    resplit: Resplit | None = field(default=None, compare=False, repr=False)

    def for_seed(self, seed: int) -> Dataset:
        """The data the runs of ``seed`` train and test on: this dataset, or with per-seed splits its own split.

        A function of (data, split seed, ``seed``) only, so every executor (this process, ``--jobs``
        workers, Ray tasks, torchrun ranks) computes the same split. The last one is cached.
        """
        if self.resplit is None:
            return self
        cached = self.__dict__.get("_for_seed")
        if cached is None or cached[0] != seed:
            cached = (seed, self.resplit.for_seed(seed))
            object.__setattr__(self, "_for_seed", cached)
        return cached[1]

    def split_fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of the test indices: runs scored on the same test samples share it."""
        indices = np.arange(len(self.y_test)) if self.test_indices is None else self.test_indices
        official = self.info.get("test_split") == "official test set"
        digest = hashlib.sha256(b"official" if official else b"drawn")
        digest.update(np.ascontiguousarray(indices, dtype=np.int64).data)
        return digest.hexdigest()[:16]

    def __getstate__(self):  # the per-seed cache stays behind when a dataset is sent to a worker
        return {k: v for k, v in self.__dict__.items() if k != "_for_seed"}

    def __setstate__(self, state):
        self.__dict__.update(state)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input: ``(features,)`` for tables, ``(C, H, W)`` for images."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """The number of classes (the length of ``class_names``)."""
        return len(self.class_names)

    @property
    def is_image(self) -> bool:
        """Whether the inputs are images (``input_shape`` is ``(C, H, W)``)."""
        return len(self.input_shape) == 3

    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of every array: the same data and split give the same value."""
        if "_fingerprint" not in self.__dict__:  # computed once: it hashes every array
            object.__setattr__(self, "_fingerprint", self._digest())
        return self.__dict__["_fingerprint"]

    def _digest(self) -> str:
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            digest.update(str((array.dtype.str, array.shape)).encode())
            digest.update(np.ascontiguousarray(array).data)
        return digest.hexdigest()[:16]

    def describe(self) -> dict:
        """Sizes, split and preprocessing, for results.json and the report."""
        return {
            "name": self.name,
            "train": int(len(self.y_train)),
            "val": int(len(self.y_val)),
            "test": int(len(self.y_test)),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "fingerprint": self.fingerprint(),
            **self.info,
        }


#: ``--split``: ``per-seed`` (each seed draws its own stratified split; data without an official test set) or ``fixed``
SPLIT_MODES = ("per-seed", "fixed")


@dataclass(frozen=True)
class Resplit:
    """How to split the unsplit data again for another seed: ``prepare(data, split_seed)`` returns a Dataset.

    ``prepare`` is a module-level function (so it pickles to workers); seed ``k``'s split uses
    :func:`~spocu.experiments.seeding.split_seed_for` ``(split_seed, k)``.
    """

    prepare: Callable[..., Dataset]
    data: tuple
    split_seed: int
    #: every seed's test split left empty (``--tune lr``'s runs: the test set never takes part)
    drop_test: bool = False

    def for_seed(self, seed: int) -> Dataset:
        """Seed ``seed``'s dataset: the unsplit data split with
        :func:`~spocu.experiments.seeding.split_seed_for` ``(split_seed, seed)``, its ``info`` recording
        the split, and its test split emptied when ``drop_test``.
        """
        dataset = self.prepare(*self.data, split_seed=split_seed_for(self.split_seed, seed))
        dataset.info.update(split="per-seed", split_seed=self.split_seed, run_seed=int(seed))
        if self.drop_test:
            indices = None if dataset.test_indices is None else dataset.test_indices[:0]
            dataset = dataclasses.replace(
                dataset, x_test=dataset.x_test[:0], y_test=dataset.y_test[:0], test_indices=indices
            )
        return dataset


Loader = Callable[[Path | None, bool, bool], Source]


# ----------------------------------------------------------------------------- embedded


def _load_wdbc(data_dir: Path | None, download: bool, progress: bool) -> Source:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return Source(
        bunch.data,
        bunch.target,
        None,
        None,
        tuple(bunch.target_names),
        "scikit-learn load_breast_cancer (UCI WDBC)",
        True,
    )


def _load_digits(data_dir: Path | None, download: bool, progress: bool) -> Source:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data.reshape(-1, 1, 8, 8)
    return Source(
        x,
        bunch.target,
        None,
        None,
        tuple(str(c) for c in bunch.target_names),
        "scikit-learn load_digits (UCI optdigits test set)",
        True,
    )


# ----------------------------------------------------------------------------- CIFAR-10


def _roots(data_dir: Path | None, subdir: str) -> list[Path]:
    roots = [] if data_dir is None else [Path(data_dir).expanduser()]
    return roots + [cache_dir() / subdir]


def _read_cifar_archive(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    verify(path, CIFAR10_ARCHIVE.digest, CIFAR10_ARCHIVE.algorithm)
    batches = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for name in CIFAR10_BATCH_MD5:
                member = archive.extractfile(f"{_CIFAR_DIR}/{name}")  # read in memory; nothing is extracted
                if member is None:
                    raise FormatError(f"{path}: {_CIFAR_DIR}/{name} is not a file")
                batches[name] = read_cifar_batch(member, f"{path}:{name}")
    except KeyError as error:
        raise DatasetError(f"{path}: the archive lacks {error}; it is not the CIFAR-10 python version") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DatasetError(f"{path}: the archive is truncated or corrupt ({error}); delete it and try again") from None
    except FormatError as error:
        raise DatasetError(str(error)) from None
    return batches, str(path)


def _read_cifar_directory(directory: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    batches = {}
    for name, md5 in CIFAR10_BATCH_MD5.items():
        path = directory / name
        verify(path, md5)
        try:
            with open(path, "rb") as stream:
                batches[name] = read_cifar_batch(stream, str(path))
        except FormatError as error:
            raise DatasetError(str(error)) from None
    return batches, str(directory)


def _cifar_locations(root: Path) -> tuple[list[Path], list[Path]]:
    directories = [
        root / _CIFAR_DIR,
        root / "cifar-10-batches-py-target" / _CIFAR_DIR,
        root / "datasets" / _CIFAR_DIR,
        root,
    ]
    archives = [root / name for name in _CIFAR_ARCHIVE_NAMES] + [
        root / "datasets" / name for name in _CIFAR_ARCHIVE_NAMES
    ]
    return directories, archives


def _local_or_download(name: str, find_local, download_remote, download: bool, needed: str):
    """A copy found locally, else a verified download, else a :class:`DatasetError` that says
    why, which files are needed and where to put them. A checksum mismatch is never hidden."""
    found = find_local()
    if found is not None:
        return found
    failure = "downloads are off (--no-download)"
    if download:
        try:
            return download_remote()
        except ChecksumError:
            raise
        except DatasetError as error:
            failure = str(error)
    raise DatasetError(f"{name} not found and not downloaded: {failure}.\n{needed}")


def _find_cifar10(data_dir: Path | None):
    for root in _roots(data_dir, "cifar10"):
        directories, archives = _cifar_locations(root)
        for directory in directories:
            if all((directory / name).is_file() for name in CIFAR10_BATCH_MD5):
                return _read_cifar_directory(directory)
        for archive in archives:
            if archive.is_file():
                return _read_cifar_archive(archive)
    return None


def _load_cifar10(data_dir: Path | None, download: bool, progress: bool) -> Source:
    target = cache_dir() / "cifar10"
    looked = ", ".join(str(r) for r in _roots(data_dir, "cifar10"))
    batches = _local_or_download(
        "CIFAR-10",
        lambda: _find_cifar10(data_dir),
        lambda: _read_cifar_archive(fetch(CIFAR10_ARCHIVE, target, progress=progress)),
        download,
        f"Needed: {CIFAR10_ARCHIVE.name} (md5 {CIFAR10_ARCHIVE.digest}, from {CIFAR10_ARCHIVE.url}) "
        f"or its extracted folder {_CIFAR_DIR}/ ({', '.join(CIFAR10_BATCH_MD5)}).\n"
        f"Put either into {target} (or set $SPOCU_DATA), or pass --data-dir DIR with torchvision's "
        f"root (DIR/{_CIFAR_DIR}/ or DIR/{CIFAR10_ARCHIVE.name}) or Keras's ~/.keras/datasets.\n"
        f"Looked in: {looked}.",
    )
    parts, origin = batches
    train = [parts[f"data_batch_{i}"] for i in range(1, 6)]
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    x_test, y_test = parts["test_batch"]
    return Source(x_train, y_train, x_test, y_test, CIFAR10_CLASSES, origin, False)


# ----------------------------------------------------------------------------- MNIST


def _mnist_from_idx(files: dict[str, Path]) -> tuple[np.ndarray, ...]:
    arrays = {}
    for role, path in files.items():
        name, md5 = MNIST_FILES[role]
        if path.name == name:  # the published .gz: verify; an uncompressed copy has no published md5
            verify(path, md5)
        try:
            arrays[role] = read_idx_file(path)
        except FormatError as error:
            raise DatasetError(str(error)) from None
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or images.dtype != np.uint8:
            raise DatasetError(
                f"MNIST {split}: images {images.dtype} {images.shape} and labels {labels.shape} do not fit together"
            )
        if len(labels) and int(labels.max()) > 9:  # uncompressed copies have no published checksum: check the content
            raise DatasetError(
                f"{files[f'{split}_labels']}: holds label {int(labels.max())}, but MNIST's classes are 0..9; the file is damaged or not MNIST"
            )
    return arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"]


def _mnist_idx_files(directory: Path) -> dict[str, Path] | None:
    found = {}
    for role, (name, _) in MNIST_FILES.items():
        for candidate in (directory / name, directory / name[: -len(".gz")]):
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            return None
    return found


def _find_mnist(data_dir: Path | None):
    for root in _roots(data_dir, "mnist"):
        for directory in (root, root / "MNIST" / "raw", root / "mnist", root / "datasets"):
            files = _mnist_idx_files(directory)
            if files is not None:
                return _mnist_from_idx(files), str(directory)
            npz = directory / "mnist.npz"
            if npz.is_file():
                verify(npz, MNIST_NPZ_SHA256, "sha256")
                try:
                    return read_mnist_npz(npz), str(npz)
                except FormatError as error:
                    raise DatasetError(str(error)) from None
    return None


def _download_mnist(target: Path, progress: bool):
    files = {}
    for role, (name, md5) in MNIST_FILES.items():
        existing = target / name
        files[role] = (
            existing
            if existing.is_file()
            else fetch(RemoteFile(name, MNIST_MIRROR + name, md5), target, progress=progress)
        )
    return _mnist_from_idx(files), str(target)


def _load_mnist(data_dir: Path | None, download: bool, progress: bool) -> Source:
    target = cache_dir() / "mnist"
    names = ", ".join(f"{name} (md5 {md5})" for name, md5 in MNIST_FILES.values())
    looked = ", ".join(str(r) for r in _roots(data_dir, "mnist"))
    arrays, origin = _local_or_download(
        "MNIST",
        lambda: _find_mnist(data_dir),
        lambda: _download_mnist(target, progress),
        download,
        f"Needed: the four IDX files {names} from {MNIST_MIRROR}, or Keras's mnist.npz.\n"
        f"Put them into {target} (or set $SPOCU_DATA), or pass --data-dir DIR with torchvision's root "
        f"(DIR/MNIST/raw/) or Keras's ~/.keras/datasets (DIR/mnist.npz).\n"
        f"Looked in: {looked}.",
    )
    x_train, y_train, x_test, y_test = arrays
    return Source(x_train[:, None], y_train, x_test[:, None], y_test, tuple(str(d) for d in range(10)), origin, False)


#: name -> loader
DATASETS: dict[str, Loader] = {
    "wdbc": _load_wdbc,
    "digits": _load_digits,
    "mnist": _load_mnist,
    "cifar10": _load_cifar10,
}
#: the datasets that come with scikit-learn (no files, no --data-dir, no official test set)
EMBEDDED_DATASETS = ("wdbc", "digits")
#: Default validation size per dataset (a fraction < 1 of the training data, or a count).
DEFAULT_VAL_SIZE = {"wdbc": 0.2, "digits": 0.2, "mnist": 5000, "cifar10": 5000}
#: Default test fraction for the datasets without an official test set.
DEFAULT_TEST_SIZE = 0.2


def _split_size(value: float, n: int, what: str) -> float | int:
    if value <= 0:
        raise ValueError(f"{what} must be > 0, got {value}")
    if value < 1:
        return float(value)
    if value != int(value) or value >= n:
        raise ValueError(f"{what}={value} must be a fraction in (0, 1) or a whole number of samples below {n}")
    return int(value)


def _share(size: float | int) -> str:
    return f"{size:.0%}" if isinstance(size, float) else f"{size:,}"


def split_dataset(
    x,
    y: np.ndarray,
    x_test=None,
    y_test: np.ndarray | None = None,
    *,
    name: str,
    class_names: tuple[str, ...] | list[str] | None = None,
    split_seed: int = 0,
    val_size: float | int = 0.2,
    test_size: float | int | None = None,
) -> tuple[tuple, dict]:
    """Stratified splits, seeded by ``split_seed``: ``(x_train, y_train, x_val, y_val, x_test, y_test), info``.

    Without an official test set (``x_test is None``) a stratified ``test_size`` (default
    :data:`DEFAULT_TEST_SIZE`) is taken first; then a stratified ``val_size`` of the rest. ``x``
    may be an array or a pandas DataFrame (rows are split). ``info`` describes the splits;
    ``class_names`` (indexed by label) name the classes in errors. ``info["test_indices"]``: the
    test samples' positions in ``x`` (drawn splits only; callers move it to :attr:`Dataset.test_indices`).

    Raises:
        ValueError: bad split sizes, or ``test_size`` given for data with an official test set.
        DatasetError: a class too small for a stratified split (the message names ``name``).
    """
    from sklearn.model_selection import train_test_split

    def stratified(a, b, size, what: str, *more):
        try:
            return train_test_split(a, b, *more, test_size=size, stratify=b, random_state=split_seed)
        except ValueError as error:  # a class too small, or a split smaller than the number of classes
            labels, counts = np.unique(b, return_counts=True)
            named = [class_names[label] if class_names is not None else label for label in labels]
            smallest = ", ".join(f"class {named[i]!r}: {counts[i]}" for i in np.argsort(counts, kind="stable")[:3])
            raise DatasetError(
                f"{name}: the stratified {what} split ({_share(size)} of {len(b)} samples) is not possible "
                f"with these class sizes ({smallest}; {len(labels)} classes): {error}"
            ) from None

    info: dict = {}
    n_total = len(y)
    if x_test is None:
        test = _split_size(DEFAULT_TEST_SIZE if test_size is None else test_size, n_total, "test_size")
        # the positions travel with the rows (the same split as without them): the test indices identify the split
        x, x_test, y, y_test, _, info["test_indices"] = stratified(x, y, test, "test", np.arange(n_total))
        info["test_split"] = f"a stratified {_share(test)} of the {n_total} samples; {name} has no official test set"
    else:
        if test_size is not None:
            raise ValueError(f"--test-size does not apply: {name} has an official test set")
        info["test_split"] = "official test set"
    val = _split_size(val_size, len(y), "val_size")
    x_train, x_val, y_train, y_val = stratified(x, y, val, "validation")
    info["val_split"] = f"a stratified {_share(val)} of the {len(y)} training samples"
    return (x_train, y_train, x_val, y_val, x_test, y_test), info


#: the largest float32: a value beyond it cannot be trained on (it becomes inf)
FLOAT32_MAX = float(np.finfo(np.float32).max)


class NotFiniteAfterScaling(DatasetError):
    """A value whose z-score is not a finite float32 (``split``, ``row`` in that split, ``column``, raw ``value``)."""

    def __init__(self, split: str, row: int, column: int, value: float) -> None:
        self.split, self.row, self.column, self.value = split, row, column, value
        super().__init__(
            f"the {split} split's sample {row}, feature {column} ({value!r}) is not finite after standardization"
        )


def standardize_splits(
    x_train: np.ndarray, x_val: np.ndarray, x_test: np.ndarray
) -> tuple[tuple[np.ndarray, ...], str]:
    """z = (x - mean) / sd with the training split's statistics (``StandardScaler``), as float32.

    Features (N, F) per feature; images (N, C, H, W) per channel (one mean and sd for all
    pixels of a channel: per pixel, rare border pixels would become huge z-scores).
    Computed in float64. A feature (channel) constant on the training split is centred only
    (sd taken as 1, scikit-learn's rule), and the description says how many. Returns the three
    standardized arrays and a one-line description.

    Raises:
        NotFiniteAfterScaling: a z-score is not a finite float32 (values beyond float32's range, or
            a tiny training sd); callers name the file, column and row.
    """
    from sklearn.preprocessing import StandardScaler

    if x_train.ndim == 4:

        def rows(a: np.ndarray) -> np.ndarray:
            return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1]).astype(np.float64)

        def unrows(r: np.ndarray, a: np.ndarray) -> np.ndarray:
            n, c, h, w = a.shape
            return r.reshape(n, h, w, c).transpose(0, 3, 1, 2)

        description, unit = "pixels standardized per channel with the training split's mean and sd", "channel"
    else:

        def rows(a: np.ndarray) -> np.ndarray:
            return a.reshape(len(a), -1).astype(np.float64)

        def unrows(r: np.ndarray, a: np.ndarray) -> np.ndarray:
            return r.reshape(a.shape)

        description, unit = "features standardized with the training split's mean and sd", "feature"
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # non-finite results are refused below
        scaler = StandardScaler().fit(rows(x_train))
    constant = int(np.sum(scaler.var_ == 0))
    if constant:
        description += f" ({constant} {unit}{'s' if constant > 1 else ''} constant on the training split: centred only)"

    def standardize(a: np.ndarray, split: str) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            z = scaler.transform(rows(a))
            bad = ~(np.abs(z) <= FLOAT32_MAX)  # NaN and inf included
        if bad.any():
            flat, column = np.argwhere(bad)[0]
            row = flat if a.ndim != 4 else flat // (a.shape[2] * a.shape[3])
            raise NotFiniteAfterScaling(split, int(row), int(column), float(rows(a)[flat, column]))
        return np.ascontiguousarray(unrows(z, a), dtype=np.float32)

    return (
        standardize(x_train, "training"),
        standardize(x_val, "validation"),
        standardize(x_test, "test"),
    ), description


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    progress: bool = True,
    split_seed: int = 0,
    val_size: float | None = None,
    test_size: float | None = None,
    split: str = "fixed",
) -> Dataset:
    """Load ``name`` and split it (stratified, ``split_seed``) into train, validation and test.

    ``split="per-seed"``: the returned dataset is the split with ``split_seed``, and
    :meth:`Dataset.for_seed` draws each run seed's own split (data without an official test set
    only; with one, the split stays fixed).

    Raises:
        ValueError: unknown dataset or bad split sizes.
        DatasetError: data not found, not downloadable, corrupt or a wrong checksum.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLIT_MODES:
        raise ValueError(f"unknown split mode {split!r}; choose one of {', '.join(SPLIT_MODES)}")
    source = DATASETS[name](Path(data_dir) if data_dir else None, download, progress)
    for part, labels in (("training", source.y_train), ("test", source.y_test)):
        if (
            labels is not None
            and len(labels)
            and not (0 <= np.min(labels) and np.max(labels) < len(source.class_names))
        ):
            raise DatasetError(
                f"{name} ({source.origin}): {part} labels range over {np.min(labels)}..{np.max(labels)}, "
                f"outside the {len(source.class_names)} classes 0..{len(source.class_names) - 1}"
            )
    data = (name, source, DEFAULT_VAL_SIZE[name] if val_size is None else val_size, test_size)
    dataset = _prepare_builtin(*data, split_seed=split_seed)
    if split == "per-seed" and source.x_test is None:
        dataset.info["split"] = "per-seed"
        return dataclasses.replace(dataset, resplit=Resplit(_prepare_builtin, data, split_seed))
    dataset.info["split"] = "fixed"
    return dataset


def _prepare_builtin(
    name: str, source: Source, val_size: float | int, test_size: float | None, *, split_seed: int
) -> Dataset:
    """Split and preprocess a built-in dataset's :class:`Source` with ``split_seed``."""
    x, y = np.asarray(source.x_train), np.asarray(source.y_train, dtype=np.int64)
    x_test = None if source.x_test is None else np.asarray(source.x_test)
    y_test = None if source.y_test is None else np.asarray(source.y_test, dtype=np.int64)
    (x_train, y_train, x_val, y_val, x_test, y_test), splits = split_dataset(
        x,
        y,
        x_test,
        y_test,
        name=name,
        split_seed=split_seed,
        val_size=val_size,
        test_size=test_size,
    )
    test_indices = splits.pop("test_indices", None)
    info: dict = {"origin": source.origin, "split_seed": split_seed, **splits}
    if source.tabular:
        (x_train, x_val, x_test), info["preprocessing"] = standardize_splits(x_train, x_val, x_test)
        pixel_scale = None
    else:
        pixel_scale = 1.0 / 255.0
        info["preprocessing"] = "uint8 pixels scaled by 1/255"
    return Dataset(
        name, x_train, y_train, x_val, y_val, x_test, y_test, source.class_names, pixel_scale, info, test_indices
    )
