"""The user's own data for ``spocu compare --dataset PATH``: tables, arrays and image folders.

:func:`load_user_dataset` reads one of

- a **table**, ``.csv`` or ``.parquet`` (pandas; parquet through pyarrow): ``target`` names the
  label column (default: the last one). Numeric feature columns (booleans count as 0/1) are
  standardized with the training split's mean and sd; non-numeric feature columns are one-hot
  encoded with scikit-learn's ``OneHotEncoder`` fitted on the training split (a category seen
  only in validation or test data encodes as all zeros). Features: the numeric columns, then
  the one-hot columns, as float32.
- **arrays**, ``.npz`` (read with ``allow_pickle=False``) holding ``x`` and ``y``, or ``x_train``,
  ``y_train``, ``x_test``, ``y_test`` (the official test split is kept). ``x`` is features
  ``(N, F)`` or images ``(N, H, W)`` / ``(N, H, W, C)``, channels-last as Keras stores them
  (turned into the engines' ``(N, C, H, W)``). uint8 images are scaled by 1/255 as MNIST and
  CIFAR-10 are; other images are standardized per channel, features per feature.
- an **image folder**: one subfolder of images per class (torchvision's ``ImageFolder`` layout),
  or ``train/`` and ``test/`` folders each in that layout. PNG, JPEG and BMP files are read with
  Pillow; other files are ignored. All images must share one size unless ``image_size=(H, W)``
  resizes them (bilinear). One channel if every image is grayscale, else RGB (an alpha channel is
  dropped). Pixels stay uint8, scaled by 1/255.

Labels (integers, strings or booleans; floats only if every value is a whole number) are numbered
0, 1, ... in sorted order; ``Dataset.info["class_mapping"]`` records ``{class: number}``. A target
that looks continuous -- non-integral floats, or more than :data:`MAX_DISTINCT_LABELS` distinct
values in at most :data:`SMALL_TABLE_ROWS` rows -- is refused: this is classification only.

Splits are those of the built-in wdbc (:func:`spocu.experiments.data.datasets.split_dataset`):
stratified test 20% unless the data has its own, validation 20% of the rest, seeded by
``split_seed``. ``Dataset.info["content_sha256"]`` is a hash of the file's bytes (of every image's
relative path and bytes for a folder): the data's fingerprint for the protocol.

Bad data raises :class:`~spocu.experiments.data.download.DatasetError` naming the file and the problem
(missing values, a missing target column, one class only, a class too small to split, mixed
image sizes, an unreadable image, an empty folder) before anything is written.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "flowers.csv"
    >>> rows = ["size,colour,kind"] + [f"{i % 7},{'red' if i % 3 else 'blue'},{'rose' if i % 2 else 'tulip'}" for i in range(40)]
    >>> _ = path.write_text("\\n".join(rows) + "\\n")
    >>> ds = load_user_dataset(path)
    >>> ds.info["class_mapping"], ds.info["one_hot"], ds.input_shape
    ({'rose': 0, 'tulip': 1}, {'colour': ['blue', 'red']}, (3,))
    >>> len(ds.y_train), len(ds.y_val), len(ds.y_test)
    (25, 7, 8)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np

from spocu.experiments.data.datasets import (
    FLOAT32_MAX,
    Dataset,
    NotFiniteAfterScaling,
    Resplit,
    split_dataset,
    standardize_splits,
)
from spocu.experiments.data.download import DatasetError

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_DISTINCT_LABELS",
    "MAX_CATEGORIES",
    "SMALL_TABLE_ROWS",
    "TABLE_SUFFIXES",
    "is_user_dataset",
    "load_user_dataset",
]

TABLE_SUFFIXES = (".csv", ".parquet")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: A target with more distinct values than this, in a table of at most SMALL_TABLE_ROWS rows, looks continuous.
MAX_DISTINCT_LABELS = 100
SMALL_TABLE_ROWS = 10_000
#: A text feature column with more categories than this looks like an identifier or free text, not a category.
MAX_CATEGORIES = 100
#: Validation share of the training data (the built-in wdbc's).
VAL_SIZE = 0.2


def is_user_dataset(text: str) -> bool:
    """True if ``text`` names a file or folder (a path) rather than a built-in dataset."""
    path = Path(text).expanduser()
    return path.suffix.lower() in TABLE_SUFFIXES + (".npz",) or path.exists() or "/" in text or "\\" in text


def load_user_dataset(
    path: str | Path,
    *,
    target: str | None = None,
    image_size: tuple[int, int] | None = None,
    split_seed: int = 0,
    val_size: float | None = None,
    test_size: float | None = None,
    allow_leak: bool = False,
    split: str = "fixed",
) -> Dataset:
    """Read ``path`` (table, ``.npz`` or image folder), number the classes, split and preprocess it.

    ``allow_leak``: keep a feature column that equals the label or maps one-to-one onto it
    (refused by default: the model would read the answer from it).
    ``split="per-seed"``: data without its own test part gets :meth:`Dataset.for_seed`, each run
    seed's own split (see :func:`~spocu.experiments.data.datasets.load_dataset`).

    Raises:
        DatasetError: the file or folder is missing, unreadable or unusable; the message names it.
        ValueError: bad split sizes, or an option that does not apply to this kind of data.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if not path.is_dir() and not path.is_file():  # a FIFO or device would block or never end
        raise DatasetError(f"{path}: not a regular file or folder")
    if image_size is not None and not path.is_dir():
        raise ValueError(f"{path}: --image-size applies to image folders, not to {path.suffix or 'this'} files")
    if target is not None and path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"{path}: --target applies to .csv and .parquet tables")
    try:  # a file or folder we may not read: say so, not "not a zip archive" or "empty folder" later
        if path.is_dir():
            next(os.scandir(path), None)
        else:
            open(path, "rb").close()
    except OSError as error:
        raise DatasetError(f"{path}: cannot read it ({error.strerror or error})") from None
    if path.is_dir():
        loaded = _read_image_folder(path, image_size)
    elif path.suffix.lower() in TABLE_SUFFIXES:
        loaded = _read_table(path, target, allow_leak)
    elif path.suffix.lower() == ".npz":
        loaded = _read_npz(path, allow_leak)
    else:
        raise DatasetError(
            f"{path}: not a dataset; expected a .csv or .parquet table, an .npz file or a folder of images"
        )
    data = (path, loaded, val_size, test_size)
    dataset = _prepare(*data, split_seed=split_seed)
    if split == "per-seed" and loaded[2] is None:  # no test part of its own: every seed draws its split
        dataset.info["split"] = "per-seed"
        return dataclasses.replace(dataset, resplit=Resplit(_prepare, data, split_seed))
    dataset.info["split"] = "fixed"
    return dataset


def _prepare(path: Path, loaded: tuple, val_size: float | None, test_size: float | None, *, split_seed: int) -> Dataset:
    """Split and preprocess what a reader returned, with ``split_seed``."""
    x, y, x_test, y_test, classes, info, content = loaded
    info = dict(info)  # the reader's description is shared by every seed's split: never changed in place
    (x_train, y_train, x_val, y_val, x_test, y_test), splits = split_dataset(
        x,
        y,
        x_test,
        y_test,
        name=str(path),
        class_names=classes,
        split_seed=split_seed,
        val_size=VAL_SIZE if val_size is None else val_size,
        test_size=test_size,
    )
    test_indices = splits.pop("test_indices", None)
    info.update(origin=str(path), split_seed=split_seed, **splits)
    kind = info.pop("_kind")
    try:
        if kind == "table":
            x_train, x_val, x_test = _encode_table(x_train, x_val, x_test, info)
            pixel_scale = None
        elif x_train.ndim == 4 and x_train.dtype == np.uint8:
            pixel_scale = 1.0 / 255.0
            info["preprocessing"] = "uint8 pixels scaled by 1/255"
        else:
            (x_train, x_val, x_test), info["preprocessing"] = standardize_splits(x_train, x_val, x_test)
            pixel_scale = None
    except NotFiniteAfterScaling as error:
        raise _name_unscalable(path, error, kind, x) from None
    info["class_mapping"] = {name: i for i, name in enumerate(classes)}
    info["content_sha256"] = content
    return Dataset(
        path.name, x_train, y_train, x_val, y_val, x_test, y_test, tuple(classes), pixel_scale, info, test_indices
    )


def _name_unscalable(path: Path, error: NotFiniteAfterScaling, kind: str, x) -> DatasetError:
    """The file's column and row of a value whose z-score is not a finite float32 (found by its value)."""
    value, name = error.value, getattr(error, "column_name", None)
    if kind == "table" and name is not None:
        rows = np.flatnonzero(x[name].to_numpy(dtype=np.float64) == value)
        where = f"column {name!r}, row {int(rows[0]) + 1}" if len(rows) else f"column {name!r}"
    elif np.ndim(x) == 2:
        rows = np.flatnonzero(np.asarray(x)[:, error.column] == value)
        where = f"x[{int(rows[0])}, {error.column}]" if len(rows) else f"feature {error.column}"
    else:
        where = f"channel {error.column} of sample {error.row} of the {error.split} split"
    return DatasetError(
        f"{path}: {where} = {value!r} is not a finite float32 once standardized with the training split's mean and sd "
        "(far from the column's other values); fix or drop it, or rescale the column"
    )


# ----------------------------------------------------------------------------- labels


def _number_labels(
    values: np.ndarray, where: str, extra: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Classes numbered in sorted order: (labels, extra labels, class names). Refuses continuous targets."""
    everything = values if extra is None else np.concatenate([values, extra])
    if everything.dtype.kind == "f":
        if not np.all(np.isfinite(everything)):
            raise DatasetError(f"{where}: {int(np.sum(~np.isfinite(everything)))} labels are missing or not finite")
        if not np.all(everything == np.round(everything)):
            raise DatasetError(
                f"{where}: the labels are non-integral floats (e.g. {everything[everything != np.round(everything)][0].item()!r}): "
                "that looks like a continuous target; spocu compare does classification only"
            )
        everything = everything.astype(np.int64)
    elif everything.dtype.kind == "O":  # mixed types: compared as text (bytes decoded, not shown as b'...')
        everything = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in everything])
    elif everything.dtype.kind == "S":  # bytes labels (npz files written from bytes): their text, not b'...'
        everything = np.char.decode(everything, "utf-8", "replace")
    elif everything.dtype.kind not in "iubUS":
        raise DatasetError(
            f"{where}: labels of type {everything.dtype} are not class labels (integers, strings or booleans)"
        )
    classes, codes = np.unique(everything, return_inverse=True)
    if everything.dtype.kind in "iu" and len(classes) > MAX_DISTINCT_LABELS and len(everything) <= SMALL_TABLE_ROWS:
        raise DatasetError(
            f"{where}: {len(classes)} distinct label values in {len(everything)} rows looks like a continuous target "
            f"(more than {MAX_DISTINCT_LABELS} for at most {SMALL_TABLE_ROWS:,} rows); spocu compare does classification only"
        )
    names = [str(c.item() if hasattr(c, "item") else c) for c in classes]
    if len(names) < 2:
        raise DatasetError(f"{where}: one class only ({names[0]!r}); a comparison needs at least two classes")
    if len(set(names)) != len(names):
        raise DatasetError(f"{where}: class labels {names} are not distinct as text")
    codes = codes.reshape(-1).astype(np.int64)
    if extra is None:
        return codes, None, names
    return codes[: len(values)], codes[len(values) :], names


# ----------------------------------------------------------------------------- tables


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _raw_header(path: Path) -> list[str]:
    """The column names as the file has them (pandas renames a repeated ``label`` to ``label.1``)."""
    if path.suffix.lower() == ".csv":
        import csv

        with open(path, newline="", encoding="utf-8-sig", errors="replace") as stream:
            return [name.strip() for name in next(csv.reader(stream), [])]
    try:
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except Exception:  # not readable as parquet: pandas says why below
        return []


def _check_duplicate_columns(path: Path, header: list[str]) -> None:
    seen: dict[str, list[int]] = {}
    for number, name in enumerate(header, 1):
        if name:
            seen.setdefault(name, []).append(number)
    repeated = {name: numbers for name, numbers in seen.items() if len(numbers) > 1}
    if repeated:
        listed = "; ".join(f"{name!r} (columns {', '.join(map(str, numbers))})" for name, numbers in repeated.items())
        raise DatasetError(f"{path}: column names repeat: {listed}; give every column its own name")


def _check_leaks(where: str, columns: dict[str, np.ndarray], y: np.ndarray, target: str) -> None:
    """Refuse a feature that equals the label or maps one-to-one onto it (the model would read the answer)."""
    classes = len(np.unique(y))
    for name, values in columns.items():
        values = np.asarray(values)
        if values.dtype.kind == "O":
            values = values.astype(str)
        distinct, codes = np.unique(values, return_inverse=True)
        if len(distinct) != classes:
            continue
        if len(np.unique(codes.reshape(-1) * classes + y)) == classes:  # each value goes with one class only
            raise DatasetError(
                f"{where}: feature {name} maps one-to-one onto the label {target} ({classes} values, one per class): "
                "the model would read the answer from it; drop it, or pass --allow-leak if it is meant to be there"
            )


def _read_table(path: Path, target: str | None, allow_leak: bool = False):
    import pandas as pd

    _check_duplicate_columns(path, _raw_header(path))
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path)
        else:
            frame = pd.read_parquet(path)
    except ImportError as error:
        raise DatasetError(
            f"{path}: reading it needs {error.name or 'pyarrow'}: pip install 'spocu[experiments]'"
        ) from None
    except Exception as error:  # pandas/pyarrow raise many types for a malformed file
        raise DatasetError(f"{path}: cannot read it as {path.suffix[1:]} ({type(error).__name__}: {error})") from None
    frame.columns = [str(c) for c in frame.columns]
    index_column = _saved_index_column(frame)
    if index_column is not None:  # df.to_csv(path) wrote the row numbers: the row order, not a feature
        frame = frame.drop(columns=[index_column])
    columns = list(frame.columns)
    if len(columns) < 2:
        separator = next(
            (
                name
                for mark, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars"))
                if columns and mark in columns[0]
            ),
            None,
        )
        hint = (
            f" (the header seems separated by {separator}; spocu reads comma-separated files: save it with commas)"
            if separator
            else ""
        )
        raise DatasetError(
            f"{path}: {len(columns)} column(s) ({', '.join(columns) or 'none'}); a table needs feature columns and a label column{hint}"
        )
    if len(frame) == 0:
        raise DatasetError(f"{path}: the table has no rows")
    target = columns[-1] if target is None else target
    if target not in columns:
        raise DatasetError(f"{path}: no column {target!r} for --target; the columns are: {', '.join(columns)}")
    missing = frame.isna().sum()
    missing = missing[missing > 0]
    if len(missing):
        rows = int(frame.isna().any(axis=1).sum())
        listed = ", ".join(f"{name} ({count})" for name, count in missing.items())
        raise DatasetError(
            f"{path}: missing values in {len(missing)} column(s): {listed}; {rows} of {len(frame)} rows affected. "
            "Fill or drop them first"
        )
    y, _, classes = _number_labels(frame[target].to_numpy(), f"{path}: column {target!r}")
    features = frame.drop(columns=[target])
    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    categorical = [c for c in features.columns if c not in numeric]
    for column in categorical:
        try:
            count = features[column].nunique()
        except TypeError:  # unhashable cells: lists, arrays or dicts (parquet's nested types)
            kind = type(features[column].iloc[0]).__name__
            raise DatasetError(
                f"{path}: column {column!r} holds {kind} values, not numbers or text; flatten it into columns or drop it"
            ) from None
        if count > MAX_CATEGORIES:
            raise DatasetError(
                f"{path}: text column {column!r} has {count} distinct values (more than {MAX_CATEGORIES}): an identifier "
                "or free text, not a category; drop it or encode it yourself"
            )
    for column in categorical:  # integers beyond int64 come as text: numbers, not categories
        numbers = pd.to_numeric(features[column].astype(str), errors="coerce")
        if numbers.notna().all():
            row = int(np.argmax(np.abs(numbers.to_numpy(dtype=np.float64))))
            raise DatasetError(
                f"{path}: column {column!r} holds numbers pandas cannot read as int64 or float (row {row + 1}: "
                f"{str(features[column].iloc[row])[:30]}, too large an integer?); store them as floats or drop the column"
            )
    infinite = {c: int(np.isinf(features[c].to_numpy(dtype=np.float64)).sum()) for c in numeric}
    infinite = {c: n for c, n in infinite.items() if n}
    if infinite:
        listed = ", ".join(f"{name} ({count})" for name, count in infinite.items())
        raise DatasetError(
            f"{path}: infinite values in {len(infinite)} column(s): {listed}; replace or drop them first"
        )
    for column in numeric:
        values = features[column].to_numpy(dtype=np.float64)
        huge = np.flatnonzero(np.abs(values) > FLOAT32_MAX)
        if len(huge):
            raise DatasetError(
                f"{path}: column {column!r}, row {int(huge[0]) + 1} holds {float(values[huge[0]])!r}, beyond float32's range "
                f"(±{FLOAT32_MAX:.3g}) that training uses ({len(huge)} such value(s)); rescale the column or drop it"
            )
    if not allow_leak:
        _check_leaks(str(path), {repr(c): features[c].to_numpy() for c in features.columns}, y, repr(target))
    info = {
        "_kind": "table",
        "numeric_columns": numeric,
        "categorical_columns": categorical,
        "target": target,
        "target_is_default": target == columns[-1],
    }
    if index_column is not None:
        info["dropped_index_column"] = index_column
    return features, y, None, None, classes, info, _file_sha256(path)


def _saved_index_column(frame) -> str | None:
    """The first column if it is a saved DataFrame index: no header, and the row numbers 0..n-1 (or 1..n).

    As a feature it would hand the model the row order (in a file sorted by class, the label).
    """
    import pandas as pd

    if len(frame.columns) < 3 or not frame.columns[0].startswith("Unnamed: 0"):
        return None
    first = frame[frame.columns[0]]
    if not pd.api.types.is_integer_dtype(first):
        return None
    values = first.to_numpy()
    rows = np.arange(len(values))
    return frame.columns[0] if np.array_equal(values, rows) or np.array_equal(values, rows + 1) else None


def _encode_table(train, val, test, info: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numeric columns standardized, text columns one-hot encoded, both fitted on the training split."""
    from sklearn.preprocessing import OneHotEncoder

    numeric, categorical = info.pop("numeric_columns"), info.pop("categorical_columns")
    parts: list[tuple[np.ndarray, ...]] = []
    names = list(numeric)
    described = []
    if numeric:
        arrays = [frame[numeric].to_numpy(dtype=np.float64) for frame in (train, val, test)]
        try:
            standardized, _ = standardize_splits(*arrays)  # the table's own description below
        except NotFiniteAfterScaling as error:
            error.column_name = numeric[error.column]
            raise
        constant = [c for c, a in zip(numeric, arrays[0].T) if np.all(a == a[0])]
        parts.append(standardized)
        described.append(f"{len(numeric)} numeric columns standardized with the training split's mean and sd")
        if constant:  # StandardScaler takes sd 1 there: centred only, all zero in training
            described.append(
                f"{len(constant)} constant on the training split, centred only ({', '.join(constant[:5])}"
                + (", ..." if len(constant) > 5 else "")
                + ")"
            )
    info["one_hot"] = {}
    if categorical:
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)
        encoder.fit(train[categorical].astype(str))
        parts.append(tuple(encoder.transform(frame[categorical].astype(str)) for frame in (train, val, test)))
        for column, categories in zip(categorical, encoder.categories_):
            info["one_hot"][column] = [str(c) for c in categories]
            names += [f"{column}={c}" for c in categories]
        described.append(
            f"{len(categorical)} text columns one-hot encoded ({sum(len(c) for c in encoder.categories_)} columns; "
            "categories of the training split, others all zero)"
        )
    if "dropped_index_column" in info:
        described.insert(
            0,
            "the first column, without a header and holding the row numbers (a saved DataFrame "
            "index, df.to_csv's default), dropped: it would give the model the row order",
        )
    info["preprocessing"] = "; ".join(described)
    info["features"] = names
    return tuple(np.ascontiguousarray(np.hstack([p[i] for p in parts]), dtype=np.float32) for i in range(3))


# ----------------------------------------------------------------------------- npz


def _images_channels_first(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 2:
        return x
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3, 4):
            raise DatasetError(
                f"{where}: images of shape {x.shape[1:]} look channels-first; store them channels-last (N, H, W, C) as Keras does"
            )
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    raise DatasetError(
        f"{where}: {x.ndim}-D array {x.shape}; expected features (N, F) or images (N, H, W) or (N, H, W, C)"
    )


def _check_npz_headers(path: Path, names: set[str]) -> None:
    """Each array's declared shape must fit its stored bytes (a forged header would ask for any memory)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if name not in names:
                continue
            with archive.open(info) as stream:
                version = np.lib.format.read_magic(stream)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(stream)
            if any(d == 0 for d in shape[1:]):
                raise DatasetError(f"{path}: {name} has shape {shape}; a sample must hold at least one value")
            declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if declared > info.file_size:
                raise DatasetError(
                    f"{path}: {name} declares shape {shape} ({declared / 2**30:,.1f} GiB) but holds {info.file_size:,} bytes: "
                    "a damaged or forged file; write it again with numpy.savez"
                )


def _read_npz(path: Path, allow_leak: bool = False):
    import zipfile

    if not zipfile.is_zipfile(path):
        raise DatasetError(f"{path}: not a readable .npz file (not a zip archive of arrays; write it with numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            layouts = ({"x", "y"}, {"x_train", "y_train", "x_test", "y_test"})
            if all(names <= keys for names in layouts):  # which to use would be a guess
                raise DatasetError(f"{path}: holds both x and y and x_train, y_train, x_test, y_test; keep one layout")
            layout = next((names for names in layouts if names <= keys), None)
            if layout is None:
                raise DatasetError(
                    f"{path}: holds {', '.join(sorted(keys)) or 'no arrays'}; expected arrays x and y, "
                    "or x_train, y_train, x_test and y_test"
                )
            _check_npz_headers(path, set(layout))
            arrays = {name: archive[name] for name in layout}
    except DatasetError:
        raise
    except MemoryError:
        raise DatasetError(f"{path}: its arrays do not fit in this machine's memory") from None
    except ValueError as error:  # object arrays need pickle, which is off for safety
        raise DatasetError(
            f"{path}: cannot read it without pickle ({error}); save plain numeric or string arrays"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise DatasetError(f"{path}: not a readable .npz file ({error})") from None
    official = "x_test" in arrays
    pairs = [("x_train", "y_train"), ("x_test", "y_test")] if official else [("x", "y")]
    for x_name, y_name in pairs:
        x, y = arrays[x_name], arrays[y_name]
        if y.ndim == 2 and y.shape[1] == 1:  # Keras's CIFAR-10 stores labels as (N, 1)
            y = arrays[y_name] = y[:, 0]
        if y.ndim != 1:
            raise DatasetError(f"{path}: {y_name} has shape {y.shape}; expected one label per sample (N,)")
        if len(y) == 0:
            raise DatasetError(f"{path}: {x_name} and {y_name} hold no samples")
        if x.ndim < 2:
            raise DatasetError(
                f"{path}: {x_name} has shape {x.shape}; expected features (N, F) or images (N, H, W) or (N, H, W, C) "
                "(one feature per sample is (N, 1))"
            )
        if len(x) != len(y):
            raise DatasetError(f"{path}: {x_name} {x.shape} and {y_name} {y.shape} do not have one label per sample")
        if x.dtype.kind not in "biuf":
            raise DatasetError(f"{path}: {x_name} has dtype {x.dtype}; expected numbers")
        if x.dtype.kind == "f":
            bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            if bad.any():
                raise DatasetError(
                    f"{path}: {x_name} has missing (NaN) or infinite values in {int(bad.sum())} of {len(x)} samples"
                )
            huge = np.argwhere(np.abs(x) > FLOAT32_MAX)
            if len(huge):
                at = ", ".join(map(str, huge[0]))
                raise DatasetError(
                    f"{path}: {x_name}[{at}] = {float(x[tuple(huge[0])])!r} is beyond float32's range (±{FLOAT32_MAX:.3g}) that "
                    f"training uses ({len(huge)} such value(s)); rescale it or drop it"
                )
        if min(x.shape[1:], default=1) == 0:
            raise DatasetError(f"{path}: {x_name} has shape {x.shape}; a sample must hold at least one value")
        arrays[x_name] = _images_channels_first(x, f"{path}: {x_name}")
    if official:
        if arrays["x_train"].dtype != arrays["x_test"].dtype:
            # uint8 images are scaled by 1/255 and anything else standardized: one rule for both splits
            raise DatasetError(
                f"{path}: x_train has dtype {arrays['x_train'].dtype} and x_test {arrays['x_test'].dtype}; "
                "store both splits with one dtype (e.g. uint8 pixels, or float32 values on one scale)"
            )
        if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
            raise DatasetError(
                f"{path}: x_train samples {arrays['x_train'].shape[1:]} and x_test samples {arrays['x_test'].shape[1:]} differ in shape"
            )
        y, y_test, classes = _number_labels(arrays["y_train"], f"{path}: y_train and y_test", arrays["y_test"])
        absent = sorted(set(np.unique(y_test)) - set(np.unique(y)))
        if absent:
            raise DatasetError(f"{path}: classes {[classes[i] for i in absent]} are in y_test but not in y_train")
        x, x_test = arrays["x_train"], arrays["x_test"]
    else:
        y, _, classes = _number_labels(arrays["y"], f"{path}: y")
        x, x_test, y_test = arrays["x"], None, None
    if not allow_leak and x.ndim == 2:
        _check_leaks(str(path), {f"x[:, {j}]": x[:, j] for j in _few_valued_columns(x, len(classes))}, y, "y")
    return x, y, x_test, y_test, classes, {"_kind": "arrays"}, _file_sha256(path)


def _few_valued_columns(x: np.ndarray, count: int) -> list[int]:
    """The columns of ``x`` holding exactly ``count`` distinct values (one sort for all of them)."""
    ordered = np.sort(x, axis=0)
    distinct = 1 + (np.diff(ordered, axis=0) != 0).sum(axis=0)
    return [int(j) for j in np.flatnonzero(distinct == count)]


# ----------------------------------------------------------------------------- image folders


def _class_folders(root: Path) -> dict[str, list[Path]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(
            f"{root}: empty folder: no class subfolders (expected one folder of images per class, or train/ and test/)"
        )
    found = {}
    for folder in folders:
        # a class folder that is a link to the root (or above it) would count every image again under its name
        if folder.is_symlink() and (folder.resolve() == root.resolve() or folder.resolve() in root.resolve().parents):
            raise DatasetError(
                f"{folder}: a symbolic link to {folder.resolve()}, which holds this folder: a loop, not a class folder"
            )
        try:  # rglob skips what it cannot list: an unreadable class folder would look empty
            next(os.scandir(folder), None)
        except OSError as error:
            raise DatasetError(f"{folder}: cannot read this class folder ({error.strerror or error})") from None
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise DatasetError(
                f"{folder}: empty class folder: no {'/'.join(s[1:].upper() for s in IMAGE_SUFFIXES)} images"
            )
        found[folder.name] = files
    return found


def _image_header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (height, width)) from the file's header (the pixels are read later)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():  # a large image is refused by the memory check, in one line, not warned about
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.mode, (image.height, image.width)
    except Exception as error:  # Pillow raises OSError, UnidentifiedImageError, SyntaxError, ValueError ...
        raise DatasetError(f"{path}: unreadable image ({type(error).__name__}: {error})") from None


def _image_pixels(path: Path, mode: str, height: int, width: int) -> np.ndarray:
    """(C, H, W) uint8 pixels of ``path`` in ``mode`` ("L" or "RGB"), resized (bilinear) to height x width."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = image.convert(mode)
                if image.size != (width, height):
                    image = image.resize((width, height), Image.Resampling.BILINEAR)
                data = np.asarray(image, dtype=np.uint8)
    except Exception as error:  # a truncated or corrupt file fails only when its pixels are decoded
        raise DatasetError(f"{path}: unreadable image ({type(error).__name__}: {error})") from None
    return data[None] if data.ndim == 2 else data.transpose(2, 0, 1)


def _check_pixels_fit(root: Path, count: int, channels: int, height: int, width: int) -> None:
    """Refuse images whose pixels (uint8, then a float32 copy for training) cannot fit in this machine's memory."""
    need = count * channels * height * width * (1 + 4)
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return
    if need > have:
        raise DatasetError(
            f"{root}: {count} images of {channels}x{height}x{width} pixels need about {need / 2**30:,.1f} GiB of memory, "
            f"more than this machine's {have / 2**30:,.1f} GiB: pass a smaller --image-size H W"
        )


def _read_image_folder(root: Path, image_size: tuple[int, int] | None):
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise ValueError(f"--image-size needs two positive numbers H W, got {image_size}")
    subfolders = {p.name for p in root.iterdir() if p.is_dir()}
    split_layout = {"train", "test"} <= subfolders
    others = sorted(name for name in subfolders - {"train", "test"} if not name.startswith("."))
    if split_layout and others:  # class folders beside train/ and test/ would be silently left out
        raise DatasetError(
            f"{root}: has train/ and test/ and also the folders {others}; put every class folder inside train/ and test/, "
            "or use one folder per class without train/ and test/"
        )
    parts = (
        {"train": _class_folders(root / "train"), "test": _class_folders(root / "test")}
        if split_layout
        else {"train": _class_folders(root)}
    )
    classes = sorted(parts["train"])
    if len(classes) < 2:
        raise DatasetError(f"{root}: one class only ({classes[0]!r}); a comparison needs at least two class folders")
    if split_layout:
        unknown = sorted(set(parts["test"]) - set(classes))
        if unknown:
            raise DatasetError(f"{root / 'test'}: class folders {unknown} have no counterpart in {root / 'train'}")
    entries = {
        part: [(file, classes.index(name)) for name, files in folders.items() for file in files]
        for part, folders in parts.items()
    }
    files = [file for part in entries.values() for file, _ in part]
    headers = {file: _image_header(file) for file in files}
    unsupported = [file for file, (mode, _) in headers.items() if mode.startswith("I") or mode == "F"]
    if unsupported:
        raise DatasetError(
            f"{unsupported[0]}: {headers[unsupported[0]][0]} images (16-bit or float pixels) are not supported "
            f"({len(unsupported)} such files); save 8-bit grayscale or RGB images"
        )
    grayscale = all(mode in ("1", "L", "LA") for mode, _ in headers.values())
    sizes: dict[tuple[int, int], list[Path]] = {}
    for file, (_, size) in headers.items():
        sizes.setdefault(size, []).append(file)
    if len(sizes) > 1 and image_size is None:
        listed = "; ".join(
            f"{h}x{w}: {len(group)} (e.g. {group[0]})"
            for (h, w), group in sorted(sizes.items(), key=lambda kv: -len(kv[1]))[:4]
        )
        raise DatasetError(
            f"{root}: images of {len(sizes)} different sizes (H x W: {listed}); pass --image-size H W to resize them all"
        )
    height, width = image_size if image_size is not None else next(iter(sizes))
    _check_pixels_fit(root, len(files), 1 if grayscale else 3, height, width)

    def array(part: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
        pixels = np.empty((len(part), 1 if grayscale else 3, height, width), dtype=np.uint8)
        for i, (file, _) in enumerate(part):
            pixels[i] = _image_pixels(file, "L" if grayscale else "RGB", height, width)
        return pixels, np.array([label for _, label in part], dtype=np.int64)

    x, y = array(entries["train"])
    x_test, y_test = array(entries["test"]) if split_layout else (None, None)
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file.read_bytes())
    info = {
        "_kind": "images",
        "layout": "train/ and test/ folders" if split_layout else "one folder per class",
        "image_mode": "grayscale" if grayscale else "RGB (alpha dropped)",
    }
    if image_size is not None:
        info["resized_to"] = [height, width]
    return x, y, x_test, y_test, classes, info, digest.hexdigest()[:16]
