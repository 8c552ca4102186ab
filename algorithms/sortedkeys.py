"""A sorted list of (key, trial) pairs whose insert, remove and rank cost O(log n).

A plain list kept sorted with `bisect.insort` finds a position in O(log n) but moves half the list on
every insert: at 10^5 members that memmove dominates a decision. Here the items live in blocks of at
most 2 * LOAD, so an insert moves at most a block; a Fenwick tree over the block lengths turns a
position inside a block into a rank, and a rank into a position, in O(log blocks).
"""

from __future__ import annotations

import bisect
from typing import Iterable, Iterator

LOAD = 256


class SortedKeys:
    __slots__ = ("_blocks", "_maxes", "_tree", "_len")

    def __init__(self, items: Iterable[tuple] = ()):
        items = sorted(items)
        self._blocks = [items[i:i + LOAD] for i in range(0, len(items), LOAD)]
        self._len = len(items)
        self._reindex()

    def _reindex(self) -> None:
        self._maxes = [block[-1] for block in self._blocks]
        # A Fenwick tree of block lengths, built in O(blocks).
        tree = [0] + [len(block) for block in self._blocks]
        for i in range(1, len(tree)):
            parent = i + (i & -i)
            if parent < len(tree):
                tree[parent] += tree[i]
        self._tree = tree

    def _grow(self, block: int, delta: int) -> None:
        i = block + 1
        while i < len(self._tree):
            self._tree[i] += delta
            i += i & -i

    def _before(self, block: int) -> int:
        """How many items the blocks before `block` hold."""
        total = 0
        i = block
        while i > 0:
            total += self._tree[i]
            i -= i & -i
        return total

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[tuple]:
        for block in self._blocks:
            yield from block

    def add(self, item: tuple) -> None:
        self._len += 1
        if not self._blocks:
            self._blocks = [[item]]
            self._reindex()
            return
        index = min(bisect.bisect_left(self._maxes, item), len(self._blocks) - 1)
        block = self._blocks[index]
        bisect.insort(block, item)
        self._maxes[index] = block[-1]
        if len(block) > 2 * LOAD:
            self._blocks[index:index + 1] = [block[:LOAD], block[LOAD:]]
            self._reindex()
        else:
            self._grow(index, 1)

    def remove(self, item: tuple) -> bool:
        """Remove `item` if present; say whether it was."""
        index = bisect.bisect_left(self._maxes, item)
        if index == len(self._blocks):
            return False
        block = self._blocks[index]
        position = bisect.bisect_left(block, item)
        if block[position] != item:
            return False
        del block[position]
        self._len -= 1
        if block:
            self._maxes[index] = block[-1]
            self._grow(index, -1)
        else:
            del self._blocks[index]
            self._reindex()
        return True

    def rank(self, item: tuple) -> int:
        """How many items sort strictly before `item`."""
        index = bisect.bisect_left(self._maxes, item)
        if index == len(self._blocks):
            return self._len
        return self._before(index) + bisect.bisect_left(self._blocks[index], item)

    def __getitem__(self, rank: int) -> tuple:
        if not 0 <= rank < self._len:
            raise IndexError(f"rank {rank} is outside 0..{self._len - 1}")
        # Descend the Fenwick tree to the block holding `rank`.
        block, step = 0, 1 << (len(self._tree) - 1).bit_length()
        while step:
            nxt = block + step
            if nxt < len(self._tree) and self._tree[nxt] <= rank:
                block = nxt
                rank -= self._tree[nxt]
            step >>= 1
        return self._blocks[block][rank]

    def first(self) -> tuple | None:
        return self._blocks[0][0] if self._blocks else None
