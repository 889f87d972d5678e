"""Which example each episode slot plays: reproducible per slot, the core's one source of examples.

``sample_mode="random"``: slot ``i``'s j-th example is ``splitmix64(key_i + j) mod n``, where
``key_i`` is drawn from the slot's seed, so a batch of N slots seeded ``s, s+1, ...`` replays the
episodes of N single envs seeded the same way. ``"sequential"``: one cursor walks the split in
order and hands the next example to each slot that resets (lowest slot first), so every example is
visited exactly once per pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gymnasium.utils import seeding


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised SplitMix64 finaliser on uint64 (a counter-based PRNG: hash of key + counter)."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def seed_to_key(seed: int | None) -> int:
    """The sampling key of a slot seeded ``seed`` (drawn with Gymnasium's seeding for one convention)."""
    rng, _ = seeding.np_random(seed)
    return int(rng.integers(0, 2**63 - 1))


class ExampleSampler:
    """The example streams of ``num_slots`` episode slots over a split of ``num_examples`` examples.

    Each slot holds a key and a counter (``random``); all slots share one cursor (``sequential``).
    """

    def __init__(self, num_slots: int, num_examples: int, sample_mode: str) -> None:
        self.num_examples = int(num_examples)
        self.sample_mode = sample_mode
        self.keys = np.zeros(num_slots, dtype=np.uint64)
        self.counters = np.zeros(num_slots, dtype=np.uint64)
        #: Next example of the ``sequential`` walk.
        self.cursor = 0

    def restart(self, indices: Sequence[int] | np.ndarray, keys: Sequence[int], rewind: bool) -> None:
        """Give slots ``indices`` the stream keys ``keys`` from their first draw on; ``rewind`` (in
        ``sequential`` mode) puts the shared cursor back at the split's start."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(keys) != len(idx):
            raise ValueError(f"got {len(keys)} keys for {len(idx)} slots")
        self.keys[idx] = np.array(list(keys), dtype=np.uint64)
        self.counters[idx] = 0
        if rewind and self.sample_mode == "sequential":
            self.cursor = 0

    def draw(self, indices: np.ndarray) -> np.ndarray:
        """The next example index ``[len(indices)]`` int64 of each slot in ``indices``."""
        if self.sample_mode == "random":
            with np.errstate(over="ignore"):
                draws = splitmix64(self.keys[indices] + self.counters[indices])
            self.counters[indices] += np.uint64(1)
            return (draws % np.uint64(self.num_examples)).astype(np.int64)
        examples = (self.cursor + np.arange(len(indices))) % self.num_examples
        self.cursor = int((self.cursor + len(indices)) % self.num_examples)
        return examples
