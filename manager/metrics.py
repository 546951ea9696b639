"""Prometheus metrics of a manager process: raft (term, commit, apply lag, proposals, fsync, leader
changes, invalid and rejected messages) and the dispatcher's gauges, served at /metrics by serve_metrics().

One registry per process (REGISTRY), as a daemon runs at most one manager: manager/node.py binds its
RaftManager with bind_raft(); the dispatcher (manager/dispatcher, the swarm issue) calls
set_dispatcher_sessions(), heartbeat_received() and set_nodes_by_state(); `shoal daemon
--metrics-addr` and `python -m manager run --metrics-addr` serve it over aiohttp.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

log = logging.getLogger(__name__)

disable_created_metrics()  # no `_created` series: they double every counter and no dashboard reads them
REGISTRY = CollectorRegistry(auto_describe=True)

# Buckets from 0.5 ms to 10 s: a proposal commits in one fsync round trip on a quiet cluster and waits
# an election timeout or more when the leader is gone.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

PROPOSALS = Counter("shoal_raft_proposals", "Proposals made through this manager, by outcome",
                    ["result"], registry=REGISTRY)
PROPOSAL_SECONDS = Histogram("shoal_raft_proposal_duration_seconds",
                             "Time from a proposal to its entry applied on this manager",
                             buckets=_LATENCY_BUCKETS, registry=REGISTRY)
FSYNC_SECONDS = Histogram("shoal_raft_fsync_duration_seconds",
                          "Time to persist one Ready (log entries, hard state) including its fsync",
                          buckets=_LATENCY_BUCKETS, registry=REGISTRY)
LEADER_CHANGES = Counter("shoal_raft_leader_changes_seen", "Leader changes this manager has seen",
                         registry=REGISTRY)
DISPATCHER_SESSIONS = Gauge("shoal_dispatcher_sessions", "Agent sessions open on this manager's dispatcher",
                            registry=REGISTRY)
DISPATCHER_HEARTBEATS = Counter("shoal_dispatcher_heartbeats", "Heartbeats received by this manager's dispatcher",
                                registry=REGISTRY)
NODES = Gauge("shoal_manager_nodes", "Nodes of the cluster by status, as this manager's store has them",
              ["state"], registry=REGISTRY)
NODE_STATES = ("unknown", "down", "ready", "disconnected")


# ---- the dispatcher's side (named functions the swarm code calls) ----------------------------------
def set_dispatcher_sessions(count: int) -> None:
    DISPATCHER_SESSIONS.set(count)


def heartbeat_received() -> None:
    DISPATCHER_HEARTBEATS.inc()


def set_nodes_by_state(counts: Mapping[str, int]) -> None:
    """Every known state is set (0 where absent) so a state that empties shows 0, not its last value."""
    for state in (*NODE_STATES, *(s for s in counts if s not in NODE_STATES)):
        NODES.labels(state=state).set(counts.get(state, 0))


# ---- raft: read at scrape time from the bound RaftManager -----------------------------------------
class _RaftCollector:
    """Gauges and counters computed from RaftManager.status() when Prometheus scrapes."""

    def __init__(self) -> None:
        self.raft: Any = None

    def describe(self) -> list[Metric]:
        return []  # values only exist while a manager is bound: nothing to check up front

    def collect(self) -> Iterator[Metric]:
        raft = self.raft
        if raft is None or raft.node is None:
            return
        st = raft.status()
        labels = ["node_id"]
        node_id = [str(st["node_id"])]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(node_id, value)
            return g

        yield gauge("shoal_raft_term", "Current raft term", st["term"])
        yield gauge("shoal_raft_commit_index", "Highest log index known committed", st["commit"])
        yield gauge("shoal_raft_applied_index", "Highest log index applied to this manager's store", st["applied"])
        yield gauge("shoal_raft_apply_lag", "Committed entries not applied yet (commit - applied)",
                    max(0, st["commit"] - st["applied"]))
        yield gauge("shoal_raft_is_leader", "1 when this manager is the raft leader", int(st["role"] == "leader"))
        yield gauge("shoal_raft_has_leader", "1 when this manager knows a leader", int(st["leader_id"] != 0))
        yield gauge("shoal_raft_members", "Voting members in this manager's configuration", len(st["voters"]))
        invalid = CounterMetricFamily("shoal_raft_invalid_messages", "Raft messages and snapshots refused as invalid",
                                      labels=labels)
        invalid.add_metric(node_id, st["invalid_messages"])
        yield invalid
        rejected = CounterMetricFamily("shoal_raft_rejected_requests",
                                       "Raft streams and proposals refused: garbage, unknown member, wrong identity",
                                       labels=labels)
        rejected.add_metric(node_id, getattr(raft.servicer, "rejected", 0))
        yield rejected


_RAFT = _RaftCollector()
REGISTRY.register(_RAFT)  # type: ignore[arg-type]
_watch: asyncio.Task[None] | None = None


def bind_raft(raft: Any, sample_s: float | None = None) -> None:
    """Report on `raft` (a started RaftManager) from now on: time its proposals and disk writes, and
    count leader changes. The last manager bound in a process wins (a daemon runs one)."""
    global _watch
    unbind_raft(_RAFT.raft)
    _RAFT.raft = raft
    # Instance attributes shadow the methods: RaftManager calls self.propose_data and
    # self.storage.save_ready at each use, so the timed versions are what runs.
    raft.propose_data = _timed_proposal(raft.propose_data)
    if raft.storage is not None:
        raft.storage.save_ready = _timed_write(raft.storage.save_ready)
    if sample_s is None and hasattr(raft, "on_leader_change"):
        # told by the raft loop when the leader changes: no 20 Hz sampling on an idle manager
        first = raft.leader_id or 0

        def seen(leader: int, raft: Any = raft) -> None:
            nonlocal first
            if _RAFT.raft is raft and leader != first:
                LEADER_CHANGES.inc()
            first = 0   # only the leader known at bind time is no change
        raft.on_leader_change(seen)
        return
    _watch = asyncio.get_running_loop().create_task(_watch_leader(raft, sample_s or raft.cfg.tick_s / 2),
                                                    name="metrics-leader-watch")


def unbind_raft(raft: Any) -> None:
    """Stop reporting on `raft` (when it is the bound one); its methods are plain again."""
    global _watch
    if raft is None or _RAFT.raft is not raft:
        return
    _RAFT.raft = None
    for owner, name in ((raft, "propose_data"), (raft.storage, "save_ready")):
        if owner is not None and name in vars(owner):
            delattr(owner, name)
    if _watch is not None:
        _watch.cancel()
        _watch = None


def _timed_proposal(propose: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(propose)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            result = await propose(*args, **kwargs)
        except BaseException:
            PROPOSALS.labels(result="failed").inc()
            raise
        PROPOSAL_SECONDS.observe(time.perf_counter() - t0)
        PROPOSALS.labels(result="applied").inc()
        return result

    return timed


def _timed_write(save: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(save)
    def timed(*args: Any, **kwargs: Any) -> Any:  # runs on the raft disk thread; prometheus_client locks
        t0 = time.perf_counter()
        result = save(*args, **kwargs)
        FSYNC_SECONDS.observe(time.perf_counter() - t0)
        return result

    return timed


async def _watch_leader(raft: Any, every: float) -> None:
    """Counts changes of the known leader id. Sampled at half a tick: a leader lasts at least an
    election timeout (10+ ticks), so none goes unseen."""
    last = raft.leader_id or 0
    while True:
        await asyncio.sleep(every)
        current = raft.leader_id or 0
        if current and current != last:
            LEADER_CHANGES.inc()
        if current:
            last = current


# ---- serving ---------------------------------------------------------------------------------------
def render() -> tuple[bytes, str]:
    """The exposition text of every metric, and its content type."""
    # 0.0.4: the text format every Prometheus parses (our names are plain ASCII, so the text is the same)
    return generate_latest(REGISTRY), CONTENT_TYPE_PLAIN_0_0_4


def parse_addr(addr: str) -> tuple[str, int]:
    """HOST:PORT (as dockerd's --metrics-addr); ValueError naming the bad value."""
    host, sep, port = addr.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid metrics address {addr!r}: expected HOST:PORT")
    return host, int(port)


async def serve_metrics(addr: str) -> Callable[[], Any]:
    """Serve GET /metrics on HOST:PORT in this event loop; returns an async close()."""
    from aiohttp import web

    host, port = parse_addr(addr)

    async def metrics(_request: web.Request) -> web.Response:
        body, content_type = render()
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = content_type
        return resp

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise OSError(e.errno, f"cannot serve metrics on {addr}: {e.strerror}") from None
    log.info("metrics on http://%s/metrics", addr)

    async def close() -> None:
        with contextlib.suppress(Exception):
            await runner.cleanup()

    return close
