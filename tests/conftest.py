"""Shared fixtures: one real Embedder per test session (loading the model takes a moment)."""

from __future__ import annotations

import pytest

import coarch


@pytest.fixture(scope="session")
def embedder() -> coarch.Embedder:
    return coarch.Embedder()
