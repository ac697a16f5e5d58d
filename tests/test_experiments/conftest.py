"""Fixtures for the experiment tests; tiny_data.py (next to this file) writes the real data formats."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty download cache ($SPOCU_DATA) for the test."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("SPOCU_DATA", str(directory))
    return directory
