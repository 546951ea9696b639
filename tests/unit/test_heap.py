from __future__ import annotations

import gc

from common.heap import freeze_long_lived


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def test_freeze_collects_garbage_then_leaves_the_survivors_out_of_collections() -> None:
    garbage = _Node()
    del garbage
    kept = [_Node()]
    try:
        freeze_long_lived()
        assert not any(isinstance(o, _Node) for o in gc.get_objects())  # the kept one is frozen, the other collected
        assert gc.get_freeze_count() > 0
        assert kept[0].me is kept[0]
    finally:
        gc.unfreeze()
