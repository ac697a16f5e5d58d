"""Fixtures for the experiment tests; tiny_data.py (next to this file) writes the real data formats."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from spocu._llvm import preload_triton_before_tensorflow

sys.path.insert(0, os.path.dirname(__file__))

# test_keras_engine.py imports Keras (and so TensorFlow) in this process; Triton, which torch's Inductor
# loads for spocu.torch's fused kernels, must come first: both bundle LLVM, and the other order aborts.
preload_triton_before_tensorflow()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty download cache ($SPOCU_DATA) for the test."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("SPOCU_DATA", str(directory))
    return directory
