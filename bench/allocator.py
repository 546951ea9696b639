"""Benchmark: the allocator's core pass (manager/allocator/core.py) over an in-memory store with N tasks of one
service on a /16: the first pass (N new tasks allocated) and an idle pass (all allocated, nothing to do).

The idle pass is what a relevant store change costs the manager's event loop. Usage:
python bench/allocator.py [--tasks 1000,5000] [--runs 3]   (median of runs)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from manager.allocator.core import Allocator  # noqa: E402
from manager.store import MemoryStore  # noqa: E402
from proto import objects_pb2 as pb  # noqa: E402


def one(n: int) -> tuple[float, float]:
    store = MemoryStore()
    index = 0

    def commit(fn) -> None:  # type: ignore[no-untyped-def]
        nonlocal index
        data, _ = store.prepare(fn, f"r{index}")
        index += 1
        assert store.apply(index, data).error is None

    net = pb.Network(id="net1")
    net.spec.annotations.name = "big"
    net.spec.ipam.configs.add(subnet="10.1.0.0/16")
    svc = pb.Service(id="svc1")
    svc.spec.annotations.name = "web"
    svc.spec.task.networks.add(target="net1")
    commit(lambda tx: (tx.create("network", net), tx.create("service", svc)))
    alloc = Allocator()
    first = alloc.plan(store.view(), 0.0, [])
    commit(lambda tx: [tx.update(k, o) for k, o in first.updates])
    spec = store.view().get("service", "svc1").spec.task
    for lo in range(0, n, 200):  # the store takes 200 actions per entry
        def create(tx, lo: int = lo) -> None:  # type: ignore[no-untyped-def]
            for i in range(lo, min(n, lo + 200)):
                tx.create("task", pb.Task(id=f"t{i:06d}", service_id="svc1", spec=spec, desired_state=pb.TASK_STATE_RUNNING))
        commit(create)
    t0 = time.perf_counter()
    plan = alloc.plan(store.view(), 1.0, [])
    t1 = time.perf_counter()
    for lo in range(0, len(plan.updates), 200):
        commit(lambda tx, lo=lo: [tx.update(k, o) for k, o in plan.updates[lo:lo + 200]])
    t2 = time.perf_counter()
    idle = alloc.plan(store.view(), 2.0, [])
    t3 = time.perf_counter()
    assert len(plan.updates) == n and not idle.updates
    return t1 - t0, t3 - t2


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="1000,5000")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for n in (int(x) for x in args.tasks.split(",")):
        runs = [one(n) for _ in range(args.runs)]
        first = statistics.median(r[0] for r in runs)
        idle = statistics.median(r[1] for r in runs)
        print(f"{n} tasks: first pass {first * 1000:.0f} ms ({first / n * 1e6:.0f} us/task), idle pass {idle * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
