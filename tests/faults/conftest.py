"""Fixtures for the fault-injection tests: a seed that is printed, so a failure reproduces."""

from __future__ import annotations

import os
import random

import pytest


@pytest.fixture
def seed() -> int:
    """DSTREAM_FAULT_SEED, or a fresh one; printed (pytest shows it with a failure)."""
    value = int(os.environ.get("DSTREAM_FAULT_SEED") or random.SystemRandom().randrange(1 << 31))
    print(f"fault seed {value}: DSTREAM_FAULT_SEED={value} replays the same faults")
    return value
