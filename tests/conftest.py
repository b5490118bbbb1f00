"""Shared fixtures: one real Embedder per test session (loading the model takes a moment)."""

from __future__ import annotations

import pytest

import coarch


@pytest.fixture(scope="session")
def embedder() -> coarch.Embedder:
    # fp32, not the default auto: tests compare its vectors with fp32 goldens and with each other
    # exactly, whatever the machine's bf16 support.
    return coarch.Embedder(precision="fp32")
