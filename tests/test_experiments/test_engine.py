"""The PyTorch engine on tiny image data: pixel scaling, the untouched test set, pairing."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from spocu.experiments.activations import parse_activation
from spocu.experiments.config import resolve_config
from spocu.experiments.data.datasets import Dataset
from spocu.experiments.run import torch_engine as engine_torch


def _tiny_images(seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)

    def split(n):
        return rng.integers(0, 256, (n, 3, 12, 12), dtype=np.uint8), rng.integers(0, 10, n)

    (xt, yt), (xv, yv), (xs, ys) = split(60), split(20), split(30)
    return Dataset("tiny", xt, yt, xv, yv, xs, ys, tuple("0123456789"), 1 / 255)


@pytest.fixture(scope="module")
def config():
    return resolve_config({"dataset": "cifar10", "model": "seed-cnn", "epochs": 2, "batch_size": 16})


def _history(result):
    return [(e.train_loss, e.train_accuracy, e.val_loss, e.val_accuracy) for e in result.epochs]


def test_uint8_pixels_are_scaled_by_1_over_255(config):
    images = _tiny_images()
    scaled = dataclasses.replace(
        images,
        x_train=images.x_train.astype(np.float32) * np.float32(1 / 255),
        x_val=images.x_val.astype(np.float32) * np.float32(1 / 255),
        x_test=images.x_test.astype(np.float32) * np.float32(1 / 255),
        pixel_scale=None,
    )
    relu = parse_activation("relu")
    a = engine_torch.train_run(config, images, relu, seed=1, threads=1)
    b = engine_torch.train_run(config, scaled, relu, seed=1, threads=1)
    assert _history(a) == _history(b) and a.test_predictions == b.test_predictions
    assert a.num_parameters == 896 + 18_496 + 64 * 1 * 1 * 10 + 10  # 12 -> 10 -> 5 -> 3 -> 1


def test_the_test_set_is_used_only_after_training(config):
    images = _tiny_images()
    relabeled = dataclasses.replace(images, y_test=(images.y_test + 1) % 10)
    spocu = parse_activation("spocu(c=1)")
    a = engine_torch.train_run(config, images, spocu, seed=2, threads=1)
    b = engine_torch.train_run(config, relabeled, spocu, seed=2, threads=1)
    assert _history(a) == _history(b)  # training and validation never saw the test labels
    assert a.test_predictions == b.test_predictions
    expected = np.mean(np.array(a.test_predictions) == images.y_test)
    assert a.test_accuracy == pytest.approx(expected) and len(a.test_predictions) == 30


def test_seeds_change_the_run_and_repeat_exactly(config):
    images = _tiny_images()
    selu = parse_activation("selu")
    a = engine_torch.train_run(config, images, selu, seed=3, threads=1)
    b = engine_torch.train_run(config, images, selu, seed=3, threads=1)
    c = engine_torch.train_run(config, images, selu, seed=4, threads=1)
    assert _history(a) == _history(b)
    assert _history(a) != _history(c)
    assert a.init == "lecun-normal" and a.threads == 1 and a.device == "cpu"


_WRITES_TO_FD_2 = r"""
import os, sys
from spocu.experiments.run.engine import _tensorflow_info_lines_dropped
with _tensorflow_info_lines_dropped():
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"I0000 00:00:1796391202.399854   11535 port.cc:153] oneDNN custom operations are on.\n")
    os.write(2, b"E0000 00:00:1796391202.399854   11535 real.cc:1] a real error\n")
    print("from Python", file=sys.stderr)
print("after", file=sys.stderr)
"""


@pytest.mark.parametrize("level, dropped", [("3", True), ("1", True), ("0", False), ("", False)])
def test_tensorflow_info_lines_are_dropped_from_file_descriptor_2_only_when_info_is_off(level, dropped):
    """TensorFlow 2.21 writes its oneDNN note (absl INFO, with absl's preamble) to fd 2 at import, before it reads
    TF_CPP_MIN_LOG_LEVEL; importing the Keras engine drops those lines when the level asks for no INFO, and keeps
    every other line, in order."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    done = subprocess.run([sys.executable, "-c", _WRITES_TO_FD_2], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[-3:] == ["E0000 00:00:1796391202.399854   11535 real.cc:1] a real error", "from Python", "after"]
    assert (len(lines) == 3) is dropped, lines
