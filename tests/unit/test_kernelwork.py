"""shoal/engine/kernelwork.py: containers' sandbox work runs side by side, node-wide work alone and in order."""

from __future__ import annotations

import asyncio
import threading

from shoal.engine.kernelwork import KernelWork, SharedExclusive

WAIT_S = 10.0  # a bound for a thread that must come, never a measured time


def test_two_containers_sandbox_work_runs_side_by_side() -> None:
    work = KernelWork(sandbox_threads=2)
    both_in = threading.Barrier(2, timeout=WAIT_S)  # broken (an error) unless both run at once

    async def run() -> list[int]:
        return await asyncio.gather(work.sandbox(lambda: both_in.wait()), work.sandbox(lambda: both_in.wait()))

    try:
        assert sorted(asyncio.run(run())) == [0, 1]
    finally:
        work.shutdown()


def test_node_work_waits_until_no_sandbox_work_runs() -> None:
    work = KernelWork(sandbox_threads=2)
    sandbox_in, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def sandbox() -> None:
        sandbox_in.set()
        release.wait(WAIT_S)
        seen.append("sandbox done")

    async def run() -> None:
        first = asyncio.ensure_future(work.sandbox(sandbox))
        await asyncio.to_thread(sandbox_in.wait, WAIT_S)
        node = asyncio.ensure_future(work.node(lambda: seen.append("node")))
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, node)

    try:
        asyncio.run(run())
        assert seen == ["sandbox done", "node"]
    finally:
        work.shutdown()


def test_node_work_runs_in_the_order_asked() -> None:
    work = KernelWork()
    seen: list[int] = []

    async def run() -> None:
        await asyncio.gather(*(work.node(seen.append, i) for i in range(20)))

    try:
        asyncio.run(run())
        assert seen == list(range(20))
    finally:
        work.shutdown()


def test_a_waiting_exclusive_holder_keeps_new_shared_holders_out() -> None:
    lock = SharedExclusive()
    order: list[str] = []
    writer_waiting = threading.Event()
    reader_done = threading.Event()
    reader_trying = threading.Event()

    def writer() -> None:
        writer_waiting.set()
        with lock.exclusive():
            order.append("writer")

    def late_reader() -> None:
        reader_trying.set()
        with lock.shared():
            order.append("late reader")
        reader_done.set()

    with lock.shared():
        w = threading.Thread(target=writer)
        w.start()
        writer_waiting.wait(WAIT_S)
        while not lock._writers_waiting:  # the writer is inside exclusive(), waiting for this reader
            threading.Event().wait(0.001)
        r = threading.Thread(target=late_reader)
        r.start()
        reader_trying.wait(WAIT_S)
        assert not reader_done.wait(0.05)  # kept out while the writer waits (the order below says it for sure)
        order.append("first reader leaves")
    w.join(WAIT_S)
    r.join(WAIT_S)
    assert order == ["first reader leaves", "writer", "late reader"]
