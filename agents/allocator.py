"""glibc allocator settings for a long training process: fixed mmap and trim thresholds.

glibc's ``malloc`` serves a request of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at start) with a
mapping of its own, returned to the system when freed; smaller ones come from the heap. By default
the threshold is *dynamic*: freeing a mapped block raises it to that block's size (up to 32 MiB). A
PPO run frees its first rollout buffer's observations (5.3 MB with 1,024 envs; SB3's
``RolloutBuffer.get`` swaps the arrays for flattened copies) and so lifts the threshold to that
size: from then on rollout buffers, minibatch tensors and batch-sized activations come from the
heap, which keeps the holes they leave and trims its top and grows it back as they come and go.

:func:`fix_mmap_threshold` sets the threshold once with ``mallopt`` (which turns the dynamic
adjustment off) to 1 MiB, so such buffers stay mapped, and the trim threshold (free bytes at the
heap's top kept before returning them) to 8 x that, so the heap's top is not returned and faulted
back in at every step. The resident memory of a long PPO run with these settings is recorded in
``benchmarks/results/memory_soak_ppo_cpu.txt`` (``benchmarks/memory_soak.py ppo``).
It is process-wide and only decides where glibc places blocks, never what the program computes.
``agents.training.train`` applies it when a run starts.

Opt out with ``DYNALAY_MMAP_THRESHOLD=0``; set it to a byte count to choose the threshold. A
threshold given to glibc itself (``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``, or
``malloc.mmap_threshold`` / ``malloc.trim_threshold`` in ``GLIBC_TUNABLES``) wins. Off glibc (macOS,
Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Any

#: ``mallopt`` parameters of ``<malloc.h>``: free bytes at the heap's top kept before trimming it;
#: requests of at least this many bytes get their own mapping.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: The default fixed threshold, bytes: large enough that small tensors and Python objects stay in the
#: heap, small enough that the env's batch-sized activations (MB) and rollout buffers are mapped.
DEFAULT_MMAP_THRESHOLD = 1 << 20
#: Environment variable: bytes for the threshold; 0 leaves glibc's dynamic threshold alone.
THRESHOLD_ENV = "DYNALAY_MMAP_THRESHOLD"
#: The trim threshold, as a multiple of the mmap threshold (glibc's dynamic rule keeps 2x).
TRIM_FACTOR = 8
#: Per ``mallopt`` parameter, glibc's own environment variable and tunable for it: a value the user
#: gave there wins.
_GLIBC_SETTINGS = {M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", "malloc.mmap_threshold"),
                   M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", "malloc.trim_threshold")}
#: glibc accepts up to ``HEAP_MAX_SIZE / 2`` (32 MiB on 64-bit systems).
_MAX_THRESHOLD = 32 << 20


def _glibc() -> Any | None:
    """The process's C library when it is glibc and has ``mallopt``, else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded into this process, glibc's among them
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return libc


def requested_threshold() -> int:
    """The threshold in bytes from ``$DYNALAY_MMAP_THRESHOLD`` (default :data:`DEFAULT_MMAP_THRESHOLD`);
    0 = opted out. ``ValueError`` for anything but an integer in ``[0, 32 MiB]``."""
    raw = os.environ.get(THRESHOLD_ENV, "").strip()
    if not raw:
        return DEFAULT_MMAP_THRESHOLD
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= _MAX_THRESHOLD:
        raise ValueError(f"{THRESHOLD_ENV} must be a byte count in [0, {_MAX_THRESHOLD}] (0 = leave glibc's "
                         f"dynamic mmap threshold alone), got {raw!r}")
    return value


def user_set(param: int) -> bool:
    """Whether the ``mallopt`` parameter ``param`` was given to glibc itself (its environment variable
    or ``GLIBC_TUNABLES``)."""
    variable, tunable = _GLIBC_SETTINGS[param]
    return variable in os.environ or tunable in os.environ.get("GLIBC_TUNABLES", "")


def fix_mmap_threshold(threshold: int | None = None) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes (default: :func:`requested_threshold`) and its
    trim threshold at ``TRIM_FACTOR`` times that, each unless the user gave glibc a value for it.

    Returns True when the mmap threshold was set; False when opted out (threshold 0), when the user
    set glibc's own mmap threshold, or off glibc. Idempotent: calling it again sets the same values.
    """
    value = requested_threshold() if threshold is None else threshold
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_THRESHOLD:
        raise ValueError(f"threshold must be a byte count in [0, {_MAX_THRESHOLD}] (0 = leave glibc's dynamic "
                         f"mmap threshold alone), got {threshold!r}")
    if value == 0 or user_set(M_MMAP_THRESHOLD):
        return False
    libc = _glibc()
    if libc is None:
        return False
    if not user_set(M_TRIM_THRESHOLD):
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_FACTOR * value)
    return libc.mallopt(M_MMAP_THRESHOLD, value) == 1
