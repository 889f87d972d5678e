"""agents.allocator: glibc's thresholds are fixed once, with opt-outs, and nothing happens off glibc.

A fake C library records the ``mallopt`` calls, so the test process's own allocator is left alone.
"""

from __future__ import annotations

import pytest

from agents import allocator
from agents.allocator import DEFAULT_MMAP_THRESHOLD, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, TRIM_FACTOR


class FakeLibc:
    """Records ``mallopt(param, value)`` calls; returns 1 (success) as glibc does."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


@pytest.fixture
def libc(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    fake = FakeLibc()
    monkeypatch.setattr(allocator, "_glibc", lambda: fake)
    for name in (allocator.THRESHOLD_ENV, "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    return fake


def test_fixes_both_thresholds_and_is_idempotent(libc: FakeLibc) -> None:
    expected = [(M_TRIM_THRESHOLD, TRIM_FACTOR * DEFAULT_MMAP_THRESHOLD), (M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD)]
    assert allocator.fix_mmap_threshold() is True
    assert libc.calls == expected
    assert allocator.fix_mmap_threshold() is True
    assert libc.calls == expected * 2


def test_the_environment_chooses_or_opts_out(libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.THRESHOLD_ENV, "262144")
    assert allocator.fix_mmap_threshold() is True
    assert libc.calls[-1] == (M_MMAP_THRESHOLD, 262144)
    monkeypatch.setenv(allocator.THRESHOLD_ENV, "0")
    libc.calls.clear()
    assert allocator.fix_mmap_threshold() is False
    assert libc.calls == []
    for bad in ("1MB", "-1", str(64 << 20)):
        monkeypatch.setenv(allocator.THRESHOLD_ENV, bad)
        with pytest.raises(ValueError, match=allocator.THRESHOLD_ENV):
            allocator.fix_mmap_threshold()
    with pytest.raises(ValueError, match="byte count"):
        allocator.fix_mmap_threshold(threshold=True)


def test_a_value_given_to_glibc_wins(libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    assert allocator.fix_mmap_threshold() is True
    assert libc.calls == [(M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD)]  # the trim threshold is the user's
    libc.calls.clear()
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    assert allocator.fix_mmap_threshold() is False
    assert libc.calls == []


def test_no_op_without_glibc_or_mallopt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(allocator.THRESHOLD_ENV, raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))  # musl, macOS, Windows
    assert allocator._glibc() is None
    assert allocator.fix_mmap_threshold() is False

    class NoMallopt:  # a C library without the symbol: ctypes raises AttributeError
        def __getattr__(self, name: str) -> object:
            raise AttributeError(name)

    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: NoMallopt())
    assert allocator._glibc() is None
    assert allocator.fix_mmap_threshold() is False


@pytest.mark.skipif(allocator.platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_finds_mallopt_in_glibc() -> None:
    assert callable(allocator._glibc().mallopt)
