"""The firewall watch's cheap check without a process: shoal's two marker rules read in-process through
libnftables (agent.network.lbnft) when iptables is its nf_tables backend; `iptables -C` otherwise.

Used by agent.network.firewall_live.Firewall.in_place every watch tick (FirewallWatch, 2 s): two `iptables -C`
execs cost ~2.4 ms of CPU each, a libnftables listing of the two chains ~0.2 ms. Which one answers is decided
per network namespace by calibration, not by guessing the backend: the first time both say the markers are
there, nft is trusted from then on; when `iptables -C` finds them and nft does not (iptables-legacy, or a
translation this module does not know), the namespace keeps using `iptables -C`.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from agent.network.firewall import FirewallError, run_tool

log = logging.getLogger(__name__)

# The rules every full apply puts in place; an `iptables -F`, `iptables -t nat -F`, `nft flush ruleset` or a
# firewalld reload removes them. As iptables arguments (for -C) and as iptables-nft lists them in nft syntax
# (iptables-nft gives every rule a counter; addrtype LOCAL becomes a fib expression).
MARKERS: tuple[tuple[str, str, list[str], re.Pattern[str]], ...] = (
    ("filter", "FORWARD", ["-C", "FORWARD", "-j", "DOCKER-FORWARD"],
     re.compile(r"(?:counter packets \d+ bytes \d+ )?jump DOCKER-FORWARD")),
    ("nat", "PREROUTING", ["-t", "nat", "-C", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"],
     re.compile(r"fib daddr type local (?:counter packets \d+ bytes \d+ )?jump DOCKER")),
)
# One command per run: libnftables 1.0.6 fetches only the last `list chain`'s table when given several in a buffer.
LIST_COMMANDS = tuple(f"list chain ip {table} {chain}\n" for table, chain, _, _ in MARKERS)


def markers_in_listing(listing: str) -> bool:
    """Whether `nft list chain ip filter FORWARD` + `... ip nat PREROUTING` output holds both marker rules
    (exactly: a rule with more matches than the marker is not it, as for `iptables -C`)."""
    found: set[tuple[str, str]] = set()
    table = chain = ""
    for raw in listing.splitlines():
        line = raw.strip()
        if line.startswith("table ip "):
            table, chain = line[len("table ip "):].split(" ", 1)[0], ""
        elif line.startswith("chain "):
            chain = line[len("chain "):].split(" ", 1)[0]
        else:
            for t, c, _, rule in MARKERS:
                if (table, chain) == (t, c) and rule.fullmatch(line):
                    found.add((t, c))
    return len(found) == len(MARKERS)


def markers_by_exec() -> bool:
    """The markers through `iptables -w -C` (one process each): the reference the nft check calibrates against."""
    try:
        for _, _, args, _ in MARKERS:
            run_tool(["iptables", "-w", *args])
    except FirewallError:
        return False
    return True


@dataclass(slots=True)
class _Namespace:
    ctx: object | None = None      # lbnft.NftContext opened in this namespace; None: no libnftables
    trusted: bool | None = None    # None: not calibrated yet; True: nft answers; False: iptables -C answers


def _netns_key() -> int:
    """The calling thread's network namespace (its inode): an nft context answers for the namespace it was made in."""
    return os.stat("/proc/thread-self/ns/net").st_ino


class MarkerCheck:
    """The markers of the calling thread's namespace, by nft once calibrated, else by exec. Thread-safe."""

    def __init__(self, by_exec: Callable[[], bool] = markers_by_exec) -> None:
        self._by_exec = by_exec
        self._lock = threading.Lock()
        self._spaces: dict[int, _Namespace] = {}
        self.execs = 0   # checks answered by iptables -C (for tests and measurements)
        self.nft_checks = 0

    def __call__(self) -> bool:
        key = _netns_key()
        with self._lock:
            space = self._spaces.get(key)
            if space is None:
                space = self._spaces[key] = _Namespace(ctx=_open_context())
        if space.trusted:
            self.nft_checks += 1
            if self._by_nft(space):
                return True
            # gone (a flush: the watch re-applies) or nft lost sight of them: iptables -C has the last word, so
            # the watch re-applies exactly when it did before this check existed
        self.execs += 1
        present = self._by_exec()
        if space.trusted and present:
            space.trusted = False
            log.info("firewall markers: nft no longer sees what iptables -C sees: the watch uses iptables -C")
        elif space.trusted is None and present:
            seen = self._by_nft(space)
            space.trusted = seen is True
            if not space.trusted:
                log.info("firewall markers: nft does not see what iptables -C sees here (%s): the watch keeps "
                         "using iptables -C", "no libnftables" if seen is None else "another backend or syntax")
        return present

    def _by_nft(self, space: _Namespace) -> bool | None:
        """True/False from nft; None when nft cannot be asked at all (no library)."""
        from agent.network.lbnft import NftError

        if space.ctx is None:
            return None
        try:
            out = "".join(space.ctx.run(cmd) for cmd in LIST_COMMANDS)  # type: ignore[attr-defined]
        except NftError:
            return False  # no such table or chain: flushed away
        return markers_in_listing(out)

    def close(self) -> None:
        with self._lock:
            spaces, self._spaces = self._spaces, {}
        for space in spaces.values():
            if space.ctx is not None:
                space.ctx.close()  # type: ignore[attr-defined]


def _open_context() -> object | None:
    from agent.network.lbnft import NftContext, NftError

    try:
        return NftContext(None)
    except NftError as exc:
        log.info("firewall markers: %s", exc)
        return None
