"""Which example each episode slot plays: reproducible per slot, the core's one source of examples.

``sample_mode="random"``: slot ``i``'s j-th example is ``splitmix64(key_i + j) mod n``, where
``key_i`` is drawn from the slot's seed, so a batch of N slots seeded ``s, s+1, ...`` replays the
episodes of N single envs seeded the same way. ``"sequential"``: one cursor walks the split in
order and hands the next example to each slot that resets (lowest slot first), so every example is
visited exactly once per pass.

Two more fixed streams live here. :func:`subset_indices` is the ``agent_train_size`` subset: the
first N examples of one fixed permutation of the split, the same in every process and on every
machine. :meth:`ExampleSampler.episode_keys` gives each episode of a slot its own key for the
``augment`` option (:mod:`dynalay_env.augment`): a hash of the slot's seed and its episode count, so
``reset(seed=s)`` replays the augmented inputs too.
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


#: The key of the fixed permutation :func:`subset_indices` takes its subsets from.
SUBSET_KEY = 0x5EED_0F_A6E7_5B5E
#: Mixed into a slot's key to give its augmentation stream (independent of its example stream).
AUGMENT_STREAM = 0xA06_3E47_0000_0001


def subset_indices(num_examples: int, size: int | None) -> np.ndarray:
    """The examples an ``agent_train_size=size`` env plays: int64 ``[size]``, ascending indices into
    a split of ``num_examples`` examples (``size`` None: all of them).

    They are the first ``size`` of one fixed permutation of ``range(num_examples)`` (ordered by the
    hash ``splitmix64(i + SUBSET_KEY)``: no random generator whose stream could change between
    NumPy versions), so a smaller subset is part of every larger one. ``ValueError`` when ``size``
    exceeds ``num_examples``."""
    if size is None:
        return np.arange(num_examples, dtype=np.int64)
    if not 1 <= size <= num_examples:
        raise ValueError(f"agent_train_size={size} must be between 1 and the split's {num_examples} examples "
                         f"(or None for all of them)")
    order = np.argsort(splitmix64(np.arange(num_examples, dtype=np.uint64) + np.uint64(SUBSET_KEY)), kind="stable")
    return np.sort(order[:size]).astype(np.int64)


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
        # Augmentation keys: fixed and distinct per slot until a slot is seeded, then from its seed.
        self.augment_keys = splitmix64(np.arange(num_slots, dtype=np.uint64) + np.uint64(AUGMENT_STREAM))
        self.episodes = np.zeros(num_slots, dtype=np.uint64)

    def restart(self, indices: Sequence[int] | np.ndarray, keys: Sequence[int], rewind: bool) -> None:
        """Give slots ``indices`` the stream keys ``keys`` from their first draw on; ``rewind`` (in
        ``sequential`` mode) puts the shared cursor back at the split's start."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(keys) != len(idx):
            raise ValueError(f"got {len(keys)} keys for {len(idx)} slots")
        self.keys[idx] = np.array(list(keys), dtype=np.uint64)
        self.counters[idx] = 0
        self.augment_keys[idx] = splitmix64(self.keys[idx] ^ np.uint64(AUGMENT_STREAM))
        self.episodes[idx] = 0
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

    def episode_keys(self, indices: np.ndarray) -> np.ndarray:
        """One fresh uint64 key ``[len(indices)]`` per slot in ``indices`` for its next episode's
        augmentation: a hash of the slot's augmentation key and how many episodes it has started
        since it was seeded (whatever examples they played)."""
        with np.errstate(over="ignore"):
            keys = splitmix64(self.augment_keys[indices] + self.episodes[indices])
        self.episodes[indices] += np.uint64(1)
        return keys
