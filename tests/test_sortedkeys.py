"""SortedKeys against a plain sorted list, with blocks small enough to split and empty often."""

import bisect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rung.algorithms import sortedkeys
from rung.algorithms.sortedkeys import SortedKeys

operations = st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 60)), max_size=300)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(sortedkeys, "LOAD", 3)


@given(st.lists(st.integers(0, 60), max_size=40), operations)
def test_sorted_keys_behave_like_a_sorted_list(initial, steps):
    items = sorted({(float(k), k) for k in initial})
    keys = SortedKeys(items)
    for op, k in steps:
        item = (float(k % 7), k)
        if op == "add" and item not in items:
            bisect.insort(items, item)
            keys.add(item)
        elif op == "remove":
            assert keys.remove(item) == (item in items)
            if item in items:
                items.remove(item)
        assert len(keys) == len(items) and list(keys) == items
        assert keys.first() == (items[0] if items else None)
        probe = (float(k % 7), k)
        assert keys.rank(probe) == bisect.bisect_left(items, probe)
        for rank, expected in enumerate(items):
            assert keys[rank] == expected


def test_a_rank_outside_the_list_is_an_index_error():
    with pytest.raises(IndexError):
        SortedKeys([(1.0, 1)])[1]
