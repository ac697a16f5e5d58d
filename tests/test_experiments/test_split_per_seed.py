"""--split per-seed: each seed's own stratified split, the same in every process; --split fixed and official test sets keep one."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from spocu import cli
from spocu.experiments.config import resolve_config
from spocu.experiments.data.datasets import load_dataset
from spocu.experiments.data.user_data import load_user_dataset
from spocu.experiments.seeding import split_seed_for


def _independent_test_indices(y: np.ndarray, random_state: int) -> np.ndarray:
    """The test positions of a stratified 20% split, from scikit-learn directly."""
    _, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=random_state)
    return test


def test_each_seed_draws_its_own_stratified_split():
    y_all = load_breast_cancer().target
    dataset = load_dataset("wdbc", split="per-seed")
    seen = set()
    for seed in range(4):
        mine = dataset.for_seed(seed)
        expected = _independent_test_indices(y_all, split_seed_for(0, seed))
        np.testing.assert_array_equal(mine.test_indices, expected)
        np.testing.assert_array_equal(mine.y_test, y_all[expected])
        # the same sizes for every seed, and stratified: the class shares of the whole data
        assert (len(mine.y_train), len(mine.y_val), len(mine.y_test)) == (364, 91, 114)
        assert abs(mine.y_test.mean() - y_all.mean()) < 0.01
        # standardized with this split's training statistics
        assert np.abs(mine.x_train.mean(axis=0)).max() < 1e-5
        digest = hashlib.sha256(b"drawn")
        digest.update(expected.astype(np.int64).tobytes())
        assert mine.split_fingerprint() == digest.hexdigest()[:16]
        seen.add(mine.split_fingerprint())
    assert len(seen) == 4
    # a function of (data, seed) only: recomputed, and in another process (pickled), the same split
    again = pickle.loads(pickle.dumps(dataset)).for_seed(2)
    np.testing.assert_array_equal(again.x_test, dataset.for_seed(2).x_test)
    assert again.fingerprint() == dataset.for_seed(2).fingerprint()


def test_fixed_split_is_the_same_for_every_seed():
    dataset = load_dataset("wdbc")  # split="fixed"
    assert dataset.for_seed(0) is dataset and dataset.for_seed(7) is dataset and dataset.info["split"] == "fixed"
    np.testing.assert_array_equal(
        np.sort(dataset.test_indices), np.sort(_independent_test_indices(load_breast_cancer().target, 0))
    )


def test_user_table_per_seed_and_npz_with_a_test_part_keeps_it(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80), "label": ["x", "y"] * 40})
    frame.to_csv(tmp_path / "t.csv", index=False)
    table = load_user_dataset(tmp_path / "t.csv", split="per-seed")
    assert table.for_seed(0).split_fingerprint() != table.for_seed(1).split_fingerprint()
    np.savez(
        tmp_path / "a.npz",
        x_train=rng.normal(size=(40, 3)),
        y_train=np.arange(40) % 2,
        x_test=rng.normal(size=(10, 3)),
        y_test=np.arange(10) % 2,
    )
    arrays = load_user_dataset(tmp_path / "a.npz", split="per-seed")
    assert arrays.resplit is None and arrays.info["split"] == "fixed" and arrays.for_seed(3) is arrays


def test_split_mode_in_the_protocol():
    assert resolve_config({}).split == "per-seed" and resolve_config({}).protocol()["split"] == "per-seed"
    fixed = resolve_config({"split": "fixed"})
    assert "split" not in fixed.protocol()  # absent = fixed: protocols from before --split keep their hash
    assert resolve_config({"dataset": "mnist"}).split == "fixed"  # an official test set keeps its split
    with pytest.raises(ValueError, match="--split per-seed applies to data without an official test set"):
        resolve_config({"dataset": "cifar10", "split": "per-seed"})


def test_resume_of_a_fixed_split_directory_is_refused_clearly(tmp_path, capsys):
    grid = [
        "compare",
        "--no-progress",
        "--activations",
        "relu",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "o"),
    ]
    assert cli.main([*grid, "--split", "fixed"]) == 0
    capsys.readouterr()
    assert cli.main(grid) == 2
    err = capsys.readouterr().err
    assert "were made with --split fixed" in err and "add --split fixed to resume them" in err
    assert cli.main([*grid, "--split", "fixed"]) == 0
    assert "1 of 1 runs already finished" in " ".join(capsys.readouterr().out.split())


def test_tuning_data_has_no_test_samples_for_any_seed():
    from spocu.experiments.run.tuning import without_test

    tuning = without_test(load_dataset("wdbc", split="per-seed"))
    for seed in (0, 3):
        mine = tuning.for_seed(seed)
        assert len(mine.y_test) == 0 and len(mine.x_test) == 0
        # the training and validation samples are those of the seed's own split
        full = load_dataset("wdbc", split="per-seed").for_seed(seed)
        np.testing.assert_array_equal(mine.x_val, full.x_val)
