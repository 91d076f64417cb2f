"""Content-keyed caches (radinfill.model.memo)."""

from __future__ import annotations

import numpy as np
import pytest

from radinfill import fingerprint
from radinfill.model import memo


def test_digest_tells_values_nan_shape_and_dtype_apart() -> None:
    field = np.arange(6, dtype=np.float32).reshape(2, 3)
    with_nan = field.copy()
    with_nan[0, 0] = np.nan
    variants = [field, with_nan, field.reshape(3, 2), field.astype(np.float64), field.T.copy()]
    keys = {fingerprint.digest(array) for array in variants}
    assert len(keys) == len(variants)
    assert fingerprint.digest(field, 1) != fingerprint.digest(field, 2)
    assert fingerprint.digest(field.copy()) == fingerprint.digest(field)  # content, not identity
    assert fingerprint.digest(np.asfortranarray(field)) == fingerprint.digest(field)


def test_the_least_recently_used_entry_is_evicted() -> None:
    cache: memo.ContentCache[str] = memo.ContentCache(2)
    computed: list[str] = []

    def compute(value: str):
        return lambda: computed.append(value) or value

    assert cache.get(b"a", compute("a")) == "a"
    cache.get(b"b", compute("b"))
    assert cache.get(b"a", compute("never")) == "a"  # a used again: b is now the oldest
    cache.get(b"c", compute("c"))
    assert len(cache) == 2
    cache.get(b"b", compute("b again"))
    assert computed == ["a", "b", "c", "b again"]
    cache.clear()
    assert len(cache) == 0


def test_a_cache_needs_room() -> None:
    with pytest.raises(ValueError, match="at least one"):
        memo.ContentCache(0)


def test_a_byte_budget_evicts_the_oldest_and_keeps_nothing_larger_than_itself() -> None:
    cache: memo.ContentCache[bytes] = memo.ContentCache(3, max_bytes=10, sizeof=len)
    computed: list[bytes] = []

    def compute(value: bytes):
        return lambda: computed.append(value) or value

    cache.get(b"a", compute(b"aaaa"))
    cache.get(b"b", compute(b"bbbb"))
    assert (len(cache), cache.nbytes) == (2, 8)
    cache.get(b"c", compute(b"cccc"))  # 12 bytes > 10: the oldest goes, though 3 would fit
    assert (len(cache), cache.nbytes) == (2, 8)
    assert cache.get(b"big", compute(b"x" * 11)) == b"x" * 11  # returned, never kept
    assert (len(cache), cache.nbytes) == (2, 8)
    cache.get(b"big", compute(b"x" * 11))
    cache.get(b"b", compute(b"never"))
    cache.get(b"a", compute(b"aaaa again"))
    assert computed == [b"aaaa", b"bbbb", b"cccc", b"x" * 11, b"x" * 11, b"aaaa again"]
    with pytest.raises(ValueError, match="go together"):
        memo.ContentCache(2, max_bytes=10)


def test_release_empties_every_cache() -> None:
    caches = [memo.ContentCache[int](2), memo.ContentCache[int](3)]
    for n, cache in enumerate(caches):
        cache.get(b"k", lambda n=n: n)
    memo.release()
    assert [len(cache) for cache in caches] == [0, 0]
