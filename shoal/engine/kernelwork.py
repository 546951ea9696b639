"""Where the engine's blocking kernel work runs (netlink, namespaces, nftables, iptables): node-wide work one at a
time in order on one thread, and the sandbox work of different containers side by side. Used by engine.py.

Why two kinds: a container start spends most of its network set-up waiting (the kernel's rtnl lock, which every
process on the machine shares, a core, the GIL), so the set-ups of the tasks a node is given together overlap
instead of queueing one behind the other. Node-wide work (networks made or removed, the firewall, service
bindings, restore) still runs alone: it waits until no sandbox work runs, and sandbox work waits for it. What
sandbox work of different containers shares is locked where it lives (NetworkController.lock for IPAM and
docker_gwbridge, the overlay data plane's lock, the load balancer's). Each thread enters a namespace only inside
nsthread.entered/iproute_in blocks and always leaves it, so a pool thread never carries one into the next job.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

SANDBOX_THREADS = 4  # a node is usually handed a few tasks at once; more threads only wait for the GIL


class SharedExclusive:
    """A readers-writer lock between threads; a waiting writer keeps new readers out (it is never starved)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class KernelWork:
    def __init__(self, sandbox_threads: int = SANDBOX_THREADS) -> None:
        # pyroute2's synchronous API runs its own event loop, so it cannot run on ours.
        self._node = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")
        self._sandboxes = ThreadPoolExecutor(max_workers=sandbox_threads, thread_name_prefix="sandbox")
        self.lock = SharedExclusive()

    async def node(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Node-wide kernel work: alone, in the order asked."""
        return await asyncio.get_running_loop().run_in_executor(
            self._node, functools.partial(self._run, self.lock.exclusive, fn, args, kwargs))

    async def sandbox(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One container's sandbox work (the caller orders the work of one container: the engine's container
        lock); runs beside other containers' sandbox work."""
        return await asyncio.get_running_loop().run_in_executor(
            self._sandboxes, functools.partial(self._run, self.lock.shared, fn, args, kwargs))

    @staticmethod
    def _run(hold: Callable[[], Any], fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
        with hold():
            return fn(*args, **kwargs)

    def shutdown(self) -> None:
        self._sandboxes.shutdown(wait=True)
        self._node.shutdown(wait=True)
