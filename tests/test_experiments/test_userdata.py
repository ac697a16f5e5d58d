"""--dataset PATH: tables, npz arrays and image folders the tests write; every bad-data case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from spocu.experiments.data.download import DatasetError
from spocu.experiments.data.user_data import is_user_dataset, load_user_dataset


def _table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "height": rng.normal(170, 10, n),
            "weight": rng.normal(70, 15, n),
            "colour": rng.choice(["red", "green", "blue"], n),
            "species": np.where(
                np.arange(n) % 3 == 0, "setosa", np.where(np.arange(n) % 3 == 1, "versicolor", "virginica")
            ),
        }
    )


def test_csv_with_string_labels_and_a_categorical_column(tmp_path):
    frame = _table()
    path = tmp_path / "iris.csv"
    frame.to_csv(path, index=False)
    ds = load_user_dataset(path, split_seed=3)
    assert ds.class_names == ("setosa", "versicolor", "virginica")
    assert ds.info["class_mapping"] == {"setosa": 0, "versicolor": 1, "virginica": 2}
    assert ds.info["target"] == "species"
    assert ds.info["one_hot"] == {"colour": ["blue", "green", "red"]}
    assert ds.info["features"] == ["height", "weight", "colour=blue", "colour=green", "colour=red"]
    assert ds.input_shape == (5,) and ds.x_train.dtype == np.float32
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (38, 10, 12)  # stratified 20% test, 20% of the rest
    # numeric columns standardized with training statistics only; one-hot columns stay 0/1
    np.testing.assert_allclose(ds.x_train[:, :2].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train[:, :2].std(axis=0), 1, atol=1e-4)
    assert set(np.unique(ds.x_train[:, 2:])) == {0.0, 1.0} and np.all(ds.x_train[:, 2:].sum(axis=1) == 1)
    assert np.bincount(ds.y_test).tolist() == [4, 4, 4]  # stratified


def test_a_saved_dataframe_index_is_dropped_not_used_as_a_feature(tmp_path):
    """df.to_csv(path) writes the row numbers as a headerless first column; in a file sorted by class
    they give the label away, so they are dropped (and the report says so)."""
    frame = _table().sort_values("species", kind="stable").reset_index(drop=True)
    path = tmp_path / "sorted.csv"
    frame.to_csv(path)  # index=True: the pandas default
    assert open(path).readline().startswith(",height")
    ds = load_user_dataset(path, split_seed=3)
    assert ds.info["features"] == ["height", "weight", "colour=blue", "colour=green", "colour=red"]
    assert ds.info["dropped_index_column"] == "Unnamed: 0"
    assert "row numbers" in ds.info["preprocessing"]
    # a headerless column that is not a row counter is data: kept (under pandas's name for it)
    frame.insert(0, "", np.arange(len(frame)) * 7 % 11)
    frame.to_csv(path, index=False)
    kept = load_user_dataset(path, split_seed=3)
    assert kept.info["features"][0] == "Unnamed: 0" and "dropped_index_column" not in kept.info


def test_csv_labels_map_back_to_their_rows(tmp_path):
    # one feature equal to the label's number: after the split, standardized feature order == label order
    n = 40
    labels = np.array(["b", "a"] * (n // 2))
    frame = pd.DataFrame({"f": np.where(labels == "a", 10.0, 20.0) + np.arange(n) * 1e-3, "label": labels})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    ds = load_user_dataset(path, target="label")
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert np.all((x[:, 0] > 0) == (y == 1))  # 'b' (class 1) has the larger feature


def test_parquet_with_target_option_and_integer_labels(tmp_path):
    frame = _table()
    frame["grade"] = np.arange(len(frame)) % 2 * 5  # labels 0 and 5 -> classes 0, 1
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    ds = load_user_dataset(path, target="grade")
    assert ds.class_names == ("0", "5") and ds.info["class_mapping"] == {"0": 0, "5": 1}
    assert ds.info["one_hot"] == {"colour": ["blue", "green", "red"], "species": ["setosa", "versicolor", "virginica"]}
    assert ds.input_shape == (8,)


def test_fingerprint_follows_the_content(tmp_path):
    path = tmp_path / "t.csv"
    _table().to_csv(path, index=False)
    first = load_user_dataset(path)
    assert load_user_dataset(path).info["content_sha256"] == first.info["content_sha256"]
    _table(seed=1).to_csv(path, index=False)
    second = load_user_dataset(path)
    assert second.info["content_sha256"] != first.info["content_sha256"]
    assert second.fingerprint() != first.fingerprint()


def _images(n: int, h: int, w: int, c: int | None, seed: int = 0) -> np.ndarray:
    shape = (n, h, w) if c is None else (n, h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_npz_x_y_images_channels_last(tmp_path):
    x = _images(50, 6, 5, 3)
    y = np.arange(50) % 2
    path = tmp_path / "a.npz"
    np.savez(path, x=x, y=y)
    ds = load_user_dataset(path)
    assert ds.input_shape == (3, 6, 5) and ds.x_train.dtype == np.uint8 and ds.pixel_scale == pytest.approx(1 / 255)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (32, 8, 10)
    # every sample is one of the file's images, moved to channels-first, with its own label
    originals = {x[i].transpose(2, 0, 1).tobytes(): y[i] for i in range(50)}
    for xs, ys in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        for image, label in zip(xs, ys):
            assert originals[image.tobytes()] == label


def test_npz_official_split_grayscale_and_keras_shaped_labels(tmp_path):
    path = tmp_path / "b.npz"
    np.savez(
        path,
        x_train=_images(40, 4, 4, None),
        y_train=(np.arange(40) % 4)[:, None],
        x_test=_images(8, 4, 4, None, 1),
        y_test=np.arange(8) % 4,
    )
    ds = load_user_dataset(path)
    assert ds.input_shape == (1, 4, 4) and ds.num_classes == 4
    assert len(ds.y_test) == 8 and ds.info["test_split"] == "official test set"
    np.testing.assert_array_equal(ds.x_test[:, 0], np.load(path)["x_test"])
    assert len(ds.y_train) + len(ds.y_val) == 40


def test_npz_float_features_are_standardized(tmp_path):
    path = tmp_path / "f.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(5, 3, (60, 4)), y=np.array(["x", "y", "z"] * 20))
    ds = load_user_dataset(path)
    assert ds.class_names == ("x", "y", "z") and ds.input_shape == (4,)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-5)


def test_bytes_labels_are_named_by_their_text(tmp_path):
    path = tmp_path / "b.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(0, 1, (60, 3)), y=np.array([b"pos", b"neg", "caf\u00e9".encode()] * 20))
    ds = load_user_dataset(path)
    assert ds.class_names == ("caf\u00e9", "neg", "pos")  # sorted by their bytes, shown as text
    assert ds.info["class_mapping"] == {"caf\u00e9": 0, "neg": 1, "pos": 2}


def _png_folder(root, classes: dict[str, int], size=(5, 4), mode="L", seed=0):
    rng = np.random.default_rng(seed)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            shape = (size[0], size[1]) if mode == "L" else (size[0], size[1], 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / name / f"{i}.png")


def test_image_folder_imagefolder_layout_grayscale(tmp_path):
    _png_folder(tmp_path / "pics", {"cat": 10, "dog": 10})
    ds = load_user_dataset(tmp_path / "pics")
    assert ds.class_names == ("cat", "dog") and ds.input_shape == (1, 5, 4) and ds.pixel_scale == pytest.approx(1 / 255)
    assert ds.info["image_mode"] == "grayscale" and ds.info["layout"] == "one folder per class"
    files = {np.asarray(Image.open(p)).tobytes(): p.parent.name for p in (tmp_path / "pics").rglob("*.png")}
    for image, label in zip(ds.x_train, ds.y_train):
        assert files[image[0].tobytes()] == ds.class_names[label]


def test_image_folder_train_test_layout_rgb_and_resize(tmp_path):
    _png_folder(tmp_path / "d" / "train", {"a": 6, "b": 6}, size=(6, 6), mode="RGB")
    _png_folder(tmp_path / "d" / "test", {"a": 2, "b": 2}, size=(8, 8), mode="RGB", seed=1)
    (tmp_path / "d" / "train" / "a" / "notes.txt").write_text("ignored")
    with pytest.raises(DatasetError, match=r"2 different sizes.*--image-size"):
        load_user_dataset(tmp_path / "d")
    ds = load_user_dataset(tmp_path / "d", image_size=(4, 3))
    assert ds.input_shape == (3, 4, 3) and len(ds.y_test) == 4 and ds.info["layout"] == "train/ and test/ folders"
    assert ds.info["image_mode"].startswith("RGB") and ds.info["resized_to"] == [4, 3]
    assert len(ds.y_train) + len(ds.y_val) == 12


# ----------------------------------------------------------------------------- bad data


def test_missing_values_name_columns_and_rows(tmp_path):
    frame = _table()
    frame.loc[[1, 2], "height"] = np.nan
    frame.loc[[2, 5, 7], "colour"] = None
    path = tmp_path / "m.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(
        DatasetError, match=r"m\.csv: missing values in 2 column\(s\): height \(2\), colour \(3\); 4 of 60 rows"
    ):
        load_user_dataset(path)


def test_missing_target_lists_the_columns(tmp_path):
    path = tmp_path / "t.csv"
    _table().to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"t\.csv: no column 'label'.*height, weight, colour, species"):
        load_user_dataset(path, target="label")


def test_one_class_only(tmp_path):
    frame = _table()
    frame["species"] = "setosa"
    path = tmp_path / "one.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"one\.csv.*one class only \('setosa'\)"):
        load_user_dataset(path)
    _png_folder(tmp_path / "imgs", {"only": 5})
    with pytest.raises(DatasetError, match=r"imgs: one class only"):
        load_user_dataset(tmp_path / "imgs")


def test_class_too_small_for_the_split(tmp_path):
    frame = _table()
    frame.loc[0, "species"] = "rare"
    path = tmp_path / "rare.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"rare\.csv: the stratified test split .*class 'rare': 1"):
        load_user_dataset(path)


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.linspace(0, 1, 60), "non-integral floats"),
        (np.arange(200), "200 distinct label values"),
    ],
)
def test_continuous_target_is_refused(tmp_path, labels, message):
    n = len(labels)
    path = tmp_path / "c.csv"
    pd.DataFrame({"f": np.arange(n), "target": labels}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match=rf"c\.csv: column 'target'.*{message}.*classification only"):
        load_user_dataset(path)


def test_whole_float_labels_are_classes(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(40, 2)), y=(np.arange(40) % 2).astype(float))
    assert load_user_dataset(path).class_names == ("0", "1")


def test_unreadable_image_names_the_file(tmp_path):
    _png_folder(tmp_path / "p", {"a": 5, "b": 5})
    (tmp_path / "p" / "b" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match=r"broken\.png: unreadable image"):
        load_user_dataset(tmp_path / "p")


def test_truncated_image_names_the_file(tmp_path):
    _png_folder(tmp_path / "p", {"a": 5, "b": 5}, size=(16, 16))
    good = (tmp_path / "p" / "a" / "0.png").read_bytes()
    (tmp_path / "p" / "a" / "0.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match=r"0\.png: unreadable image"):
        load_user_dataset(tmp_path / "p")


def test_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: empty folder"):
        load_user_dataset(tmp_path / "empty")
    _png_folder(tmp_path / "x", {"a": 3})
    (tmp_path / "x" / "b").mkdir()
    with pytest.raises(DatasetError, match=r"x/b: empty class folder"):
        load_user_dataset(tmp_path / "x")


def test_npz_problems(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, data=np.zeros((4, 2)))
    with pytest.raises(DatasetError, match=r"bad\.npz: holds data; expected arrays x and y"):
        load_user_dataset(path)
    np.savez(path, x=np.zeros((4, 2)), y=np.array([{"a": 1}] * 4, dtype=object))
    with pytest.raises(DatasetError, match=r"bad\.npz: cannot read it without pickle"):
        load_user_dataset(path)
    x = np.ones((20, 2))
    x[3, 1] = np.nan
    np.savez(path, x=x, y=np.arange(20) % 2)
    with pytest.raises(DatasetError, match=r"bad\.npz: x has missing \(NaN\) or infinite values in 1 of 20 samples"):
        load_user_dataset(path)
    np.savez(path, x=np.ones((20, 2)), y=np.arange(19) % 2)
    with pytest.raises(DatasetError, match=r"do not have one label per sample"):
        load_user_dataset(path)
    np.savez(path, x=np.ones((20, 3, 8, 8), dtype=np.uint8), y=np.arange(20) % 2)
    with pytest.raises(DatasetError, match=r"channels-first"):
        load_user_dataset(path)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DatasetError, match=r"junk\.npz: not a readable \.npz"):
        load_user_dataset(tmp_path / "junk.npz")


def test_unreadable_table_and_missing_path_and_options(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"nope")
    with pytest.raises(DatasetError, match=r"x\.parquet: cannot read it as parquet"):
        load_user_dataset(tmp_path / "x.parquet")
    with pytest.raises(DatasetError, match=r"nothere\.csv: no such file"):
        load_user_dataset(tmp_path / "nothere.csv")
    np.savez(tmp_path / "a.npz", x=np.ones((4, 2)), y=np.arange(4) % 2)
    with pytest.raises(ValueError, match="--image-size applies to image folders"):
        load_user_dataset(tmp_path / "a.npz", image_size=(4, 4))
    with pytest.raises(ValueError, match="--target applies to"):
        load_user_dataset(tmp_path / "a.npz", target="y")


def test_is_user_dataset():
    assert not is_user_dataset("wdbc") and not is_user_dataset("cifar10")
    assert is_user_dataset("data.csv") and is_user_dataset("./pics") and is_user_dataset("x.npz")


# ----------------------------------------------------------------------------- hostile files (QA)


def test_infinite_table_values_name_the_column(tmp_path):
    frame = _table()
    frame.loc[[2, 7], "weight"] = np.inf
    frame.to_csv(tmp_path / "inf.csv", index=False)
    with pytest.raises(DatasetError, match=r"inf\.csv: infinite values in 1 column\(s\): weight \(2\)"):
        load_user_dataset(tmp_path / "inf.csv")


def test_continuous_target_message_shows_a_plain_value(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.ones((20, 2)), y=np.arange(20) % 2 + 0.5)
    with pytest.raises(DatasetError, match=r"non-integral floats \(e\.g\. 0\.5\)"):
        load_user_dataset(tmp_path / "f.npz")


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((0, 3), np.float32), "y": np.zeros(0, np.int64)}, r"e\.npz: x and y hold no samples"),
        ({"x": np.ones(20), "y": np.arange(20) % 2}, r"e\.npz: x has shape \(20,\); expected features \(N, F\)"),
        (
            {
                "x_train": np.zeros((20, 4, 4, 1), np.uint8),
                "y_train": np.arange(20) % 2,
                "x_test": np.zeros((4, 4, 4, 1), np.float32),
                "y_test": np.arange(4) % 2,
            },
            r"e\.npz: x_train has dtype uint8 and x_test float32",
        ),
    ],
    ids=["no-samples", "1-d-x", "split-dtypes-differ"],
)
def test_npz_hostile_arrays(tmp_path, arrays, message):
    np.savez(tmp_path / "e.npz", **arrays)
    with pytest.raises(DatasetError, match=message):
        load_user_dataset(tmp_path / "e.npz")


def test_class_folder_linking_back_to_the_root_is_a_loop(tmp_path):
    _png_folder(tmp_path / "p", {"a": 5, "b": 5})
    (tmp_path / "p" / "c").symlink_to(tmp_path / "p")  # would count every image a second time, as class c
    with pytest.raises(DatasetError, match=r"p/c: a symbolic link to .*: a loop"):
        load_user_dataset(tmp_path / "p")


def test_link_inside_a_class_folder_is_not_followed(tmp_path):
    _png_folder(tmp_path / "p", {"a": 5, "b": 5})
    (tmp_path / "p" / "a" / "up").symlink_to(tmp_path / "p")
    ds = load_user_dataset(tmp_path / "p")
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 10


def test_image_size_too_big_for_memory_is_refused_before_allocating(tmp_path):
    _png_folder(tmp_path / "p", {"a": 5, "b": 5})
    with pytest.raises(DatasetError, match=r"10 images of 1x1000000x1000000 pixels need about .* GiB of memory"):
        load_user_dataset(tmp_path / "p", image_size=(1_000_000, 1_000_000))


def test_nested_parquet_column_is_refused_naming_it(tmp_path):
    frame = _table()
    frame.insert(1, "tags", [[1, 2]] * len(frame))
    frame.to_parquet(tmp_path / "nested.parquet")
    with pytest.raises(DatasetError, match=r"nested\.parquet: column 'tags' holds ndarray values, not numbers or text"):
        load_user_dataset(tmp_path / "nested.parquet")


def test_npz_with_both_layouts_is_ambiguous(tmp_path):
    x, y = np.ones((20, 2)), np.arange(20) % 2
    np.savez(tmp_path / "both.npz", x=x, y=y, x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    with pytest.raises(
        DatasetError, match=r"both\.npz: holds both x and y and x_train, y_train, x_test, y_test; keep one layout"
    ):
        load_user_dataset(tmp_path / "both.npz")


def test_class_folders_beside_train_and_test_are_not_dropped_silently(tmp_path):
    _png_folder(tmp_path / "p" / "train", {"a": 5, "b": 5})
    _png_folder(tmp_path / "p" / "test", {"a": 2, "b": 2})
    _png_folder(tmp_path / "p", {"c": 5})
    with pytest.raises(DatasetError, match=r"p: has train/ and test/ and also the folders \['c'\]"):
        load_user_dataset(tmp_path / "p")


def test_fifo_named_csv_is_refused_instead_of_blocking(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.csv")  # pandas would wait for a writer forever
    with pytest.raises(DatasetError, match=r"pipe\.csv: not a regular file or folder"):
        load_user_dataset(tmp_path / "pipe.csv")


def test_semicolon_separated_csv_gets_a_hint(tmp_path):
    (tmp_path / "semi.csv").write_text("a;b;kind\n1;2;x\n3;4;y\n")
    with pytest.raises(DatasetError, match=r"semi\.csv: 1 column\(s\) \(a;b;kind\).*separated by semicolons"):
        load_user_dataset(tmp_path / "semi.csv")
