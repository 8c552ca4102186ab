"""Derived random generators.

Every random draw in `rung.algorithms` comes from a generator built afresh from
(study seed, purpose, trial, counter) with numpy's `SeedSequence`. Nothing is carried between draws,
so a draw does not depend on the order in which other draws happened, and replaying a journal needs no
generator state: the counter, where one is needed, lives in the study state.
"""

from __future__ import annotations

import zlib

import numpy as np


def purpose_code(purpose: str) -> int:
    """A stable integer for a purpose name (Python's `hash` of a str changes between processes)."""
    return zlib.crc32(purpose.encode("utf-8"))


def derive_rng(seed: int, purpose: str, trial: int = 0, counter: int = 0) -> np.random.Generator:
    if seed < 0 or trial < 0 or counter < 0:
        raise ValueError(f"seed, trial and counter must be >= 0, got {seed}, {trial}, {counter}")
    sequence = np.random.SeedSequence([seed, purpose_code(purpose), trial, counter])
    return np.random.Generator(np.random.PCG64(sequence))
